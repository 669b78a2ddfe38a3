"""Test-session setup that every test folder needs before its first test.

rexrag signs checkpoints and indexes with a per-user key (``rexrag_env.signing``);
a test session gets its own key, so tests never read, create or depend on the
developer's ``~/.config/rexrag/secret.key``. Set in the environment, it reaches the
Ray workers and the ``rexrag`` subprocesses tests start.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rexrag_env.signing import SECRET_FILE_ENV_VAR


@pytest.fixture(scope="session", autouse=True)
def private_secret_key(tmp_path_factory) -> Path:
    """This session's rexrag secret key file (created on first use, as for a user)."""
    path = tmp_path_factory.mktemp("rexrag-config") / "secret.key"
    os.environ[SECRET_FILE_ENV_VAR] = str(path)
    return path
