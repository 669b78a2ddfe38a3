"""An iteration's sample of groups: real trajectories from the mixed sampler, scored by the
tiny policy, filtered and credited as the learner batch does, then written, read back and
truncated as a resumed run does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.llm_agent import LLMAgent
from agents.rexrag.learner_batch import build_learner_batch
from agents.rexrag.logprobs import response_token_logprobs
from agents.rexrag.mixed_sampling import MixedSampler
from agents.rexrag.probes import default_exploratory_prompts
from agents.rexrag.token_batch import to_token_batch
from agents.runs.samples import (
    GROUP_KINDS,
    MAX_SAMPLE_GROUPS,
    SampleCollector,
    iteration_samples,
    rank_groups,
    read_samples,
    sample_iterations,
    truncate_samples,
    write_samples,
)
from rexrag_env import SearchQAVectorEnv
from rexrag_env.datasets import QAExample
from rexrag_env.protocol import INVALID_ACTION_NOTICE
from tests.helpers import ScriptedGenerator

RUSH = QAExample("rush", "Which band was Neil Peart the drummer of", ("Rush",))
WHO = QAExample("who", "Which band was Roger Daltrey the singer of", ("The Who",))
QUEEN = QAExample("queen", "Which band was Freddie Mercury the singer of", ("Queen",))
DEAD_END_DECISION = "<think>The chain is complete.</think>\n"

#: Each generate call's texts, one per active row. Originals (3 a question): RUSH's all
#: wrong (one at once, one after a search, one after an invalid action), WHO's all
#: right, QUEEN's one wrong; then the four probes of the wrong ones.
TURNS = [
    [
        DEAD_END_DECISION + "<answer> The Who </answer>",
        "<search> Neil Peart </search>",
        "I am not sure",
        *["<answer> The Who </answer>"] * 3,
        "<answer> Queen </answer>",
        "<answer> Rush </answer>",
        "<answer> Queen </answer>",
    ],
    ["<answer> The Who </answer>", "<answer> Kiss </answer>"],
    [
        "<search> Neil Peart drummer </search>",
        "<answer> Rush </answer>",
        "<answer> Queen </answer>",
        "<answer> Queen </answer>",
    ],
    ["<answer> Rush </answer>"],
]


@pytest.fixture(scope="module")
def iteration(tiny_model_dir, bm25_retriever):
    """``(trajectories, old_logprobs, prepare)``: one real iteration's rollouts and π_old;
    ``prepare(probe_credit)`` builds its learner batch (3 of 4 probes kept)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def make_envs(num_envs, questions):
        return SearchQAVectorEnv(
            num_envs,
            dataset=questions,
            retriever=bm25_retriever,
            max_turns=2,
            autoreset_mode=AutoresetMode.DISABLED,
        )

    agent = LLMAgent(ScriptedGenerator(tokenizer, TURNS))
    sampler = MixedSampler(
        agent,
        make_envs,
        default_exploratory_prompts(),
        group_size=3,
        probe_prob=1.0,
        max_turns=2,
        seed=0,
    )
    trajectories = sampler.sample([RUSH, WHO, QUEEN]).trajectories
    batch = to_token_batch(trajectories)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        old = response_token_logprobs(
            model,
            torch.as_tensor(batch.input_ids),
            torch.as_tensor(batch.attention_mask),
            torch.as_tensor(batch.loss_mask),
        ).numpy()

    def prepare(probe_credit="copy"):
        return build_learner_batch(
            batch,
            old,
            old,
            keep_ratio=0.34,  # K = int(9 originals x 0.34) = 3 of the 4 probes
            keep_multiple_of=1,
            correction="rexrag",
            sequence_weight_cap=2.0,
            clip_low=0.2,
            clip_high=0.2,
            probe_credit=probe_credit,
        )

    return trajectories, old, prepare


def by_id(group):
    return {t["id"]: t for t in group["trajectories"]}


