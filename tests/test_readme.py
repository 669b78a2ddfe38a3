"""The README's set-up commands are the ones that are run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    return {
        line[2:4]: lines[i + 1] for i, line in enumerate(lines) if line.startswith(("# 1.", "# 2."))
    }


def test_ci_runs_exactly_the_readme_test_command():
    commands = readme_commands()
    assert set(commands) == {"1.", "2."}
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands["2."] in ci_lines


def test_main_command_trains_on_the_embedded_default():
    assert readme_commands()["1."].endswith("&& rexrag train")
