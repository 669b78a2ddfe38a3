"""RexRagConfig: official defaults, validation naming the field, YAML round trip, presets."""

import inspect
from dataclasses import fields

import pytest
from ray.rllib.algorithms.algorithm_config import NotProvided

from agents.rexrag import RexRagConfig
from agents.rexrag.settings import SETTING_NAMES, RexRagSettings, presets


def test_official_defaults():
    config = RexRagConfig()
    assert (config.group_size, config.max_turns, config.topk) == (5, 5, 3)
    assert config.probe_prob == pytest.approx(20 / 101)
    assert (config.keep_ratio, config.keep_ratio_decay, config.correction) == (0.08, 0.9, "rexrag")
    assert (config.lr, config.grad_clip, config.minibatch_size, config.kl_coeff) == (
        1e-6,
        1.0,
        256,
        0.001,
    )
    assert config.probe_trigger == "wrong_answer" and len(config.prompt_pool()) == 30
    # the one default that is not the official one, chosen by issue 28 (docs/results.md)
    assert (config.probe_credit, config.original_behaviour) == ("group_only", "mixture")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"group_size": 1}, "group_size"),
        ({"correction": "magic"}, "correction"),
        ({"probe_prob": 1.5}, "probe_prob"),
        ({"exploratory_prompts": []}, "exploratory_prompts"),
        ({"probe_trigger": "always"}, "probe_trigger"),
        ({"backend": "tgi"}, "backend"),
        ({"keep_multiple_of": 0}, "keep_multiple_of"),  # select_probes would divide by it
        ({"vllm_gpu_memory_utilization": 0.0}, "vllm_gpu_memory_utilization"),
        ({"vllm_tensor_parallel_size": 0}, "vllm_tensor_parallel_size"),
        ({"vllm_sleep_level": 3}, "vllm_sleep_level"),
        ({"vllm_weight_transport": "nccl"}, "vllm_weight_transport"),
    ],
)
def test_validate_names_the_field(override, field):
    config = RexRagConfig().training(**override)
    with pytest.raises(ValueError, match=field):
        config.validate()
    with pytest.raises(ValueError, match=field):
        config.check_settings()


def test_a_keep_ratio_that_can_start_originals_beyond_the_clip_is_said(recwarn):
    """With the official correction an original's ratio starts at up to 1 + keep_ratio."""
    risky = {"keep_ratio": 0.25, "probe_prob": 0.5}
    for config in (
        RexRagConfig(),  # the official 0.08 against a clip of 0.2
        RexRagConfig().training(keep_ratio=0.5),  # spawns 20/101 per wrong original
        RexRagConfig().training(**risky, correction="sequence"),
        RexRagConfig().training(**risky, probes=False),
        *(RexRagConfig.from_yaml(name) for name in presets()),
    ):
        config.check_settings()
    assert not [w for w in recwarn if "beyond the clip" in str(w.message)]
    with pytest.warns(UserWarning, match=r"originals' ratios can start at up to 1\.25"):
        RexRagConfig().training(**risky).check_settings()


def test_vllm_engine_options_come_from_the_typed_fields_then_vllm_options():
    config = RexRagConfig().training(
        vllm_max_model_len=2048,
        vllm_sleep_level=1,
        dtype="bfloat16",  # the engine computes in the run's precision
        vllm_options={"enforce_eager": True},
    )
    assert config.vllm_engine_options() == {
        "gpu_memory_utilization": 0.4,
        "tensor_parallel_size": 1,
        "sleep_level": 1,
        "weight_transport": "file",
        "dtype": "bfloat16",
        "max_model_len": 2048,
        "enforce_eager": True,
    }
    overridden = config.training(vllm_options={"gpu_memory_utilization": 0.9})
    assert overridden.vllm_engine_options()["gpu_memory_utilization"] == 0.9


def test_training_sets_our_fields_and_rllib_fields():
    config = RexRagConfig().training(group_size=8, lr=3e-6, probes=False)
    assert (config.group_size, config.lr, config.probes) == (8, 3e-6, False)
    config.check_settings()


