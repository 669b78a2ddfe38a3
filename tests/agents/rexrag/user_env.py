"""A user's own environment, as it would live in their package: a ``SearchQAEnv``
subclass with another reward, registered under its own id (imported by the tests as
``tests.agents.rexrag.user_env:user_pkg/AnswerBonusQA-v0``)."""

from __future__ import annotations

import gymnasium

from rexrag_env import SearchQAEnv

USER_ENV_ID = "user_pkg/AnswerBonusQA-v0"
#: How a config names it so that every process (Ray workers too) registers it first.
USER_ENV = f"{__name__}:{USER_ENV_ID}"
#: The same class registered with keyword defaults (an episode setting and its own).
USER_DEFAULTS_ENV = f"{__name__}:user_pkg/AnswerBonusQA-v1"


class AnswerBonusEnv(SearchQAEnv):
    """Exact match plus ``answer_bonus`` for giving any answer (a format reward)."""

    def __init__(self, *args, answer_bonus: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_bonus = answer_bonus

    def advance(self, action, parsed, passages):
        observation, reward, terminated, truncated, info = super().advance(action, parsed, passages)
        if info["action_type"] == "answer":
            reward += self.answer_bonus
        return observation, reward, terminated, truncated, info


if USER_ENV_ID not in gymnasium.registry:
    gymnasium.register(USER_ENV_ID, entry_point=f"{__name__}:AnswerBonusEnv")
if "user_pkg/AnswerBonusQA-v1" not in gymnasium.registry:
    gymnasium.register(
        "user_pkg/AnswerBonusQA-v1",
        entry_point=AnswerBonusEnv,
        kwargs={"max_turns": 3, "answer_bonus": 0.1},
    )
