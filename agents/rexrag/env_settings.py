"""``config.environment(env, env_config)`` as RLlib users write it, read into a run's
episode settings.

The env's episode settings in ``env_config`` are the run's: they win over the
``.training`` fields of the same name. ``rexrag_env/SearchQA-v0`` takes ``dataset``,
``retriever``, ``max_turns``, ``topk``; ``rexrag_env/SynthWiki-v0`` takes ``split``
(its questions and corpus), ``max_turns``, ``topk``. A user's own env (a registered
``SearchQAEnv`` subclass, ``"module:ns/Name-v0"``, or the class) takes those four too,
and its other keys go to its constructor.
"""

from __future__ import annotations

import inspect
from typing import Any

from rexrag_env import SEARCH_QA_ENV_ID, SYNTHWIKI_ENV_ID
from rexrag_env.env import SearchQAEnv
from rexrag_env.vector import registered_search_qa_env

#: The ``env_config`` keys that set a run's episodes (the training fields of that name).
ENV_CONFIG_FIELDS = ("dataset", "retriever", "max_turns", "topk")
#: ``config.env`` values that mean the package's own envs (``None``: the default).
PACKAGE_ENVS = (None, SEARCH_QA_ENV_ID, SYNTHWIKI_ENV_ID)


def episode_settings(env: Any, env_config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The run fields that ``env`` and ``env_config`` set, and the problems found (a
    typo in ``env_config`` is refused on the driver, not by a runner later)."""
    if env is None and not env_config:
        return {}, []
    settings = dict(env_config)
    if env == SYNTHWIKI_ENV_ID:
        if settings.get("seed", 0) != 0:
            return {}, ["env_config: RexRag trains on the seed-0 SynthWiki world only"]
        settings.pop("seed", None)
        split = settings.pop("split", "train")
        settings.update(dataset=f"synthwiki/{split}", retriever="synthwiki")
    elif env not in PACKAGE_ENVS:
        try:
            env_class, arguments = user_env(env, env_config)
        except (ValueError, ImportError) as error:
            return {}, [str(error)]
        unaccepted = _unaccepted_arguments(env_class, constructor_arguments(arguments))
        if unaccepted:
            return {}, [f"env_config keys {unaccepted}: {env_class.__name__}() does not take them"]
        settings = {k: v for k, v in arguments.items() if k in ENV_CONFIG_FIELDS}
    unknown = sorted(set(settings) - set(ENV_CONFIG_FIELDS))
    if unknown:
        return {}, [f"env_config keys {unknown} are not among {ENV_CONFIG_FIELDS}"]
    return settings, []


def user_env(env: Any, env_config: dict[str, Any]) -> tuple[type[SearchQAEnv], dict[str, Any]]:
    """A user's env class and all its keywords: the defaults it was registered with,
    then ``env_config`` (``gym.make``'s precedence). Resolved in the calling process,
    so an EnvRunner imports the module that registers it."""
    env_class, registered = registered_search_qa_env(env)
    return env_class, {**registered, **env_config}


def constructor_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A user's env's own constructor arguments: its keywords less the episode settings
    (which are the run's fields)."""
    return {k: v for k, v in arguments.items() if k not in ENV_CONFIG_FIELDS}


def _unaccepted_arguments(env_class: type, arguments: dict[str, Any]) -> list[str]:
    """The ``arguments`` no constructor in ``env_class``'s chain names, following
    ``**kwargs`` up to the parent (as a subclass that passes them on does)."""
    remaining = set(arguments)
    for cls in env_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        remaining -= {
            p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in parameters) or cls is SearchQAEnv:
            break
    return sorted(remaining)
