"""A training run on disk: iterate, print progress, checkpoint, resume (``rexrag train``).

Layout of a run directory::

    DIR/config.yaml              the run's RexRagConfig (what --resume trains with)
    DIR/metrics.csv              one row per iteration (appended as they finish)
    DIR/samples/iteration_000004.jsonl  a few of the iteration's groups, text and credit
                                 (agents/runs/samples.py)
    DIR/curves.png               learning curves, redrawn at every checkpoint
    DIR/report.html              the run on one page, rewritten at every checkpoint and at
                                 the end (agents/runs/report.py, ``rexrag report DIR``)
    DIR/provenance.json          each session's command, start, commit and versions
    DIR/train.log                everything ``rexrag train`` printed (agents/runs/console.py)
    DIR/tensorboard/             TensorBoard event files (and wandb/, mlruns/, trackers.json
                                 with those trackers: agents/runs/trackers.py)
    DIR/eval_before/, eval_after/  greedy test evaluation (with ``eval_dataset``):
                                 per-question records and summary.json
    DIR/iteration_000004/        an RLlib checkpoint (learner weights, optimizer, keep ratio)
    DIR/iteration_000004/policy/ the policy as a Hugging Face model (from_pretrained-able)
    DIR/iteration_000004/COMPLETE  written last: the signed manifest of the checkpoint's
                                 files; a checkpoint without it is ignored, one that
                                 fails its check is refused (agents/runs/checkpoint_guard.py)

An interrupted run (Ctrl-C, a failed iteration, a killed process, a power loss) loses
at most the iterations since its last complete checkpoint; ``resume=True`` continues
from there (the metrics rows and samples written past it are dropped).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agents.rexrag import RexRagConfig
from agents.rexrag.rexrag import METRICS_KEY
from agents.runs.checkpoint_guard import restore_latest, save_checkpoint
from agents.runs.curves import plot_run
from agents.runs.policy_eval import evaluate_policy
from agents.runs.ray_cluster import init_ray
from agents.runs.report import write_report
from agents.runs.run_directory import (
    REPORT_FILE,
    RunDirectoryError,
    complete_checkpoints,
    record_session,
    resolve_policy,
)
from agents.runs.samples import (
    DEFAULT_SAMPLE_GROUPS,
    SampleCollector,
    check_sample_groups,
    truncate_samples,
    write_samples,
)
from agents.runs.trackers import Tracker, Trackers

#: (metric, label, format) of the one-line progress report.
PROGRESS_FIELDS = (
    ("accuracy_original", "acc", ".2f"),
    ("accuracy_probe", "probe-acc", ".2f"),
    ("probes_spawned", "spawned", ".0f"),
    ("probes_kept", "kept", ".0f"),
    ("dead_end_fraction_before_probing", "dead-end", ".2f"),
    ("dead_end_fraction_after_probing", "->", ".2f"),
    ("keep_ratio", "keep", ".3f"),
    ("alpha", "alpha", ".3f"),
    ("kl", "kl", ".4f"),
    ("clip_fraction", "clip", ".3f"),
    ("searches_per_trajectory", "searches", ".2f"),
)


def progress_line(iteration: int, total: int, metrics: dict[str, float]) -> str:
    """``iter 3/20  acc 0.31  probe-acc 0.00  … 1.3s (gen 0.8 ret 0.1 learn 0.3)``."""
    parts = [f"iter {iteration}/{total}"]
    parts += [f"{label} {metrics.get(key, 0.0):{fmt}}" for key, label, fmt in PROGRESS_FIELDS]
    phases = ("rollout", "scoring", "learning")
    wall = sum(metrics.get(f"seconds_{phase}", 0.0) for phase in phases)
    split = " ".join(
        f"{label} {metrics.get(f'seconds_{phase}', 0.0):.1f}"
        for label, phase in (
            ("gen", "generation"),
            ("ret", "retrieval"),
            ("probe", "probing"),
            ("learn", "learning"),
        )
    )
    seconds = f"{wall:.1f}s ({split})"
    return "  ".join([*parts, seconds])


def _append_metrics(path: Path, iteration: int, metrics: dict[str, float]) -> None:
    row = {"iteration": iteration, **{k: float(v) for k, v in sorted(metrics.items())}}
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_metrics(path: Path, iterations: int) -> None:
    """Drop rows past ``iterations`` (written after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) <= iterations]
    with path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def train(
    config: RexRagConfig | None,
    run_dir: str | Path,
    *,
    stop_iters: int,
    checkpoint_every: int = 1,
    keep_checkpoints: int | None = None,
    resume: bool = False,
    trust_checkpoint: bool = False,
    allow_remote_code: bool = False,
    trackers: Iterable[str | Tracker] = ("tensorboard",),
    sample_groups: int = DEFAULT_SAMPLE_GROUPS,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train until ``stop_iters`` iterations in all; returns this call's iteration metrics.

    With ``resume``, the config is the run's own ``config.yaml`` (``config`` must be
    None or equal to it; ``allow_remote_code`` as in :meth:`RexRagConfig.from_yaml`)
    and training continues from the latest complete checkpoint. ``trackers``
    (names of :data:`agents.runs.trackers.TRACKERS` or instances) get each iteration's
    metrics, as ``metrics.csv`` does, and the before/after evaluation summaries.
    ``keep_checkpoints`` (None: all) is how many of the newest complete checkpoints
    stay on disk. A checkpoint is restored only if this user's key signed it, unless
    ``trust_checkpoint`` (:mod:`agents.runs.checkpoint_guard`). ``sample_groups`` groups
    of each iteration (0 to :data:`~agents.runs.samples.MAX_SAMPLE_GROUPS`) go to
    ``samples/`` and the trackers, and ``report.html`` is rewritten at each checkpoint.
    """
    if keep_checkpoints is not None and keep_checkpoints < 1:
        raise ValueError(
            f"keep_checkpoints must be at least 1 (or None: all), got {keep_checkpoints}"
        )
    check_sample_groups(sample_groups)
    tracking = Trackers(trackers)  # a missing tracker package fails here, before any work
    run_dir = Path(run_dir)
    checkpoints = complete_checkpoints(run_dir)
    config_path = run_dir / "config.yaml"
    if resume:
        if not config_path.is_file():
            raise RunDirectoryError(f"nothing to resume in {run_dir}: no config.yaml")
        saved = RexRagConfig.from_yaml(config_path, allow_remote_code=allow_remote_code)
        if config is not None:
            _refuse_a_changed_config(config, saved, config_path)
        config = saved
        log(f"config: {config_path} (the run's own)")
    elif config is None:
        raise ValueError("a new run needs a config")
    elif checkpoints or config_path.exists():
        raise RunDirectoryError(
            f"{run_dir} already holds a run: pass --resume to continue it, or another directory"
        )
    config.validate()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        config.to_yaml(config_path)
    before = None
    if config.eval_dataset:
        from agents.llm.models import resolve_model

        before = evaluate_into(
            run_dir / "eval_before", resolve_model(config.llm), config, "before", log
        )
    init_ray()
    history: list[dict[str, Any]] = []
    with tracking:
        algo = config.build_algo()
        samples = SampleCollector(config.probe_credit, sample_groups)
        algo.observe_batch = samples  # RexRag.training_step hands it each iteration's batch
        try:
            if resume:
                restored = restore_latest(algo, run_dir, trust=trust_checkpoint, log=log)
                if restored is not None:
                    log(f"resumed from {restored} (iteration {algo.iteration})")
            _truncate_metrics(run_dir / "metrics.csv", algo.iteration)
            truncate_samples(run_dir, algo.iteration)
            record_session(run_dir, algo.iteration if resume else None)
            tracking.start(run_dir, config.to_yaml_dict(), algo.iteration if resume else None)
            if before is not None and not resume:  # a resumed run logged it the first time
                tracking.log(_prefixed("eval_before", before), step=0)
            last_saved = algo.iteration
            try:
                while algo.iteration < stop_iters:
                    metrics = algo.train()[METRICS_KEY]
                    history.append(metrics)
                    _append_metrics(run_dir / "metrics.csv", algo.iteration, metrics)
                    tracking.log(metrics, step=algo.iteration)
                    sampled = samples.take()
                    if sampled:
                        write_samples(run_dir, algo.iteration, sampled)
                        tracking.log_samples(sampled, step=algo.iteration)
                    log(progress_line(algo.iteration, stop_iters, metrics))
                    if algo.iteration % checkpoint_every == 0 or algo.iteration == stop_iters:
                        save_checkpoint(algo, run_dir, keep_checkpoints)
                        last_saved = algo.iteration
                        plot_run(run_dir / "metrics.csv", run_dir / "curves.png", str(run_dir))
                        _write_report(run_dir, log)
            except KeyboardInterrupt:
                if algo.iteration > last_saved:
                    save_checkpoint(algo, run_dir, keep_checkpoints)
                log(f"interrupted after iteration {algo.iteration}: resume with --resume")
                raise
        finally:
            algo.stop()
        if config.eval_dataset and algo.iteration == stop_iters:
            # a resumed run's policy is new
            shutil.rmtree(run_dir / "eval_after", ignore_errors=True)
            after = evaluate_into(
                run_dir / "eval_after", resolve_policy(run_dir), config, "after", log
            )
            tracking.log(_prefixed("eval_after", after), step=algo.iteration)
            _write_report(run_dir, log)
    return history


def _write_report(run_dir: Path, log: Callable[[str], None]) -> None:
    """Rewrite ``report.html``. The page is for reading: a failure to write it is
    reported and the run goes on (``rexrag report`` writes it again, with the error)."""
    try:
        write_report(run_dir)
    except Exception as error:  # a page must never stop a long run
        log(f"report: {run_dir / REPORT_FILE} not written ({type(error).__name__}: {error})")


def _refuse_a_changed_config(given: RexRagConfig, saved: RexRagConfig, config_path: Path) -> None:
    """A resumed run trains with its saved config: a given one that differs would be
    ignored, so it is refused, naming the fields (one equal to it changes nothing)."""
    ours, theirs = saved.to_yaml_dict(), given.to_yaml_dict()
    changed = [name for name in ours if ours[name] != theirs.get(name)]
    if changed:
        shown = ", ".join(f"{name} ({ours[name]!r} -> {theirs.get(name)!r})" for name in changed)
        raise RunDirectoryError(
            f"a resumed run continues with its own config ({config_path}); the config given "
            f"changes {shown}: drop --config and the overrides to resume, or start a new run"
        )


def _prefixed(prefix: str, summary: Mapping[str, float]) -> dict[str, float]:
    """``{"em": 31.0}`` -> ``{"eval_before/em": 31.0}``: an evaluation beside the iterations."""
    return {f"{prefix}/{name}": value for name, value in summary.items()}


def evaluate_into(
    out: Path, policy: str | Path, config: RexRagConfig, when: str, log: Callable[[str], None]
) -> dict[str, float]:
    """Greedy EM of ``policy`` on the config's eval dataset, recorded in ``out`` (a run
    resumed after this evaluation finds it there and does not redo it)."""
    summary = evaluate_policy(
        policy, config, [config.eval_dataset], out, limit=config.eval_limit, log=lambda _: None
    )["average"]
    log(
        f"{config.eval_dataset} {when} training: EM {summary['em']:.1f}  F1 {summary['f1']:.1f}  "
        f"searches {summary['searches']:.2f}  ({summary['n']:.0f} questions, greedy; {out})"
    )
    return summary
