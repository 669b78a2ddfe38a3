"""Python as the lent GPU machine has it: torch, transformers, their requirements and the
wheels carried to it (docs/development.md, "The device check"), nothing else.

That machine has no Ray, vLLM or Gymnasium and can fetch nothing. A test runs code in
a fresh interpreter in which every other installed top-level module is ``None`` in
``sys.modules`` (``import`` fails, ``importlib.util.find_spec`` says "not installed",
as optional imports probe), so code that passes here imports on the device.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
#: What the device has installed: these and their requirements (extras left out).
DEVICE_DISTRIBUTIONS = ("torch", "transformers")
#: Pure-Python wheels carried to the device (Gymnasium: ``rexrag_env`` imports it, and
#: every ``agents`` module imports ``rexrag_env`` through ``agents/__init__.py``).
CARRIED_DISTRIBUTIONS = ("gymnasium", "cloudpickle", "farama-notifications")
#: Never there, whatever the requirements say.
ABSENT = ("ray", "vllm")
#: The project itself travels as the working tree.
PROJECT_DISTRIBUTION = "rexrag"

_BOOTSTRAP = """
import json, sys
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None
code = sys.argv[2]
sys.argv = ["-c", *sys.argv[3:]]
exec(compile(code, "<device_env>", "exec"))
"""


def requirement_closure(names: tuple[str, ...]) -> set[str]:
    """``names`` and every installed distribution they require, recursively (no extras)."""
    closure: set[str] = set()
    pending = [canonicalize_name(name) for name in names]
    while pending:
        name = pending.pop()
        if name in closure:
            continue
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # required but not installed here: nothing to import from it
        closure.add(name)
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return closure


def device_distributions() -> set[str]:
    """The distributions the device's Python can import from."""
    allowed = requirement_closure(DEVICE_DISTRIBUTIONS + CARRIED_DISTRIBUTIONS)
    return (allowed | {PROJECT_DISTRIBUTION}) - set(ABSENT)


def blocked_modules() -> list[str]:
    """Top-level modules of installed distributions the device does not have."""
    allowed = device_distributions()
    blocked = {
        module
        for module, distributions in metadata.packages_distributions().items()
        if module not in sys.stdlib_module_names
        and not any(canonicalize_name(d) in allowed for d in distributions)
    }
    return sorted(blocked | set(ABSENT))


def run_on_device_python(
    code: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (with ``sys.argv[1:] == args``) in a fresh interpreter that can import
    only what the device has, from the repository root as the device runs it."""
    command = [sys.executable, "-c", _BOOTSTRAP, json.dumps(blocked_modules()), code, *args]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