def test_training_takes_every_setting_as_a_typed_documented_keyword():
    """``training()``'s keyword list is the settings dataclass's, name for name and type
    for type (a field added to one and not the other fails here), and ``help()`` shows
    each keyword's documentation."""
    parameters = inspect.signature(RexRagConfig.training).parameters
    keywords = [p for p in parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert [p.name for p in keywords] == list(SETTING_NAMES)
    assert {p.name: p.annotation for p in keywords} == {
        f.name: f.type for f in fields(RexRagSettings)
    }
    assert all(p.default is NotProvided for p in keywords)
    documented = RexRagConfig.training.__doc__
    for name in SETTING_NAMES:
        assert f"\n            {name}: " in documented, name
    with pytest.raises(TypeError, match="grup_size"):
        RexRagConfig().training(grup_size=4)


def test_yaml_round_trip(tmp_path):
    config = RexRagConfig().training(
        group_size=3, correction="sequence", exploratory_prompts=["<think> x"]
    )
    config.to_yaml(tmp_path / "run.yaml")
    again = RexRagConfig.from_yaml(tmp_path / "run.yaml")
    assert again.to_yaml_dict() == config.to_yaml_dict()
    with pytest.raises(ValueError, match="unknown fields"):
        RexRagConfig.from_yaml(tmp_path / "run.yaml", {"grup_size": 4})


def test_presets_load_and_validate():
    assert presets() == [
        "qwen2.5-3b-search-r1",
        "qwen2.5-7b-search-r1",
        "smollm2-cpu",
        "smollm2-realqa",
        "smollm2-synthwiki-trap",
        "tiny-cpu",
        "tiny-sanity",
        "tiny-synthwiki",
        "tiny-synthwiki-trap",
    ]
    # the trap is the embedded default's testbed with its own starting policy
    trap = RexRagConfig.from_yaml("tiny-synthwiki-trap")
    default = RexRagConfig.from_yaml("tiny-synthwiki")
    differing = {k for k, v in trap.to_yaml_dict().items() if v != getattr(default, k)}
    assert differing == {"llm", "max_new_tokens_per_turn"}
    # so is SmolLM2's trap, to smollm2-cpu
    smollm2_trap = RexRagConfig.from_yaml("smollm2-synthwiki-trap")
    smollm2 = RexRagConfig.from_yaml("smollm2-cpu")
    differing = {k for k, v in smollm2_trap.to_yaml_dict().items() if v != getattr(smollm2, k)}
    assert differing == {"llm", "max_new_tokens_per_turn"}
    sanity = RexRagConfig.from_yaml("tiny-sanity")  # base: tiny-cpu, then its own fields
    assert (sanity.llm, sanity.group_size, sanity.dataset) == ("tiny-sanity", 4, "tiny-sanity")
    paper = RexRagConfig.from_yaml("qwen2.5-3b-search-r1")
    hardware = {"backend", "num_env_runners", "num_learners", "num_gpus_per_learner"}
    hardware |= {"num_gpus_per_env_runner", "gradient_checkpointing", "dtype"}
    hardware |= {"learner_sharding", "learner_cpu_offload", "vllm_gpu_memory_utilization"}
    hardware |= {"vllm_sleep_level", "dataset", "retriever"}  # the paper's data, not ours

    def algorithm_fields(config):
        return {k: v for k, v in config.to_yaml_dict().items() if k not in hardware}

    # the defaults, but the official probe credit, one option away from ours
    assert algorithm_fields(paper) == algorithm_fields(RexRagConfig().training(probe_credit="copy"))
    assert RexRagConfig().probe_credit == "group_only" and paper.probe_credit == "copy"
    assert (paper.num_learners, paper.backend, paper.learner_sharding) == (8, "vllm", "fsdp")
    # one learner and one vLLM EnvRunner per GPU, 8 GPUs in Ray's accounting
    assert paper.num_learners * (paper.num_gpus_per_learner + paper.num_gpus_per_env_runner) == 8
    assert (paper.dataset, paper.retriever) == (
        "data/nq_hotpotqa_train/train.parquet",
        "http://127.0.0.1:8000/retrieve",
    )
    paper_7b = RexRagConfig.from_yaml("qwen2.5-7b-search-r1")
    assert paper_7b.llm == "Qwen/Qwen2.5-7B"
    assert {**paper_7b.to_yaml_dict(), "llm": paper.llm} == paper.to_yaml_dict()
    tiny = RexRagConfig.from_yaml("tiny-cpu", {"group_size": 3})
    assert (tiny.llm, tiny.group_size) == ("tiny", 3)
    for config in (paper, paper_7b, tiny):
        config.check_settings()
    with pytest.raises(FileNotFoundError, match="tiny-cpu"):
        RexRagConfig.from_yaml("no-such-preset")


def test_warm_started_presets_match_the_warm_start_they_train():
    from agents.warm_start.recipes import WARM_STARTS

    for name, alias, eval_dataset in (
        ("tiny-synthwiki", "tiny-synthwiki", "synthwiki/test"),
        ("smollm2-cpu", "smollm2-synthwiki", "synthwiki/test"),  # base tiny-synthwiki
        ("tiny-synthwiki-trap", "tiny-synthwiki-trap", "synthwiki/test"),
        ("smollm2-synthwiki-trap", "smollm2-synthwiki-trap", "synthwiki/test"),
        ("smollm2-realqa", "smollm2-realqa", "heldout/hotpotqa"),
    ):
        config = RexRagConfig.from_yaml(name)
        recipe = WARM_STARTS[alias]
        assert config.llm == alias and config.eval_dataset == eval_dataset
        # rollouts see the passages and turns the demonstrations saw
        assert (config.topk, config.max_turns, config.max_observation_tokens) == (
            recipe.topk,
            recipe.max_turns,
            recipe.max_observation_tokens,
        )
        config.check_settings()


def test_default_module_is_the_configured_causal_lm(tiny_model_dir):
    from agents.rexrag.rl_module import CausalLMModule
    from rexrag_env.spaces import UnicodeText

    spec = RexRagConfig().training(llm=str(tiny_model_dir)).get_default_rl_module_spec()
    assert spec.module_class is CausalLMModule
    spec.observation_space = spec.action_space = UnicodeText()
    assert spec.build().model.config.model_type == "qwen2"


def test_base_chains_resolve_and_loops_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: tiny-cpu\ngroup_size: 6\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\nlr: 0.5\n")
    config = RexRagConfig.from_yaml(tmp_path / "b.yaml")
    assert (config.llm, config.group_size, config.lr) == ("tiny", 6, 0.5)
    (tmp_path / "loop.yaml").write_text(f"base: {tmp_path / 'loop.yaml'}\n")
    with pytest.raises(ValueError, match="loops"):
        RexRagConfig.from_yaml(tmp_path / "loop.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="mapping"):
        RexRagConfig.from_yaml(tmp_path / "list.yaml")


def test_env_config_sets_the_episodes_as_rllib_users_write_it():
    config = RexRagConfig().environment(
        "rexrag_env/SearchQA-v0", env_config={"dataset": "nq", "retriever": "dense", "topk": 5}
    )
    config.validate()
    assert (config.dataset, config.retriever, config.topk) == ("nq", "dense", 5)
    synthwiki = RexRagConfig().environment("rexrag_env/SynthWiki-v0", env_config={"split": "test"})
    synthwiki.validate()
    assert (synthwiki.dataset, synthwiki.retriever) == ("synthwiki/test", "synthwiki")
    with pytest.raises(ValueError, match="not among"):
        RexRagConfig().environment(env_config={"max_turn": 3}).validate()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        (lambda c: c.training(train_batch_size=512), "train_batch_size .* questions_per_iter"),
        (lambda c: c.training(num_epochs=2), "num_epochs .* minibatch_size"),
        (
            lambda c: c.env_runners(rollout_fragment_length=64),
            "rollout_fragment_length .* max_turns",
        ),
        (lambda c: c.env_runners(num_envs_per_env_runner=8), "num_envs_per_env_runner"),
        (lambda c: c.evaluation(evaluation_interval=1), "evaluation_interval .* eval_dataset"),
        (lambda c: c.training(lr=[[0, 1e-5], [10, 1e-6]]), "lr must be a number"),
    ],
)
def test_rllib_fields_rexrag_does_not_use_are_refused_naming_ours(setting, named):
    with pytest.raises(ValueError, match=named):
        setting(RexRagConfig()).validate()