def test_the_sample_shows_each_group_with_its_probes_segments_and_credit(iteration):
    trajectories, old, prepare = iteration
    prepared = prepare()
    samples = iteration_samples(trajectories, prepared, old, probe_credit="copy", limit=8)
    rush, *_ = samples  # a rescued group comes first
    assert rush["question_id"] == "rush"
    assert rush["kind"] == "rescued"
    assert {s["kind"] for s in samples} == {"rescued", "solved"} | {samples[1]["kind"]}
    assert (rush["originals"], rush["originals_right"], rush["probes_spawned"]) == (3, 0, 3)
    assert rush["question"] == RUSH.question and rush["golden_answers"] == ["Rush"]
    assert rush["prompt"].endswith(f"Question: {RUSH.question}?\n")

    rows = by_id(rush)
    searched, invalid = rows["rush#1"], rows["rush#2"]
    assert [s["kind"] for s in searched["segments"]] == ["model", "information", "model"]
    assert "Neil Peart" in searched["segments"][1]["text"]
    assert [s["kind"] for s in invalid["segments"]] == ["model", "invalid", "model"]
    assert invalid["segments"][1]["text"] == INVALID_ACTION_NOTICE
    assert invalid["invalid_actions"] == 1

    probe = rows["rush#0/probe"]
    assert probe["probe"] and probe["parent"] == "rush#0" and probe["em"] == 1.0
    kinds = [s["kind"] for s in probe["segments"]]
    assert kinds == ["model", "probe_prompt", "model", "information", "model"]
    assert probe["branch_segment"] == 1
    assert probe["segments"][0]["text"] == DEAD_END_DECISION  # the parent's, up to <answer>
    assert probe["segments"][1]["text"] in default_exploratory_prompts()
    credit = [s["credit"] for s in probe["segments"]]
    assert credit == ["prefix", "prompt", "continuation", None, "continuation"]
    trajectory = next(t for t in trajectories if t.rollout_id == "rush#0/probe")
    assert probe["branch_point"] == trajectory.branch_point

    # every original and probe's tokens are accounted for, segment by segment
    for group in samples:
        for row in group["trajectories"]:
            source = next(t for t in trajectories if t.rollout_id == row["id"])
            segment_tokens = sum(s["tokens"] for s in row["segments"])
            assert segment_tokens == len(source.token_ids) - source.prompt_length, row["id"]


def test_advantages_and_credit_are_the_learners(iteration):
    trajectories, old, prepare = iteration
    prepared = prepare()
    samples = iteration_samples(trajectories, prepared, old, probe_credit="copy", limit=8)
    # copy credit: every kept row is a learner row, in prepared.rows' order
    learner_advantage = {
        trajectories[row].rollout_id: float(advantage)
        for row, advantage in zip(prepared.rows, prepared.columns["advantages"], strict=True)
    }
    kept_probes = {trajectories[row].rollout_id for row in prepared.rows} - {
        t.rollout_id for t in trajectories if not t.is_probe
    }
    assert len(kept_probes) == 3
    for group in samples:
        for row in group["trajectories"]:
            assert row["kept"] == (not row["probe"] or row["id"] in kept_probes)
            if not row["kept"]:
                assert row["advantage"] is None and row["credit"] == {}
                continue
            assert row["advantage"] == pytest.approx(learner_advantage[row["id"]], abs=1e-4)
            pushed = sum(c["push"] for c in row["credit"].values())
            by_segment = sum(s.get("push", 0.0) for s in row["segments"])
            assert by_segment == pytest.approx(pushed, abs=1e-3)
    who = next(group for group in samples if group["question_id"] == "who")
    assert all(row["advantage"] == 0.0 for row in who["trajectories"])  # tied rewards
    rush = by_id(samples[0])
    rescuer = next(row for row in rush.values() if row["probe"] and row["kept"] and row["em"])
    assert rush[rescuer["parent"]]["advantage"] < 0 < rescuer["advantage"]
    assert set(rescuer["credit"]) == {"prefix", "prompt", "continuation"}
    assert rescuer["credit"]["prompt"]["tokens"] == sum(
        s["tokens"] for s in rescuer["segments"] if s["kind"] == "probe_prompt"
    )
    assert set(rush["rush#0"]["credit"]) == {"original"}


def test_group_only_probes_count_in_their_group_but_carry_no_loss(iteration):
    trajectories, old, prepare = iteration
    samples = iteration_samples(
        trajectories, prepare("group_only"), old, probe_credit="group_only", limit=8
    )
    for group in samples:
        for row in group["trajectories"]:
            if row["probe"]:
                assert row["advantage"] is None and row["credit"] == {}
            else:
                assert row["advantage"] is not None and set(row["credit"]) == {"original"}
    with pytest.raises(ValueError, match="probe_credit"):
        iteration_samples(trajectories, prepare("group_only"), old, probe_credit="copy")


