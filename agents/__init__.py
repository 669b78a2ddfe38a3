"""Agents that act in ``rexrag_env`` environments, and how they learn.

The names that reach into the warm-start recipes (model aliases of warm-started
policies, the sanity task's questions) are registered here, at the top of the
package, so that ``agents.llm`` and ``agents.rexrag`` resolve them without importing
``agents.warm_start`` (see :class:`rexrag_env.registry.NameRegistry`).
"""

from agents.llm.models import MODELS
from rexrag_env.datasets import DATASETS

_SANITY = "agents.warm_start.sanity_task"
#: The warm starts of ``agents.warm_start.recipes.WARM_STARTS`` (a test pins them).
WARM_START_ALIASES = (
    "tiny-synthwiki",
    "tiny-synthwiki-trap",
    "smollm2-synthwiki",
    "smollm2-synthwiki-trap",
    "smollm2-realqa",
)

MODELS.register("tiny-sanity", f"{_SANITY}:sanity_policy_path")
MODELS.register(
    "tiny-synthwiki-base", "agents.warm_start.synthwiki_policy:tiny_synthwiki_base_path"
)
MODELS.register(
    "tiny-synthwiki-trap-base", "agents.warm_start.synthwiki_trap:tiny_synthwiki_trap_base_path"
)
for _alias in WARM_START_ALIASES:
    MODELS.register(_alias, "agents.warm_start.recipes:warm_start_path", alias=_alias)
DATASETS.register("tiny-sanity", f"{_SANITY}:sanity_questions_path")