def test_a_users_registered_env_subclass_takes_its_own_env_config_keys():
    from rexrag_env.vector import registered_search_qa_env
    from tests.agents.rexrag.user_env import USER_DEFAULTS_ENV, USER_ENV, AnswerBonusEnv

    config = RexRagConfig().environment(
        USER_ENV, env_config={"dataset": "nq", "topk": 2, "answer_bonus": 0.5}
    )
    config.validate()
    assert (config.dataset, config.topk) == ("nq", 2)
    assert config.env_class() is AnswerBonusEnv and config.env_kwargs() == {"answer_bonus": 0.5}
    assert registered_search_qa_env(AnswerBonusEnv) == (AnswerBonusEnv, {})  # a class as the id
    # keyword defaults registered with the id apply under env_config, as gym.make's do
    registered = RexRagConfig().environment(USER_DEFAULTS_ENV, env_config={"topk": 4})
    registered.validate()
    assert (registered.max_turns, registered.topk) == (3, 4)
    assert registered.env_kwargs() == {"answer_bonus": 0.1}
    with pytest.raises(ValueError, match=r"\['bonus'\]: AnswerBonusEnv\(\) does not take"):
        RexRagConfig().environment(USER_ENV, env_config={"bonus": 0.5}).validate()
    with pytest.raises(ValueError, match=r"nobody.*register it .*'your_module:nobody/Qa-v0'"):
        RexRagConfig().environment("nobody/Qa-v0").validate()
    with pytest.raises(ValueError, match=r"CartPole-v1.*not a subclass of .*SearchQAEnv"):
        RexRagConfig().environment("CartPole-v1").validate()
