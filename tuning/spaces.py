"""Search spaces as data: YAML (or dicts) mapping RexRagConfig fields to Tune samplers.

A space file looks like::

    lr: {loguniform: [1.0e-5, 1.0e-3]}
    correction: {choice: [rexrag, none, sequence]}
    probe_prob: {grid: [0.1, 0.2]}

Samplers: ``grid`` (every value, crossed with the other grids), ``choice``,
``uniform``/``loguniform`` ``[low, high]``, ``randint`` ``[low, high)`` and ``quniform``
``[low, high, q]``. A plain value pins the field for every trial.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from agents.rexrag import RexRagConfig
from agents.rexrag.settings import packaged_yaml

SAMPLERS = ("grid", "choice", "uniform", "loguniform", "randint", "quniform")


def shipped_spaces() -> list[str]:
    """Names of the search spaces shipped in ``tuning/spaces/``."""
    return sorted(p.stem for p in Path(str(files("tuning") / "spaces")).glob("*.yaml"))


def load_space(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A space as plain data, from a shipped name, a YAML file or a dict (validated)."""
    if isinstance(source, dict):
        space = source
    else:
        path = packaged_yaml(source, "tuning", "spaces", "a shipped search space", shipped_spaces())
        space = yaml.safe_load(path.read_text()) or {}
    _check(space)
    return space


def _check(space: dict[str, Any]) -> None:
    known = set(RexRagConfig().to_yaml_dict())
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(f"search space: unknown RexRagConfig fields {unknown}")
    for name, spec in space.items():
        if isinstance(spec, dict) and (len(spec) != 1 or next(iter(spec)) not in SAMPLERS):
            raise ValueError(
                f"search space field {name!r}: a sampler is one of {SAMPLERS} "
                f"with its arguments, got {spec!r}"
            )


def to_tune(space: dict[str, Any]) -> dict[str, Any]:
    """The space with Ray Tune's sampler objects in place of the data specs."""
    from ray import tune

    samplers = {
        "grid": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda bounds: tune.uniform(*bounds),
        "loguniform": lambda bounds: tune.loguniform(*bounds),
        "randint": lambda bounds: tune.randint(*bounds),
        "quniform": lambda bounds: tune.quniform(*bounds),
    }
    resolved = {}
    for name, spec in space.items():
        if isinstance(spec, dict):
            ((kind, arguments),) = spec.items()
            resolved[name] = samplers[kind](arguments)
        else:
            resolved[name] = spec
    return resolved


def mutations(space: dict[str, Any]) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: every sampled field, grids as choices."""
    as_choices = {
        name: {"choice": spec["grid"]} if isinstance(spec, dict) and "grid" in spec else spec
        for name, spec in space.items()
        if isinstance(spec, dict)
    }
    return to_tune(as_choices)
