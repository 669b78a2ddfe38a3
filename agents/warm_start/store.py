"""Building, caching and shipping warm-start policies, whatever their recipe.

A recipe (:class:`WarmStartRecipe`) names a base model, the demonstrations it is
fine-tuned on and the SFT settings; its ``key()`` hashes everything the policy depends
on. A registered warm start (``agents/warm_start/recipes.py``) is found in the package
(``weights/<alias>``, when built by the current recipe: same key) or built once into
the rexrag cache under ``<alias>-<key>``, so changing a recipe rebuilds it and
concurrent callers share one build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from agents.trajectory import Trajectory
from agents.warm_start.sft import DEFAULT_MAX_TOKENS_PER_MICRO_BATCH, supervised_finetune

#: Where the shipped warm starts live: one directory per alias, as save_warm_start writes.
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"
#: The file in a warm start's directory that records its recipe and key.
RECIPE_FILE = "recipe.json"
LOSSES_FILE = "sft_losses.csv"


class WarmStartRecipe(Protocol):
    """How a warm-start policy is made (a frozen dataclass: ``asdict`` is its record)."""

    base: str
    steps: int
    lr: float
    batch_size: int
    seed: int

    def key(self) -> str:
        """A short hash of everything the policy depends on."""

    def demonstrations(self, tokenizer, dataset: str | None = None) -> list[Trajectory]:
        """The token demonstrations to fine-tune on (``dataset``: the recipe's own if None)."""


def digest(value) -> str:
    """A short stable hash of a JSON-able value (cache names that follow their recipe)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def warm_start(
    model,
    tokenizer,
    recipe: WarmStartRecipe,
    *,
    dataset: str | None = None,
    max_tokens_per_micro_batch: int = DEFAULT_MAX_TOKENS_PER_MICRO_BATCH,
    progress: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> list[float]:
    """SFT ``model`` in place on the recipe's demonstrations (on ``dataset`` if given);
    returns the step losses. ``max_tokens_per_micro_batch`` bounds memory, not the
    result (it is not part of the recipe). ``log`` gets one line on the demonstrations
    first."""
    demonstrations = recipe.demonstrations(tokenizer, dataset)
    correct = sum(d.correct for d in demonstrations) / len(demonstrations)
    log(f"{len(demonstrations)} demonstrations ({correct:.0%} correct), {recipe.steps} steps")
    return supervised_finetune(
        model,
        demonstrations,
        steps=recipe.steps,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        max_tokens_per_micro_batch=max_tokens_per_micro_batch,
        progress=progress,
    )


def shipped_warm_start(alias: str, recipe: WarmStartRecipe) -> Path | None:
    """The shipped policy of ``alias`` if the package has one built by ``recipe`` (same
    key), else None (a recipe changed since: it is rebuilt)."""
    manifest = SHIPPED_WEIGHTS / alias / RECIPE_FILE
    if not manifest.is_file():
        return None
    return manifest.parent if json.loads(manifest.read_text())["key"] == recipe.key() else None


def build_warm_start(alias: str, recipe: WarmStartRecipe) -> Path:
    """The policy ``alias`` names: the shipped one, else built on first use into the
    cache (a progress bar; minutes on 2 CPU cores)."""
    from agents.llm.models import load_model_and_tokenizer
    from rexrag_env.cache import build_once, cache_dir

    shipped = shipped_warm_start(alias, recipe)
    if shipped is not None:
        return shipped

    def build(directory: Path) -> None:
        model, tokenizer = load_model_and_tokenizer(recipe.base)
        print(f"{alias}: warm-starting {recipe.base} on demonstrations (cached after)")
        losses = warm_start(model, tokenizer, recipe, progress=True, log=print)
        save_warm_start(directory, model, tokenizer, recipe, losses)

    return build_once(cache_dir() / "models" / f"{alias}-{recipe.key()}", build)


def save_warm_start(
    directory: Path, model, tokenizer, recipe: WarmStartRecipe, losses: list[float]
) -> None:
    """The policy as ``from_pretrained`` loads it, its step losses, and its recipe with
    the key :func:`shipped_warm_start` checks."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / LOSSES_FILE).write_text(
        "step,loss\n" + "".join(f"{i + 1},{loss}\n" for i, loss in enumerate(losses))
    )
    manifest = {"key": recipe.key(), "recipe": asdict(recipe)}
    (directory / RECIPE_FILE).write_text(json.dumps(manifest, indent=1) + "\n")


def read_losses(directory: Path) -> list[float]:
    """The step losses :func:`save_warm_start` wrote."""
    lines = (directory / LOSSES_FILE).read_text().splitlines()[1:]
    return [float(line.split(",")[1]) for line in lines]
