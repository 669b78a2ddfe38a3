"""Where a probe's credit goes: the credit components of a token and the ``probe_credit`` options.

A probe copies its wrong parent up to ``<answer>``, so its trained tokens fall in three
parts with different meanings, and an original's in one (issue "Dead ends, seen and
fixed"):

- ``original``: every trained token of an original (its own model text);
- ``prefix``: a probe's tokens before its branch point, copied from its parent; they
  hold the parent's dead-end decision (e.g. "The chain is complete." after one hop);
- ``prompt``: the inserted exploratory prompt (PROBE_PROMPT);
- ``continuation``: a probe's trained tokens from its branch point on that are not the
  prompt: the few re-encoded tokens at the cut, then what the policy sampled after the
  prompt.

``probe_credit`` (``RexRagConfig``) chooses which of them carry loss, from
:data:`PROBE_CREDITS`; each option maps the ``[batch, seq]`` component codes to the
trained mask, so the learner batch never branches on the option. What each option's
gradient estimates, and where it is biased, is in docs/credit.md.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import numpy as np
import torch

#: Learner statistics that add up over micro-batches, learners and mini-batches (the
#: per-component sums below), rather than being token-weighted means.
SUM_SUFFIX = "_sum"


class CreditComponent(enum.IntEnum):
    """The credit component of a token (:func:`credit_components`)."""

    NONE = 0  #: not trained by label: question prompt, information, feedback, padding
    ORIGINAL = 1
    PREFIX = 2
    PROMPT = 3
    CONTINUATION = 4


#: The components' names, as the metrics call them (``credit_<name>_<statistic>``).
COMPONENT_NAMES = {
    CreditComponent.ORIGINAL: "original",
    CreditComponent.PREFIX: "prefix",
    CreditComponent.PROMPT: "prompt",
    CreditComponent.CONTINUATION: "continuation",
}


def credit_components(
    loss_mask: np.ndarray,
    prompt_mask: np.ndarray,
    is_probe: np.ndarray,
    branch_point: np.ndarray,
) -> np.ndarray:
    """``[batch, seq]`` :class:`CreditComponent` codes of every token.

    ``loss_mask``: the tokens trained by label (MODEL and PROBE_PROMPT); ``prompt_mask``:
    PROBE_PROMPT tokens; ``is_probe``, ``branch_point``: ``[batch]``
    (:class:`~agents.rexrag.token_batch.TokenBatch`).
    """
    positions = np.arange(loss_mask.shape[-1])[None, :]
    probe = is_probe[:, None]
    before_branch = positions < branch_point[:, None]
    codes = np.select(
        [
            ~loss_mask,
            ~probe,
            prompt_mask,
            before_branch,
        ],
        [
            CreditComponent.NONE,
            CreditComponent.ORIGINAL,
            CreditComponent.PROMPT,
            CreditComponent.PREFIX,
        ],
        default=CreditComponent.CONTINUATION,
    )
    return codes.astype(np.int64)


def copy_credit(components: np.ndarray) -> np.ndarray:
    """The official credit: a probe's advantage on every one of its trained tokens,
    the copied prefix included."""
    return components != CreditComponent.NONE


def masked_credit(components: np.ndarray) -> np.ndarray:
    """A probe's copied prefix carries no loss (out of the policy-gradient and KL terms
    and the token count); its prompt and continuation keep the probe's advantage."""
    return ~np.isin(components, (CreditComponent.NONE, CreditComponent.PREFIX))


def group_only_credit(components: np.ndarray) -> np.ndarray:
    """Probes carry no loss at all: they count only in their group's reward mean and
    standard deviation, where a right probe turns its all-wrong group's originals'
    advantages negative."""
    return components == CreditComponent.ORIGINAL


#: The ``probe_credit`` options: component codes -> the ``[batch, seq]`` trained mask.
PROBE_CREDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "copy": copy_credit,
    "masked": masked_credit,
    "group_only": group_only_credit,
}


def component_sums(
    per_token: dict[str, torch.Tensor], mask: torch.Tensor, components: torch.Tensor
) -> dict[str, float]:
    """Per credit component, the sums over its ``mask`` tokens of each ``per_token``
    statistic (``[batch, seq]``) and the token count: ``credit_<component>_<name>_sum``
    and ``credit_<component>_update_tokens_sum``. Sums, so that a learner's micro-batches,
    several learners and an iteration's mini-batches add up to exact per-component means
    (:func:`component_means`)."""
    sums = {}
    kept = mask.bool()
    for code, component in COMPONENT_NAMES.items():
        tokens = kept & (components == code)
        sums[f"credit_{component}_update_tokens{SUM_SUFFIX}"] = float(tokens.sum())
        for name, values in per_token.items():
            sums[f"credit_{component}_{name}{SUM_SUFFIX}"] = float(values.detach()[tokens].sum())
    return sums


def component_means(sums: dict[str, float], names: tuple[str, ...]) -> dict[str, float]:
    """``credit_<component>_<name>``: the mean of each of ``names`` over the component's
    trained tokens from :func:`component_sums`' totals (NaN where it had none)."""
    means = {}
    for component in COMPONENT_NAMES.values():
        tokens = sums.get(f"credit_{component}_update_tokens{SUM_SUFFIX}", 0.0)
        for name in names:
            total = sums.get(f"credit_{component}_{name}{SUM_SUFFIX}", 0.0)
            means[f"credit_{component}_{name}"] = total / tokens if tokens else float("nan")
    return means
