"""The ``rexrag`` command line: quickstart, sft, train, report, plan, profile, tune, eval,
index, search, serve."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence

from agents import WARM_START_ALIASES
from rexrag_env.embedded import EMBEDDED_DATASETS as EMBEDDED_DATASET_NAMES
from rexrag_env.protocol import DEFAULT_RETRIEVER, DEFAULT_TOPK

# Quiet defaults before the heavy libraries are imported (see README "pitfalls").
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _add_index_command(commands) -> None:
    parser = commands.add_parser("index", help="build a retrieval index over a JSONL corpus")
    parser.add_argument(
        "--corpus", required=True, help="wiki-18 style JSONL corpus (.jsonl or .jsonl.gz)"
    )
    parser.add_argument("--retriever", choices=("bm25", "dense"), default="bm25")
    parser.add_argument("--out", required=True, help="index directory to write")
    parser.add_argument(
        "--encoder",
        default="minilm",
        help="dense encoder name or path (default: the packaged MiniLM)",
    )
    parser.add_argument("--index-type", choices=("flat", "ivf", "hnsw"), default="flat")
    parser.add_argument("--batch-size", type=int, default=64, help="dense encoding batch size")
    parser.add_argument(
        "--device", default=None, help="encoder device (default: cuda if available)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing index (a directory holding rexrag_index.json); a "
        "non-empty directory that is not an index is never replaced",
    )
    parser.set_defaults(run=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from rexrag_env.retrieval.index import build_index

    options = {}
    if args.retriever == "dense":
        from rexrag_env.retrieval.dense import EncoderSettings

        options = {
            "settings": EncoderSettings(model=args.encoder, batch_size=args.batch_size),
            "index_type": args.index_type,
            "device": args.device,
        }
    start = time.perf_counter()
    retriever = build_index(
        args.corpus, args.retriever, args.out, overwrite=args.overwrite, **options
    )
    print(
        f"indexed {len(retriever.corpus)} passages with {args.retriever} into {args.out} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0


def _add_index_source_arguments(parser) -> None:
    """``--corpus`` and ``--encoder``: what an index path needs where the index does not
    record it (FlashRAG's bm25s directories, Search-R1's bare FAISS files)."""
    parser.add_argument(
        "--corpus",
        help="JSONL corpus the index was built on (needed by a bm25s directory without "
        "corpus.jsonl and by a FAISS file; moves a rexrag index's corpus)",
    )
    parser.add_argument(
        "--encoder", help="query encoder of a bare FAISS file, e.g. intfloat/e5-base-v2"
    )
    parser.add_argument(
        "--trust-index",
        action="store_true",
        help="open a rexrag index whose signed rexrag_index.json fails its check (edited, "
        "or built by someone else): it decides which corpus file is read",
    )


def _open_index(args: argparse.Namespace):
    """The retriever ``--index`` names; with ``--trust-index``, a rexrag index opened
    without checking its manifest's signature."""
    from rexrag_env.retrieval.factory import make_retriever

    if not args.trust_index:
        return make_retriever(args.index, args.corpus, args.encoder)
    from rexrag_env.retrieval.index import load_retriever

    if not os.path.exists(args.index):
        raise ValueError(f"--trust-index goes with an index path; {args.index!r} is none")
    return load_retriever(args.index, args.corpus, args.encoder, trust_index=True)


def _add_trust_index_command(commands) -> None:
    parser = commands.add_parser(
        "trust-index",
        help="sign an index someone else built with your rexrag key, once you trust it",
    )
    parser.add_argument("index", help="rexrag index directory (holding rexrag_index.json)")
    parser.add_argument(
        "--corpus",
        help="this machine's copy of the JSONL corpus it was built on, if not where its "
        "manifest says (the passage count is checked)",
    )
    parser.set_defaults(run=_run_trust_index)


def _run_trust_index(args: argparse.Namespace) -> int:
    from rexrag_env.retrieval.index import trust_index

    meta = trust_index(args.index, args.corpus)
    print(
        f"signed {args.index}: a {meta['kind']} index over {meta['num_passages']} passages "
        f"of {meta['corpus']}; rexrag train/eval/tune/search/serve now open it"
    )
    return 0


