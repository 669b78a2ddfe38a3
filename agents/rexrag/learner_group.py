"""RexRagLearnerGroup: RLlib's LearnerGroup, with the state of a sharded policy gathered
from every learner.

RLlib reads a LearnerGroup's state (checkpoints, the weight sync to EnvRunners) from
its first learner alone: right for DDP replicas, a deadlock for FSDP shards, whose
gathering is a collective every learner must join. Sharded, this group asks all
learners and keeps rank 0's answer (the only one holding the gathered state).
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core import COMPONENT_LEARNER
from ray.rllib.core.learner.learner_group import LearnerGroup


class RexRagLearnerGroup(LearnerGroup):
    @property
    def sharded(self) -> bool:
        return self.config.learner_sharding == "fsdp" and not self.is_local

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        if not self.sharded:
            return super().get_state(components, not_components=not_components, **kwargs)
        if not self._check_component(COMPONENT_LEARNER, components, not_components):
            return {}
        learner_components = self._get_subcomponents(COMPONENT_LEARNER, components)
        learner_not_components = self._get_subcomponents(COMPONENT_LEARNER, not_components)
        results = self.foreach_learner(
            lambda learner: (
                learner.rank,
                learner.get_state(
                    learner_components, not_components=learner_not_components, **kwargs
                ),
            )
        )
        states = dict(self._get_results(results))
        return {COMPONENT_LEARNER: states[0]}
