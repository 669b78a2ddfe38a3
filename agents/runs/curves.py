"""Learning-curve plots (PNG) for training runs and experiments."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

#: (title, metrics) of the panels of a training run's ``curves.png``.
RUN_PANELS = (
    ("accuracy", ("accuracy_original", "accuracy_probe")),
    ("dead-end fraction", ("dead_end_fraction_before_probing", "dead_end_fraction_after_probing")),
    ("probe keep ratio", ("keep_ratio",)),
    ("searches per trajectory", ("searches_per_trajectory",)),
)


def read_metrics_csv(path: str | Path) -> dict[str, list[float]]:
    """A run's ``metrics.csv`` as one list per column."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def plot_panels(
    panels: Sequence[tuple[str, Mapping[str, Sequence[float] | Mapping[int, float]]]],
    out: str | Path,
    title: str = "",
) -> Path:
    """One subplot per ``(title, {label: values})``, side by side: values per iteration
    from 1, or ``{iteration: value}`` for a metric measured at some iterations only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for axis, (panel_title, lines) in zip(axes[0], panels, strict=True):
        for label, values in lines.items():
            x = list(values) if isinstance(values, Mapping) else range(1, len(values) + 1)
            y = list(values.values()) if isinstance(values, Mapping) else values
            axis.plot(x, y, marker=".", label=label)
        axis.set_title(panel_title, fontsize="medium")
        axis.set_xlabel("training iteration")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
    if title:
        figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_run(metrics_csv: str | Path, out: str | Path, title: str = "") -> Path:
    """A training run's curves: accuracy of originals and probes, dead-end fraction,
    keep ratio and searches per trajectory, per iteration."""
    columns = read_metrics_csv(metrics_csv)
    panels = [
        (panel, {metric: columns[metric] for metric in metrics if metric in columns})
        for panel, metrics in RUN_PANELS
    ]
    return plot_panels(panels, out, title)