def _add_search_command(commands) -> None:
    parser = commands.add_parser("search", help="query an index, the shipped corpus or a service")
    parser.add_argument("queries", nargs="+", help="one or more queries")
    parser.add_argument(
        "--index",
        default=DEFAULT_RETRIEVER,
        help="index directory (rexrag or bm25s), FAISS index file, 'bm25'/'dense' (shipped "
        "corpus) or http(s):// URL",
    )
    _add_index_source_arguments(parser)
    parser.add_argument("-k", "--topk", type=int, default=DEFAULT_TOPK)
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of the agent's view"
    )
    parser.set_defaults(run=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from rexrag_env.protocol import format_passages

    retriever = _open_index(args)
    results = retriever.search(args.queries, args.topk)
    for query, passages in zip(args.queries, results, strict=True):
        if args.json:
            print(
                json.dumps(
                    {
                        "query": query,
                        "passages": [
                            {"id": p.id, "score": p.score, "contents": p.contents} for p in passages
                        ],
                    }
                )
            )
        else:
            print(f"# {query}\n{format_passages(passages)}")
    return 0


def _add_serve_command(commands) -> None:
    from rexrag_env.retrieval.server import (
        MAX_ACTIVE_REQUESTS,
        MAX_PASSAGES_PER_REQUEST,
        MAX_REQUEST_BYTES,
        MAX_TOPK,
    )

    parser = commands.add_parser(
        "serve",
        help="serve an index over HTTP (Search-R1 compatible)",
        description="Serve an index over HTTP: POST /retrieve (Search-R1's format), GET "
        f"/health. Bounds per request: a body of {MAX_REQUEST_BYTES // 2**20} MiB, topk "
        f"{MAX_TOPK}, queries x topk {MAX_PASSAGES_PER_REQUEST} passages (HTTP 413 "
        f"beyond); {MAX_ACTIVE_REQUESTS} requests are answered at once, the others wait. "
        "There is no authentication: keep the default loopback host, or serve on a "
        "private network.",
    )
    parser.add_argument(
        "--index",
        default=DEFAULT_RETRIEVER,
        help="index directory (rexrag or bm25s), FAISS index file or 'bm25'/'dense' (shipped "
        "corpus)",
    )
    _add_index_source_arguments(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default loopback; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=int, default=8000, help="1-65535 (default 8000)")
    parser.add_argument(
        "--topk",
        type=int,
        default=DEFAULT_TOPK,
        help=f"passages per query when a request sends no topk (Search-R1 sends null): 1 to "
        f"{MAX_TOPK} and at most the corpus size",
    )
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from rexrag_env.retrieval.server import serve

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    retriever = _open_index(args)
    corpus = getattr(retriever, "corpus", None)
    source = getattr(corpus, "source", None)
    # said here, to the operator, and never on /health
    print(
        f"serving {args.index} ({len(corpus)} passages of {source}) on "
        f"http://{args.host}:{args.port}/retrieve",
        flush=True,
    )
    serve(retriever, args.host, args.port, default_topk=args.topk)
    return 0


def _add_quickstart_command(commands) -> None:
    parser = commands.add_parser(
        "quickstart",
        help="the main job: the env with a baseline agent, then a REX-RAG training run",
    )
    parser.add_argument("--dataset", default="hotpotqa", help="embedded benchmark or dataset file")
    parser.add_argument("--retriever", default=DEFAULT_RETRIEVER)
    parser.add_argument("--limit", type=int, default=200, help="questions to play")
    parser.add_argument(
        "--train-iters", type=int, default=20, help="REX-RAG iterations (0: skip training)"
    )
    parser.add_argument("--out", default="out/quickstart", help="where the tour's runs go")
    parser.set_defaults(run=_run_quickstart)


def _run_quickstart(args: argparse.Namespace) -> int:
    from agents.quickstart import quickstart

    quickstart(args.dataset, args.retriever, args.limit, args.train_iters, args.out)
    return 0


def _add_config_arguments(parser, default: str) -> None:
    """``--config PRESET_OR_YAML``, ``key=value`` overrides and ``--allow-remote-code``:
    one RexRagConfig (:func:`_load_config`)."""
    from agents.llm.remote_code import ALLOW_FLAG

    parser.add_argument(
        "--config", "--preset", help=f"preset name (default {default}) or YAML file"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config fields to override, e.g. group_size=8 correction=sequence",
    )
    parser.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="let the config set vllm_options that run code from outside rexrag and vLLM "
        "(trust_remote_code, hf_overrides, worker_extension_cls, ...)",
    )
    parser.set_defaults(default_config=default)


def _config_name(args: argparse.Namespace) -> str:
    """The preset or YAML file ``--config`` names, or the command's default."""
    return args.config or args.default_config