def test_a_smaller_limit_is_a_prefix_and_the_collector_keeps_one_iteration(iteration):
    trajectories, old, prepare = iteration
    prepared = prepare()
    everything = iteration_samples(trajectories, prepared, old, probe_credit="copy", limit=8)
    assert len(everything) == 3
    one = iteration_samples(trajectories, prepared, old, probe_credit="copy", limit=1)
    assert one == everything[:1]
    collector = SampleCollector("copy", limit=2)
    collector(trajectories, prepared, old)
    assert collector.take() == everything[:2]
    assert collector.take() is None
    silent = SampleCollector("copy", limit=0)
    silent(trajectories, prepared, old)
    assert silent.take() is None
    with pytest.raises(ValueError, match=f"between 0 .* and {MAX_SAMPLE_GROUPS}"):
        SampleCollector("copy", limit=MAX_SAMPLE_GROUPS + 1)


def test_ranking_takes_one_of_each_kind_first():
    kinds = ["solved", "mixed", "rescued", "dead_end", "rescued", "kept_probe", "mixed"]
    order = rank_groups(kinds)
    assert order == [2, 5, 3, 1, 0, 4, 6]
    assert sorted(order) == list(range(len(kinds)))
    assert [kinds[i] for i in order[:5]] == [k for k in GROUP_KINDS if k in kinds]


def test_samples_on_disk_are_json_lines_and_a_resume_drops_the_later_ones(iteration, tmp_path):
    trajectories, old, prepare = iteration
    samples = iteration_samples(trajectories, prepare(), old, probe_credit="copy", limit=8)
    for number in (1, 2, 3, 12):
        write_samples(tmp_path, number, samples)
    assert sample_iterations(tmp_path) == [1, 2, 3, 12]
    back = read_samples(tmp_path, 12)
    assert [group.pop("iteration") for group in back] == [12] * len(samples)
    assert back == json.loads(json.dumps(samples))
    lines = (tmp_path / "samples" / "iteration_000012.jsonl").read_text().splitlines()
    assert len(lines) == len(samples)
    assert not list((tmp_path / "samples").glob("*.partial"))
    truncate_samples(tmp_path, 2)
    assert sample_iterations(tmp_path) == [1, 2]
    np.testing.assert_equal(read_samples(tmp_path, 1)[0]["trajectories"][0]["id"], "rush#0")


def test_the_trackers_get_each_iterations_sample(iteration, tmp_path, monkeypatch):
    """TensorBoard text, an offline W&B table and an MLflow artifact, from the same groups."""
    from mlflow import MlflowClient

    from agents.runs.trackers import RUN_IDS_FILE, Trackers
    from tests.agents.runs.tracker_files import tensorboard_texts, wandb_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(variable, raising=False)
    trajectories, old, prepare = iteration
    samples = iteration_samples(trajectories, prepare(), old, probe_credit="copy", limit=2)
    with Trackers(["tensorboard", "wandb", "mlflow"]) as session:
        session.start(tmp_path, {"group_size": 3}, None)
        session.log_samples(samples, step=1)
        session.log_samples([], step=2)  # nothing sampled: nothing logged
    import wandb

    wandb.teardown()

    text = tensorboard_texts(tmp_path / "tensorboard")["samples"]
    assert RUSH.question in text and "| rush#0 |" in text and "from its branch point" in text
    assert "[probe_prompt]" in text

    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    (logged,) = wandb_run(run_file)["history"]
    rows = sum(len(group["trajectories"]) for group in samples)
    assert (logged["_step"], logged["samples/_type"], logged["samples/nrows"]) == (
        1,
        "table-file",
        rows,
    )
    table = json.loads((run_file.parent / "files" / logged["samples/path"]).read_text())
    assert table["columns"][:3] == ["iteration", "kind", "question"]
    rollout = table["columns"].index("rollout")
    assert [row[rollout] for row in table["data"]] == [
        row["id"] for group in samples for row in group["trajectories"]
    ]

    run_id = json.loads((tmp_path / RUN_IDS_FILE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    local = client.download_artifacts(run_id, "samples/iteration_000001.jsonl", str(tmp_path))
    lines = [json.loads(line) for line in Path(local).read_text(encoding="utf-8").splitlines()]
    assert [group["question_id"] for group in lines] == [g["question_id"] for g in samples]
    assert all(group["iteration"] == 1 for group in lines)
