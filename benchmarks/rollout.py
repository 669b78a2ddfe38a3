"""Rollout throughput: LLMAgent + HFGenerator against a naive one-env-at-a-time loop,
and on a vLLM engine beside it.

    python benchmarks/rollout.py [--model tiny] [--envs 1,16,64] [--max-new-tokens 48]
        [--backend hf|vllm]

Both sides play the same SearchQA episodes (shipped HotpotQA questions, BM25, 2
search turns + the final one) with the same model and sampling (T = 1). The naive
baseline is how a first implementation usually looks: step one environment at a time
and call ``model.generate`` once per turn. LLMAgent samples every active trajectory in
one batched call per turn with a KV cache and drops finished rows. The table reports
generated tokens/s and trajectories/s and the speed-up over the baseline, all measured
in the same run. ``--backend vllm`` adds LLMAgent on a vLLM engine (the CPU build here,
float32 as the HF side) at the same env counts, with the engine's start-up time and
its ratio to HF at each count.

The second table is the probe overhead of REX-RAG: whole training iterations of the
RLlib algorithm (tiny-cpu preset, local EnvRunner) on the sanity task with the
warm-started tiny policy, without probes (plain GRPO), with the official probe
probability 20/101 and with every wrong answer probed; same questions and seeds.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents.llm.backends import load_generator
from agents.llm.base import Generator, SamplingParams
from agents.llm.hf import HFGenerator
from agents.llm_agent import LLMAgent
from agents.trajectory import Component
from rexrag_env import SearchQAEnv, SearchQAVectorEnv
from rexrag_env.datasets import load_qa_dataset
from rexrag_env.embedded import embedded_retriever

MAX_TURNS = 2


def make_envs(count: int) -> SearchQAVectorEnv:
    """The episodes LLMAgent plays: ``count`` envs stepped together."""
    return SearchQAVectorEnv(
        count,
        dataset="hotpotqa",
        retriever=embedded_retriever("bm25"),
        max_turns=MAX_TURNS,
        autoreset_mode=AutoresetMode.DISABLED,
    )


def questions(count: int) -> list[dict]:
    return [{"example": example} for example in load_qa_dataset("hotpotqa")[:count]]


def batched_rollout(generator: Generator, count: int, params: SamplingParams) -> tuple[int, float]:
    """(generated tokens, seconds) for ``count`` episodes played by LLMAgent at once."""
    agent = LLMAgent(generator, params)
    start = time.perf_counter()
    trajectories = agent.play(make_envs(count), questions(count))
    elapsed = time.perf_counter() - start
    return sum(len(t.tokens_of(Component.MODEL)) for t in trajectories), elapsed


def naive_rollout(generator: HFGenerator, count: int, params: SamplingParams) -> tuple[int, float]:
    """The same episodes, one env at a time, one ``model.generate`` call per turn."""
    model, tokenizer = generator.model, generator.tokenizer
    env = SearchQAEnv(dataset="hotpotqa", retriever=embedded_retriever("bm25"), max_turns=MAX_TURNS)
    generated = 0
    torch.manual_seed(params.seed or 0)
    start = time.perf_counter()
    for option in questions(count):
        _, info = env.reset(options=option)
        context = tokenizer.apply_chat_template(
            info["messages"], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        done = False
        while not done:
            output = model.generate(
                torch.tensor([context]),
                attention_mask=torch.ones(1, len(context), dtype=torch.long),
                do_sample=True,
                temperature=params.temperature,
                top_p=params.top_p,
                max_new_tokens=params.max_new_tokens,
                stop_strings=list(params.stop),
                tokenizer=tokenizer,
                pad_token_id=generator.pad_token_id,
            )
            new_ids = output[0, len(context) :].tolist()
            generated += len(new_ids)
            observation, _, terminated, truncated, _ = env.step(tokenizer.decode(new_ids))
            context = (
                context + new_ids + tokenizer.encode(observation, add_special_tokens=False)[:500]
            )
            done = terminated or truncated
    return generated, time.perf_counter() - start


PROBE_SETTINGS = (
    ("GRPO (probes off)", {"probes": False}),
    ("REX-RAG, probe_prob 20/101", {}),
    ("REX-RAG, probe_prob 1", {"probe_prob": 1.0, "keep_ratio": 1.0}),
)


def probe_overhead(iterations: int) -> list[tuple[str, dict[str, float]]]:
    """Mean per-iteration metrics of ``iterations`` RexRag iterations per setting."""
    import ray

    from agents.rexrag import RexRagConfig
    from agents.rexrag.rexrag import METRICS_KEY
    from agents.runs.ray_cluster import init_ray
    from agents.warm_start.sanity_task import QUESTIONS_FILE, sanity_policy_path

    policy = sanity_policy_path()
    init_ray(num_cpus=2)
    rows = []
    for name, overrides in PROBE_SETTINGS:
        config = RexRagConfig.from_yaml(
            "tiny-cpu",
            {"llm": str(policy), "dataset": str(policy / QUESTIONS_FILE), "seed": 0, **overrides},
        )
        algo = config.build_algo()
        algo.train()  # warm-up
        runs = [algo.train()[METRICS_KEY] for _ in range(iterations)]
        algo.stop()
        rows.append((name, {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}))
    ray.shutdown()
    return rows


def print_probe_overhead(rows: list[tuple[str, dict[str, float]]]) -> None:
    baseline = rows[0][1]

    def total(metrics):
        return sum(metrics[f"seconds_{phase}"] for phase in ("rollout", "scoring", "learning"))

    print(
        "| setting | probes spawned/kept | sampled tokens | rollout s | of which probing s "
        "| learning s | iteration s | vs GRPO |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, metrics in rows:
        print(
            f"| {name} | {metrics['probes_spawned']:.1f}/{metrics['probes_kept']:.1f} "
            f"| {metrics['sampled_tokens']:.0f} | {metrics['seconds_rollout']:.2f} "
            f"| {metrics['seconds_probing']:.2f} | {metrics['seconds_learning']:.2f} "
            f"| {total(metrics):.2f} | {total(metrics) / total(baseline):.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="model alias, hub name or path")
    parser.add_argument("--envs", default="1,16,64", help="concurrent environments to measure")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per turn")
    parser.add_argument(
        "--backend", choices=("hf", "vllm"), default="hf", help="vllm: add vLLM beside HF"
    )
    parser.add_argument("--naive-episodes", type=int, default=16, help="episodes for the baseline")
    parser.add_argument(
        "--probe-iterations", type=int, default=5, help="iterations per probe setting (0: skip)"
    )
    args = parser.parse_args()

    generator = HFGenerator.from_pretrained(args.model)
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    batched_rollout(generator, 2, params)  # warm-up: index load, first-call allocations

    counts = [int(value) for value in args.envs.split(",")]
    naive_tokens, naive_seconds = naive_rollout(generator, args.naive_episodes, params)
    naive_rate = naive_tokens / naive_seconds
    rows = [("naive loop (HF)", 1, naive_tokens, naive_seconds)]
    rows += [
        ("LLMAgent, HF", count, *batched_rollout(generator, count, params)) for count in counts
    ]
    engine_start = None
    if args.backend == "vllm":
        del generator  # the engine gets the memory and the cores
        start = time.perf_counter()
        # KV cache for every env's whole trajectory at once, as HF keeps them all.
        engine = load_generator(args.model, "vllm", kv_cache_memory_bytes=4 << 30)
        engine_start = time.perf_counter() - start
        batched_rollout(engine, 2, params)  # warm-up
        rows += [
            ("LLMAgent, vLLM", count, *batched_rollout(engine, count, params)) for count in counts
        ]

    print(
        f"model={args.model} torch threads={torch.get_num_threads()} T=1.0 "
        f"max_new_tokens/turn={args.max_new_tokens} turns={MAX_TURNS}+1"
        + (f" vLLM engine start {engine_start:.1f} s" if engine_start is not None else "")
    )
    hf_rate = {c: t / s for name, c, t, s in rows if name == "LLMAgent, HF"}
    print("| rollout | envs | tokens | seconds | tokens/s | trajectories/s | vs naive | vs HF |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, count, tokens, seconds in rows:
        rate = tokens / seconds
        episodes = args.naive_episodes if name.startswith("naive") else count
        versus_hf = f"{rate / hf_rate[count]:.2f}x" if name == "LLMAgent, vLLM" else ""
        print(
            f"| {name} | {count} | {tokens} | {seconds:.2f} | {rate:.0f} | "
            f"{episodes / seconds:.2f} | {rate / naive_rate:.1f}x | {versus_hf} |"
        )
    if args.probe_iterations > 0:
        print(f"\nprobe overhead: mean of {args.probe_iterations} iterations, tiny-cpu preset")
        print_probe_overhead(probe_overhead(args.probe_iterations))


if __name__ == "__main__":
    main()