def _load_config(args: argparse.Namespace):
    """The RexRagConfig of ``--config``, the overrides and ``--allow-remote-code``."""
    from agents.rexrag import RexRagConfig

    return RexRagConfig.from_yaml(
        _config_name(args),
        parse_overrides(args.overrides),
        allow_remote_code=args.allow_remote_code,
    )


def _refuse_config_with_resume(args: argparse.Namespace) -> None:
    """``tune --resume`` continues with the sweep's own settings: a ``--config`` or an
    override given with it would be ignored, so it is an error, not a silent no-op."""
    given = ([f"--config {args.config}"] if args.config else []) + list(args.overrides)
    if given:
        raise ValueError(
            f"--resume continues with the config saved in the run directory; {given} would "
            "be ignored: drop them, or start a new run with them"
        )


def _add_trust_checkpoint_argument(parser) -> None:
    from agents.runs.checkpoint_guard import TRUST_FLAG

    parser.add_argument(
        TRUST_FLAG,
        action="store_true",
        help="with --resume: restore checkpoints that fail the signature check (written "
        "by someone else, edited, or left by a killed sweep). Restoring unpickles them, "
        "which runs any code they hold: only for runs you trust",
    )


def _add_train_command(commands) -> None:
    from agents.runs.samples import DEFAULT_SAMPLE_GROUPS, MAX_SAMPLE_GROUPS
    from agents.runs.trackers import LOGGER_HELP

    parser = commands.add_parser(
        "train", help="train a search agent with REX-RAG (or GRPO: probes=false) on RLlib"
    )
    _add_config_arguments(parser, "tiny-synthwiki")
    parser.add_argument("--stop-iters", type=int, default=10, help="iterations in all")
    parser.add_argument(
        "--checkpoint-dir", help="the run directory (default: out/train/<config>-<time>)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=5, help="iterations")
    parser.add_argument(
        "--keep-checkpoints",
        type=int,
        default=None,
        help="keep only the newest N complete checkpoints (default: all)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --checkpoint-dir with its own config.yaml (a --config or "
        "overrides that would change it are refused); only checkpoints signed with your key "
        "(~/.config/rexrag/secret.key, $REXRAG_SECRET_FILE) are restored",
    )
    _add_trust_checkpoint_argument(parser)
    parser.add_argument("--logger", default="tensorboard", help=LOGGER_HELP)
    parser.add_argument(
        "--sample-groups",
        type=int,
        default=DEFAULT_SAMPLE_GROUPS,
        help=f"groups of each iteration written to RUN/samples/ and the trackers, 0 to "
        f"{MAX_SAMPLE_GROUPS} (default {DEFAULT_SAMPLE_GROUPS}): rescued groups and kept "
        "probes first",
    )
    parser.set_defaults(run=_run_train)


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``["group_size=8", "probes=false"]`` -> ``{"group_size": 8, "probes": False}``.

    Values are parsed as YAML scalars, so numbers and booleans get their types; a
    number YAML 1.1 reads as text (``5e-5``: no dot) is still a number."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"override {pair!r} is not key=value")
        value = yaml.safe_load(text)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        overrides[key.strip()] = value
    return overrides


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agents.runs.console import QuietConsole
    from agents.runs.run_directory import LOG_FILE
    from agents.runs.samples import check_sample_groups
    from agents.runs.trackers import parse_tracker_names

    trackers = parse_tracker_names(args.logger)
    check_sample_groups(args.sample_groups)
    if args.resume:
        if args.checkpoint_dir is None:
            raise ValueError("--resume needs the --checkpoint-dir of the run to continue")
        # given with --resume, --config and overrides must equal the run's (train checks)
        config = _load_config(args) if args.config or args.overrides else None
        source = str(Path(args.checkpoint_dir) / "config.yaml")
    else:
        config = _load_config(args)
        source = _config_name(args)
    if args.checkpoint_dir is None:
        name = Path(source).stem
        args.checkpoint_dir = str(Path("out/train") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    # our lines and real warnings on the terminal; everything, notices included, in the log
    with QuietConsole(Path(args.checkpoint_dir) / LOG_FILE):
        return _train_in(args, config, source, trackers)


def _train_in(args: argparse.Namespace, config, source: str, trackers: list[str]) -> int:
    from agents.rexrag.rexrag import RolloutFailedError
    from agents.runs.run_directory import LOG_FILE
    from agents.runs.training_run import train

    print(f"rexrag train: {source} -> {args.checkpoint_dir} ({args.stop_iters} iterations)")
    try:
        train(
            config,
            args.checkpoint_dir,
            stop_iters=args.stop_iters,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep_checkpoints,
            resume=args.resume,
            trust_checkpoint=args.trust_checkpoint,
            allow_remote_code=args.allow_remote_code,
            trackers=trackers,
            sample_groups=args.sample_groups,
        )
    except KeyboardInterrupt:
        return 130
    except RolloutFailedError as error:
        print(
            f"rexrag train: iteration failed: {error}\n"
            f"the last checkpoint in {args.checkpoint_dir} is intact: fix the cause and rerun "
            "with --resume",
            file=sys.stderr,
        )
        return 2
    print(
        f"done: checkpoints (with policy/), metrics.csv, curves.png, samples/, report.html and "
        f"evaluations in {args.checkpoint_dir} (the full log: {LOG_FILE})"
    )
    return 0


def _add_report_command(commands) -> None:
    parser = commands.add_parser(
        "report",
        help="write a run's report.html: curves, tables, evaluation and a trajectory browser",
    )
    parser.add_argument("run_dir", help="a `rexrag train` run directory")
    parser.add_argument("--out", help="where to write the page (default RUN/report.html)")
    parser.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from agents.runs.report import write_report

    out = write_report(args.run_dir, args.out)
    print(f"report: {out} ({out.stat().st_size / 1e6:.2f} MB; opens offline in any browser)")
    return 0


def _add_plan_command(commands) -> None:
    parser = commands.add_parser(
        "plan", help="per-GPU memory of a training config under ddp, fsdp and fsdp+offload"
    )
    _add_config_arguments(parser, "qwen2.5-3b-search-r1")
    parser.add_argument(
        "--gpus", type=int, help="learner GPUs (default: the config's num_learners, at least 1)"
    )
    parser.add_argument(
        "--gpu-memory",
        type=float,
        default=80.0,
        help="memory per GPU in GiB (default 80: an A100/H100 80GB)",
    )
    parser.set_defaults(run=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    """Print the plan; exit 0 whether or not it fits (the table says which layouts do)."""
    from agents.analysis.memory_plan import model_shape, plan_memory, render_plan

    config = _load_config(args)
    gpus = args.gpus if args.gpus is not None else max(1, config.num_learners)
    plan = plan_memory(config, model_shape(config.llm), gpus=gpus, gpu_memory_gb=args.gpu_memory)
    print(render_plan(plan))
    return 0


def _add_profile_command(commands) -> None:
    parser = commands.add_parser(
        "profile",
        help="how stuck a preset's starting policy is: its dead-end profile (docs/testbed.md)",
    )
    _add_config_arguments(parser, "tiny-synthwiki")
    parser.add_argument(
        "--passes",
        type=int,
        default=2,
        help="sampling passes over the questions, a group of group_size each (default 2)",
    )
    parser.add_argument("--limit", type=int, help="the first N training questions (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_profile)


def _run_profile(args: argparse.Namespace) -> int:
    """Print the profile of the config's ``llm`` on its training questions (a table)."""
    from agents.analysis.dead_end_profile import dead_end_profile

    if args.passes < 1:
        raise ValueError(f"--passes must be at least 1, got {args.passes}")
    profile = dead_end_profile(
        _load_config(args),
        preset=_config_name(args),
        passes=args.passes,
        limit=args.limit,
        seed=args.seed,
        log=print,
    )
    print(profile.table())
    return 0


def _add_sft_command(commands) -> None:
    parser = commands.add_parser(
        "sft", help="warm-start a policy on scripted search demonstrations (before RL)"
    )
    parser.add_argument(
        "--recipe",
        default="tiny-synthwiki",
        help=f"registered warm start whose recipe to run ({', '.join(WARM_START_ALIASES)}); "
        "the options below override its fields",
    )
    parser.add_argument("--model", help="alias, hub name or path to start from (recipe: base)")
    parser.add_argument("--dataset", help="questions to demonstrate (default: the recipe's)")
    parser.add_argument("--max-turns", type=int)
    parser.add_argument(
        "--overconfident-share",
        type=float,
        help="synthwiki: share of demonstrations that answer after the first hop",
    )
    parser.add_argument(
        "--doubt-share",
        type=float,
        help="synthwiki: share of multi-hop whole-chain demonstrations told as a probe",
    )
    parser.add_argument("--repeats", type=int, help="synthwiki: demonstrations per question")
    parser.add_argument("--questions", type=int, help="realqa: training questions played")
    parser.add_argument("--topk", type=int, help="passages per search")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--max-tokens-per-micro-batch",
        type=int,
        help="padded tokens per forward/backward pass (default 4096): bounds memory, "
        "the result is the same",
    )
    parser.add_argument("--out", default="out/sft", help="where the fine-tuned model goes")
    parser.set_defaults(run=_run_sft)


#: ``rexrag sft`` options that override recipe fields of the same name.
_SFT_OPTIONS = (
    *("overconfident_share", "doubt_share", "repeats", "questions"),
    *("steps", "lr", "batch_size", "max_turns", "topk", "seed"),
)


def _run_sft(args: argparse.Namespace) -> int:
    """A registered recipe (its fields overridden by the options given), saved to --out."""
    from dataclasses import fields, replace
    from pathlib import Path

    from agents.llm.models import load_model_and_tokenizer
    from agents.warm_start.recipes import WARM_STARTS
    from agents.warm_start.sft import DEFAULT_MAX_TOKENS_PER_MICRO_BATCH
    from agents.warm_start.store import save_warm_start, warm_start

    if args.recipe not in WARM_STARTS:
        raise ValueError(f"--recipe must be one of {sorted(WARM_STARTS)}, got {args.recipe!r}")
    recipe = WARM_STARTS[args.recipe]
    options = {"base": args.model} | {name: getattr(args, name) for name in _SFT_OPTIONS}
    options = {name: value for name, value in options.items() if value is not None}
    unknown = set(options) - {field.name for field in fields(recipe)}
    if unknown:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(unknown))
        raise ValueError(f"recipe {args.recipe} has no {flags}")
    recipe = replace(recipe, **options)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: choose another --out")
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(recipe.base)
    losses = warm_start(
        model,
        tokenizer,
        recipe,
        dataset=args.dataset,
        max_tokens_per_micro_batch=args.max_tokens_per_micro_batch
        or DEFAULT_MAX_TOKENS_PER_MICRO_BATCH,
        progress=True,
        log=print,
    )
    save_warm_start(out, model, tokenizer, recipe, losses)
    print(
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; model in {out} "
        f"({time.perf_counter() - start:.0f}s; train it: rexrag train llm={out} ...)"
    )
    return 0


def _add_tune_command(commands) -> None:
    from agents.runs.trackers import LOGGER_HELP

    parser = commands.add_parser("tune", help="a Ray Tune sweep over RexRagConfig fields")
    _add_config_arguments(parser, "tiny-sanity")
    parser.add_argument(
        "--space", default="rexrag", help="search space: shipped name (rexrag, correction) or YAML"
    )
    parser.add_argument("--scheduler", choices=("asha", "pbt", "fifo"), default="asha")
    parser.add_argument("--num-samples", type=int, default=4, help="samples of the space")
    parser.add_argument("--max-iters", type=int, default=10, help="iterations per trial")
    parser.add_argument(
        "--metric", default="rexrag/accuracy_original", help="result key to optimise"
    )
    parser.add_argument("--mode", choices=("max", "min"), default="max")
    parser.add_argument("--max-concurrent", type=int, default=None, help="trials at once")
    parser.add_argument("--out", default="out/tune", help="the sweep directory")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted sweep in --out with its own settings (no --config "
        "or overrides); only a sweep signed with your key when it stopped is resumed "
        "(a killed one needs --trust-checkpoint)",
    )
    _add_trust_checkpoint_argument(parser)
    parser.add_argument("--logger", default="tensorboard", help=LOGGER_HELP)
    parser.set_defaults(run=_run_tune)


def _run_tune(args: argparse.Namespace) -> int:
    from agents.runs.trackers import parse_tracker_names
    from tuning.sweep import SweepInterruptedError, run_sweep

    if args.resume:
        _refuse_config_with_resume(args)
    base = None if args.resume else _load_config(args)
    try:
        summary = run_sweep(
            base,
            args.space,
            out_dir=args.out,
            scheduler=args.scheduler,
            num_samples=args.num_samples,
            max_iters=args.max_iters,
            metric=args.metric,
            mode=args.mode,
            max_concurrent_trials=args.max_concurrent,
            loggers=parse_tracker_names(args.logger),
            resume=args.resume,
            trust_checkpoint=args.trust_checkpoint,
            allow_remote_code=args.allow_remote_code,
        )
    except SweepInterruptedError as error:
        print(f"rexrag tune: {error}", file=sys.stderr)
        return 130
    print(summary.table)
    print(f"trials: {summary.csv_path}  curves: {summary.plot_path}")
    if summary.best_config_path:
        best = summary.best_config_path
        print(f"best config: {best} (train it: rexrag train --config {best})")
    return 0


#: ``rexrag eval`` flags that set the protocol: EvalProtocol fields of the same name.
_PROTOCOL_FLAGS = {
    "retriever": (str, "'bm25'/'dense' (shipped corpus), index directory or service URL"),
    "topk": (int, "passages per search"),
    "max_turns": (int, "search-enabled turns (+1 final turn)"),
    "max_new_tokens": (int, "llm: tokens sampled per turn"),
    "max_observation_tokens": (int, "llm: tokens kept of each observation"),
}


def _add_eval_command(commands) -> None:
    from agents.evaluation import AGENT_KINDS, EvalProtocol
    from agents.llm.backends import BACKENDS

    parser = commands.add_parser(
        "eval", help="evaluate an agent on the QA benchmarks (pinned protocol)"
    )
    parser.add_argument("--agent", choices=AGENT_KINDS, default="search-once")
    parser.add_argument(
        "--model",
        default=None,
        help="llm: alias (tiny, smollm2-135m), hub name or path; openai: served model name",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="a `rexrag train` run or checkpoint directory: evaluate its policy (as --agent llm)",
    )
    parser.add_argument(
        "--base-url",
        default="http://127.0.0.1:8000/v1",
        help="openai: root of the OpenAI-compatible API",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="hf",
        help="llm: generate with transformers (hf) or a vLLM engine (vllm)",
    )
    parser.add_argument(
        "--datasets",
        default=",".join(EMBEDDED_DATASET_NAMES),
        help="comma-separated embedded benchmark names or dataset files",
    )

    defaults = EvalProtocol()
    for name, (kind, text) in _PROTOCOL_FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{text} (default: the run's with --checkpoint, else {getattr(defaults, name)})",
        )
    parser.add_argument(
        "--limit", type=int, default=None, help="questions per dataset (default all)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="episodes played at once")
    parser.add_argument(
        "--out",
        default="out/eval",
        help="results directory (re-run to resume; another agent, model or policy is refused)",
    )
    parser.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from agents.evaluation import AgentIdentity, EvalProtocol, evaluate, make_agent

    datasets = tuple(name.strip() for name in args.datasets.split(",") if name.strip())
    overrides = {name: getattr(args, name) for name in _PROTOCOL_FLAGS}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if args.checkpoint:
        from agents.runs.policy_eval import checkpoint_evaluation

        policy, protocol, source = checkpoint_evaluation(
            args.checkpoint, datasets, args.limit, overrides
        )
        args.agent, args.model = "llm", str(policy)
        if source is not None:
            overridden = f" (overridden: {', '.join(sorted(overrides))})" if overrides else ""
            print(f"protocol: the run's, from {source}{overridden}")
    else:
        decoding = "greedy" if args.agent in ("llm", "openai") else "scripted"
        protocol = EvalProtocol(datasets=datasets, limit=args.limit, decoding=decoding, **overrides)
    print(f"agent: {args.agent}" + (f" model={args.model}" if args.model else ""))
    agent = make_agent(
        args.agent, protocol, model=args.model, base_url=args.base_url, backend=args.backend
    )
    identity = AgentIdentity.of(args.agent, args.model)
    evaluate(agent, protocol, args.out, batch_size=args.batch_size, identity=identity)
    print(f"results in {args.out}/ (per-question <dataset>.jsonl, summary.md, summary.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rexrag", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_quickstart_command(commands)
    _add_sft_command(commands)
    _add_train_command(commands)
    _add_report_command(commands)
    _add_plan_command(commands)
    _add_profile_command(commands)
    _add_tune_command(commands)
    _add_eval_command(commands)
    _add_index_command(commands)
    _add_trust_index_command(commands)
    _add_search_command(commands)
    _add_serve_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rexrag`` console script."""
    from agents.openai_agent import ModelServerError
    from rexrag_env.datasets import DatasetFormatError
    from rexrag_env.retrieval.base import RetrievalError
    from rexrag_env.retrieval.corpus import CorpusFormatError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (
        RetrievalError,
        CorpusFormatError,
        DatasetFormatError,
        OSError,
        ValueError,
        ImportError,
        ModelServerError,
    ) as error:
        print(f"rexrag {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
