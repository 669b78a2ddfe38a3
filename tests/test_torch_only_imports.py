"""The torch-only parts of the GPU path import without Ray and vLLM (the lent GPU
machine has neither): the pure math, the scorer, the FSDP2 wrapping, HFGenerator and
the memory plan's arithmetic. ``tests/benchmarks/test_gpu_check.py`` runs them there."""

from __future__ import annotations

from tests.device_env import run_on_device_python

TORCH_ONLY_MODULES = (
    "agents.rexrag.losses",
    "agents.rexrag.correction",
    "agents.rexrag.learner_batch",
    "agents.rexrag.token_batch",
    "agents.rexrag.logprobs",
    "agents.rexrag.sharding",
    "agents.llm.hf",
    "agents.analysis.memory_plan",
)

IMPORT_THEM = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported", len(sys.argv) - 1)
import agents.rexrag
try:
    agents.rexrag.RexRagConfig
except ImportError:  # the algorithm itself needs Ray (and pyarrow): only when asked for
    print("RexRagConfig needs what the device lacks")
"""


def test_the_torch_only_modules_import_where_only_torch_and_transformers_are():
    result = run_on_device_python(IMPORT_THEM, *TORCH_ONLY_MODULES, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"imported {len(TORCH_ONLY_MODULES)}" in result.stdout
    assert "RexRagConfig needs what the device lacks" in result.stdout


def test_the_algorithm_is_still_imported_from_the_package():
    from agents.rexrag import RexRag, RexRagConfig
    from agents.rexrag.rexrag import RexRag as defined

    assert RexRag is defined and RexRagConfig.__module__ == "agents.rexrag.rexrag"
