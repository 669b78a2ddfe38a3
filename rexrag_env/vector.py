"""SearchQAVectorEnv: many SearchQA episodes stepped together, with one retriever call per step."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rexrag_env.datasets import QAExample
from rexrag_env.embedded import DEFAULT_DATASET
from rexrag_env.env import SearchQAEnv
from rexrag_env.protocol import (
    DEFAULT_MAX_TURNS,
    DEFAULT_RETRIEVER,
    DEFAULT_TOPK,
    ParsedAction,
    parse_action,
)
from rexrag_env.retrieval.base import Passage, RetrievalError, Retriever

#: The autoreset modes this vector env implements (Gymnasium's default first).
AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)


class SearchQAVectorEnv(VectorEnv):
    """``num_envs`` :class:`~rexrag_env.env.SearchQAEnv` episodes that step as one.

    ## Description
    Each sub-environment is a ``SearchQAEnv`` (same task, protocol, rewards and info;
    its docstring is the contract of one episode). The vector env owns what batching
    changes: one ``step`` parses every action once and answers all the searches of
    the step in ONE ``retriever.search(queries, topk)`` call, the call an RL rollout
    worker needs to keep retrieval off its critical path. Sub-environments share the
    dataset and the retriever.

    ## Action space
    ``Tuple`` of ``num_envs`` ``UnicodeText`` (``batch_space`` of the single action
    space): one turn of agent text per env. Under ``AutoresetMode.DISABLED`` an action
    may be ``None``: that env sits the step out (see "Envs without an action").

    ## Observation space
    ``Tuple`` of ``num_envs`` ``UnicodeText``; observations come back as a tuple of
    strings, each the text to append to that env's context, as ``SearchQAEnv``
    returns it. An env that a call leaves alone (not reset, or skipped) gets ``""``.

    ## Rewards
    Per env, as ``SearchQAEnv``: exact match of the answer on the answering step,
    else 0; a float64 array of shape ``(num_envs,)``.

    ## Starting state
    ``reset(seed=None, options=None)`` resets every env, or the envs of
    ``options["reset_mask"]`` (bool array of shape ``(num_envs,)``). ``seed`` is an
    int (env ``i`` gets ``seed + i``, as ``SyncVectorEnv``) or one seed per env.
    Option names (all optional):
    - ``"reset_mask"``: which envs to reset; the others keep their state.
    - ``"env_options"``: a sequence of ``num_envs`` entries, a dict or ``None`` each:
      env ``i`` resets with ``env_options[i]``, the options ``SearchQAEnv.reset``
      takes (``{"example": …}`` or ``{"index": i}``, with ``"turn"`` and
      ``"num_searches"`` to resume a question at a turn, as a probe does). An entry
      for an env that ``reset_mask`` leaves alone is an error.
    - any other key is passed to every env reset, under its ``env_options`` entry.

    ## Episode end
    Per env, as ``SearchQAEnv``: terminated when it answers, truncated after the
    final turn (where a search is not executed).

    ## Autoreset
    ``autoreset_mode`` (a constructor argument, recorded in ``metadata["autoreset_mode"]``):
    - ``AutoresetMode.NEXT_STEP`` (default): Gymnasium's convention, the same as
      ``SyncVectorEnv``: the step after an env's episode ends resets that env (its
      action is ignored; it returns the new prompt, reward 0 and the reset info).
    - ``AutoresetMode.DISABLED``: envs are never reset behind the caller's back; the
      caller resets the envs it chooses with ``reset(options={"reset_mask": mask, …})``.
      Giving an action to an env whose episode is over is an error.
    ``AutoresetMode.SAME_STEP`` is not supported.

    ## Envs without an action
    An LLM agent has actions only for its unfinished episodes, and an env that is
    stepped must be running. Under ``DISABLED``, an action of ``None`` leaves that env
    exactly as it is: observation ``""``, reward 0, ``terminated``/``truncated`` as
    they were (they keep saying whether its episode is over), and its info is only
    ``{"skipped": True}``. ``None`` rather than a mask argument keeps ``step(actions)``
    Gymnasium's signature; it is refused under ``NEXT_STEP``, where "no action" has no
    meaning (a finished env resets whatever its action).

    ## Info
    Gymnasium's vector layout: a dict of arrays of length ``num_envs``, each key
    ``k`` with a bool mask ``_k`` of the envs that have it (nested dicts, e.g.
    ``metadata``, recursively). Per env it holds exactly what ``SearchQAEnv`` gives
    (reset: ``question``, ``golden_answers``, ``messages``, …; step: ``action_type``,
    ``action_end``, ``query``, ``doc_ids``, ``em``, ``num_searches``, …), plus
    ``skipped`` for the envs that sat a step out. Wrap the env in
    ``gymnasium.wrappers.vector.DictInfoToList`` for one dict per env.

    ## Arguments
    - ``num_envs``: the number of episodes played together.
    - ``dataset``, ``retriever``, ``max_turns``, ``topk``, ``render_mode``: as
      ``SearchQAEnv`` (built once, shared by all envs).
    - ``autoreset_mode``: ``AutoresetMode.NEXT_STEP`` (default) or ``DISABLED``.
    - ``env_class``: the sub-environment class, ``SearchQAEnv`` or a subclass of it (a
      user's own env with the same protocol: a different reward, prompt or info, say;
      :func:`registered_search_qa_env` finds it from a registered id). It is built as
      ``env_class(dataset=…, retriever=…, max_turns=…, topk=…, render_mode=…,
      **env_kwargs)``, every env after the first over the first's examples and retriever.
    - ``env_kwargs``: the subclass's own constructor arguments.

    ## Examples
    >>> import gymnasium as gym
    >>> import rexrag_env
    >>> from gymnasium.vector import AutoresetMode
    >>> envs = gym.make_vec(
    ...     "rexrag_env/SearchQA-v0", num_envs=2, vectorization_mode="vector_entry_point",
    ...     dataset="bamboogle", autoreset_mode=AutoresetMode.DISABLED,
    ... )
    >>> envs
    SearchQAVectorEnv(rexrag_env/SearchQA-v0, num_envs=2)
    >>> prompts, infos = envs.reset(options={"env_options": [{"index": 0}, {"index": 1}]})
    >>> observations, rewards, terminations, truncations, infos = envs.step(
    ...     ("<search> Who invented the telephone </search>", "<answer> Paris </answer>")
    ... )
    >>> observations[0][:18], observations[1], terminations.tolist()
    ('\\n\\n<information>Doc', '', [False, True])
    >>> _ = envs.step(("<answer> Alexander Graham Bell </answer>", None))
    >>> envs.close()

    ## Version history
    - v0: initial version.
    """

    metadata: ClassVar[dict[str, Any]] = {
        **SearchQAEnv.metadata,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        dataset: str | Path | Sequence[QAExample | Mapping[str, Any]] = DEFAULT_DATASET,
        retriever: Retriever | str | Path = DEFAULT_RETRIEVER,
        max_turns: int = DEFAULT_MAX_TURNS,
        topk: int = DEFAULT_TOPK,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        env_class: type[SearchQAEnv] = SearchQAEnv,
        env_kwargs: Mapping[str, Any] | None = None,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if not (isinstance(env_class, type) and issubclass(env_class, SearchQAEnv)):
            raise TypeError(f"env_class must be SearchQAEnv or a subclass, got {env_class!r}")
        mode = _autoreset_mode(autoreset_mode)
        settings = {"max_turns": max_turns, "topk": topk, "render_mode": render_mode}
        settings.update(env_kwargs or {})
        first = env_class(dataset=dataset, retriever=retriever, **settings)
        self.envs = [first] + [
            env_class(dataset=first.examples, retriever=first.retriever, **settings)
            for _ in range(num_envs - 1)
        ]
        self.num_envs = num_envs
        self.retriever = first.retriever
        self.topk = topk
        self.max_turns = max_turns
        self.render_mode = render_mode
        self.autoreset_mode = mode
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._terminations = np.zeros(num_envs, dtype=np.bool_)
        self._truncations = np.zeros(num_envs, dtype=np.bool_)
        self._autoreset_envs = np.zeros(num_envs, dtype=np.bool_)  # NEXT_STEP only

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask", None))
        env_options = self._env_options(options.pop("env_options", None), mask)
        seeds = self._seeds(seed)
        observations = [""] * self.num_envs
        infos: dict[str, Any] = {}
        for i in np.flatnonzero(mask):
            observations[i], info = self.envs[i].reset(
                seed=seeds[i], options={**options, **(env_options[i] or {})}
            )
            infos = self._add_info(infos, info, i)
        self._terminations[mask] = self._truncations[mask] = self._autoreset_envs[mask] = False
        return tuple(observations), infos

    def step(
        self, actions: Sequence[str | None]
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = list(actions)
        playing = self._check_actions(actions)
        parsed = {i: parse_action(actions[i]) for i in playing}
        passages = self._search([i for i in playing if self.envs[i].runs_search(parsed[i])], parsed)
        # Every check and the retriever call came first: if one fails, no env has moved.
        observations = [""] * self.num_envs
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        infos: dict[str, Any] = {}
        for i, action in enumerate(actions):
            if action is None:
                info = {"skipped": True}
            elif i in parsed:
                (
                    observations[i],
                    rewards[i],
                    self._terminations[i],
                    self._truncations[i],
                    info,
                ) = self.envs[i].advance(action, parsed[i], passages.get(i))
            else:  # NEXT_STEP: the episode ended last step
                observations[i], info = self.envs[i].reset()
                self._terminations[i] = self._truncations[i] = False
            infos = self._add_info(infos, info, i)
        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            self._autoreset_envs = self._terminations | self._truncations
        return (
            tuple(observations),
            rewards,
            self._terminations.copy(),
            self._truncations.copy(),
            infos,
        )

    def render(self) -> tuple[str | None, ...]:
        return tuple(env.render() for env in self.envs)

    def _check_actions(self, actions: list[str | None]) -> list[int]:
        """The envs that play their action this step; raise before anything moves."""
        if len(actions) != self.num_envs:
            raise ValueError(
                f"step() takes one action per env ({self.num_envs}), got {len(actions)}"
            )
        playing = []
        for i, action in enumerate(actions):
            if action is None:
                if self.autoreset_mode is AutoresetMode.NEXT_STEP:
                    raise ValueError(
                        f"env {i}: a None action (sit the step out) needs "
                        "autoreset_mode=AutoresetMode.DISABLED; under NEXT_STEP give every "
                        "env an action"
                    )
                continue
            if self._autoreset_envs[i]:
                continue
            try:
                self.envs[i].check_action(action)
            except RuntimeError as error:
                alternative = (
                    " with reset(options={'reset_mask': mask}), or give it the action None"
                    if self.autoreset_mode is AutoresetMode.DISABLED
                    else ""
                )
                raise RuntimeError(f"env {i}: {error}{alternative}") from error
            except TypeError as error:
                raise TypeError(f"env {i}: {error}") from error
            playing.append(i)
        return playing

    def _search(
        self, searching: list[int], parsed: dict[int, ParsedAction]
    ) -> dict[int, list[Passage]]:
        """The passages of every search that runs this step: one retriever call."""
        if not searching:
            return {}
        results = self.retriever.search([parsed[i].content for i in searching], self.topk)
        if len(results) != len(searching):
            raise RetrievalError(
                f"the retriever answered {len(results)} of {len(searching)} queries: "
                "search(queries, k) must return one passage list per query"
            )
        return dict(zip(searching, results, strict=True))

    def _reset_mask(self, reset_mask: Any) -> np.ndarray:
        if reset_mask is None:
            return np.ones(self.num_envs, dtype=np.bool_)
        mask = np.asarray(reset_mask)
        if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                f"got dtype {mask.dtype} and shape {mask.shape}"
            )
        return mask

    def _env_options(
        self, env_options: Sequence[Mapping[str, Any] | None] | None, mask: np.ndarray
    ) -> Sequence[Mapping[str, Any] | None]:
        if env_options is None:
            return [None] * self.num_envs
        if isinstance(env_options, Mapping) or len(env_options) != self.num_envs:
            raise ValueError(
                f"options['env_options'] must be a sequence of {self.num_envs} entries "
                "(a dict of SearchQAEnv reset options, or None), one per env"
            )
        for i, option in enumerate(env_options):
            if option is not None and not mask[i]:
                raise ValueError(
                    f"options['env_options'][{i}] is given but reset_mask does not reset env "
                    f"{i}: set reset_mask[{i}] or pass None for it"
                )
        return env_options

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int):
            return [seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"reset() takes one seed per env ({self.num_envs}), got {len(seed)}")
        return list(seed)


def registered_search_qa_env(env: str | type) -> tuple[type[SearchQAEnv], dict[str, Any]]:
    """The :class:`SearchQAEnv` subclass registered as ``env``, and the keyword defaults
    it was registered with (``env`` may also be the class itself: no defaults).

    ``env`` is a Gymnasium id, ``"module:ns/Name-v0"`` to import the module that
    registers it first (as ``gymnasium.make`` reads it: the form a Ray worker process,
    which never ran the driver's registration, needs). The entry point must be
    ``SearchQAEnv`` or a subclass: batched sampling steps the sub-envs through their
    ``check_action`` / ``runs_search`` / ``advance`` hooks and resumes probes with
    ``reset(options={"example", "turn", "num_searches"})``, which a subclass inherits.
    """
    defaults: dict[str, Any] = {}
    if isinstance(env, str):
        module, _, env_id = env.rpartition(":")
        if module:
            importlib.import_module(module)
        try:
            spec = gymnasium.spec(env_id)
        except gymnasium.error.Error as error:
            raise ValueError(
                f"{error}; register it in an importable module and name it as "
                f"'your_module:{env_id}' so that every worker process imports it"
            ) from error
        entry = spec.entry_point
        env_class = load_env_creator(entry) if isinstance(entry, str) else entry
        defaults = dict(spec.kwargs)
    else:
        env_class = env
    if not (isinstance(env_class, type) and issubclass(env_class, SearchQAEnv)):
        raise ValueError(
            f"env {env!r}: its entry point {env_class!r} is not a subclass of "
            "rexrag_env.SearchQAEnv; subclass it (override advance() for another reward) so "
            "that it steps in batches and resumes probes"
        )
    return env_class, defaults


def _autoreset_mode(value: AutoresetMode | str) -> AutoresetMode:
    try:
        mode = AutoresetMode(value)
    except ValueError:
        mode = None
    if mode not in AUTORESET_MODES:
        names = ", ".join(f"AutoresetMode.{m.name}" for m in AUTORESET_MODES)
        raise ValueError(f"SearchQAVectorEnv supports autoreset_mode {names}; got {value!r}")
    return mode
