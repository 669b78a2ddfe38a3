"""Engine options that run code from elsewhere: refused in config files unless allowed.

``vllm_options`` goes last into the ``vllm.LLM`` arguments, so a YAML preset, a run's
``config.yaml`` or a search space could switch on code execution with it: a model
repository's own Python (``trust_remote_code``), classes or plugins named by import
path or file, or config overrides applied before any check. A config file is data;
these options need the user's explicit ``--allow-remote-code``.
"""

from __future__ import annotations

from typing import Any

#: The ``rexrag train``/``tune``/``plan`` flag that lets a config file set them.
ALLOW_FLAG = "--allow-remote-code"

#: ``vllm.LLM`` / engine arguments that load or run code not shipped with vLLM.
REMOTE_CODE_OPTIONS = frozenset(
    {
        "trust_remote_code",  # the model repository's modelling code
        "hf_overrides",  # rewrites the model's config (architectures, auto_map) before loading
        "worker_cls",  # classes imported by name
        "worker_extension_cls",
        "scheduler_cls",
        "distributed_executor_backend",
        "logits_processors",
        "reasoning_parser_plugin",  # Python files executed as plugins
        "tool_parser_plugin",
        "kv_transfer_config",  # a connector module imported by path
        "model_loader_extra_config",  # loader plugins (tensorizer deserialises)
    }
)


def remote_code_options(options: Any) -> list[str]:
    """The :data:`REMOTE_CODE_OPTIONS` keys anywhere in ``options`` (a mapping, or the
    lists and mappings of a search space's ``grid``/``choice`` around them)."""
    found: set[str] = set()
    if isinstance(options, dict):
        found |= {key for key in options if key in REMOTE_CODE_OPTIONS}
        values = list(options.values())
    elif isinstance(options, (list, tuple)):
        values = list(options)
    else:
        return []
    for value in values:
        found |= set(remote_code_options(value))
    return sorted(found)


def check_engine_options(options: Any, source: object, allow: bool) -> None:
    """Raise ``ValueError`` naming the keys when ``options`` (``vllm_options`` read from
    ``source``) would run outside code and ``allow`` is false."""
    found = remote_code_options(options)
    if found and not allow:
        raise ValueError(
            f"config {source}: vllm_options {found} load or run code from outside rexrag "
            f"and vLLM; a config file cannot switch them on: pass {ALLOW_FLAG} if you mean it"
        )
