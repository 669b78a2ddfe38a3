"""Moving new policy weights into a running vLLM engine (the V1 engine's worker processes).

vLLM's V1 engine runs the model in worker processes and talks to them over its own
IPC, which carries only plain data: a function or a list of tensors sent through
``collective_rpc`` is refused or arrives mangled. vLLM's documented way for RLHF is
to name a worker method and send data that survives that channel. Two transports:

``file`` (any device, runs here)
    The sender writes the weights as one safetensors file in shared memory
    (``/dev/shm`` where there is one) and calls :meth:`WeightReceiver.load_weights_from_file`
    by name on every worker; each worker streams the tensors, one at a time, into the
    model runner's in-place reload (``reload_weights``), which re-runs the weight
    post-processing the CPU backend needs (its linear layers are repacked for oneDNN,
    so writing into the parameters directly fails there). Nothing is pickled.

``ipc`` (CUDA, the engine on the sender's GPU)
    vLLM's own CUDA IPC weight-transfer engine (``weight_transfer_config={"backend":
    "ipc"}``): the sender shares its GPU tensors by handle and the workers copy from
    them, with no host round trip. :func:`send_by_cuda_ipc` drives its trainer side.

Weights coming from a learner on other GPUs (non-colocated) go through Ray to the
EnvRunner first and then through one of the above; a direct NCCL broadcast from the
learner ranks to the engines (vLLM's ``nccl`` backend, which also gathers FSDP shards
one parameter at a time) is the path for sharded learners.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

#: The weight transports :class:`~agents.llm.vllm_backend.VLLMGenerator` offers.
WEIGHT_TRANSPORTS = ("file", "ipc")
#: ``worker_extension_cls`` of every engine the generator starts (an import path: the
#: engine's worker processes import it themselves).
RECEIVER_CLASS = "agents.llm.vllm_weights.WeightReceiver"


#: safetensors metadata key: the state dict's names in order, each with the stored
#: tensor it reads (tied weights are stored once and read under every name).
_NAMES_KEY = "rexrag_names"


class WeightReceiver:
    """Mixed into vLLM's worker class (``worker_extension_cls``); its methods run in the
    engine's worker processes, called by name through ``LLM.collective_rpc``."""

    def load_weights_from_file(self, path: str) -> None:
        """Load the state dict written by :func:`send_by_file` into the model, streamed
        (one tensor in memory at a time, beside the model)."""
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as handle:
            names = json.loads(handle.metadata()[_NAMES_KEY])

            def tensors() -> Iterator[tuple[str, torch.Tensor]]:
                for name, stored in names:
                    yield name, handle.get_tensor(stored)

            # The worker's own method: it sets the engine config that the weight
            # processing reads, and runs the model runner's in-place reload.
            self.reload_weights(weights_iterator=tensors(), is_checkpoint_format=True)


def stored_once(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """``state_dict``'s distinct tensors (on the CPU, contiguous) and, in order, every
    name with the distinct tensor it reads.

    Tied weights (input and output embeddings) share memory, which safetensors refuses
    to store twice; the engine still needs both names: on the CPU it repacks the
    output projection into a copy of its own, so loading only the embedding would leave
    the old output weights in place.
    """
    stored: dict[tuple[int, int], str] = {}
    tensors, names = {}, []
    for name, tensor in state_dict.items():
        tensor = torch.as_tensor(tensor).detach()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in stored:
            stored[key] = name
            tensors[name] = tensor.to("cpu").contiguous()
        names.append((name, stored[key]))
    return tensors, names


def shared_memory_dir() -> str | None:
    """Where transfer files go: ``/dev/shm`` (RAM, no disk traffic) when writable, else
    the system's temporary directory."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def send_by_file(llm: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write ``state_dict`` to a shared-memory safetensors file and have every worker
    of ``llm`` (a ``vllm.LLM`` started with :data:`RECEIVER_CLASS`) load it; the file
    is removed afterwards, whatever happens."""
    from safetensors.torch import save_file

    tensors, names = stored_once(state_dict)
    if not tensors:
        raise ValueError("no weights to send: the state dict is empty")
    with tempfile.TemporaryDirectory(prefix="rexrag-weights-", dir=shared_memory_dir()) as tmp:
        path = os.path.join(tmp, "policy.safetensors")
        save_file(tensors, path, metadata={_NAMES_KEY: json.dumps(names)})
        llm.collective_rpc("load_weights_from_file", args=(path,))


class _EngineClient:
    """vLLM's ``VLLMWeightSyncClient`` protocol over an in-process ``vllm.LLM``: each call
    is the worker method of that name, run on every worker."""

    def __init__(self, llm: Any):
        self._llm = llm

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._llm.collective_rpc("init_weight_transfer_engine", args=(init_info,))

    def start_weight_update(self) -> None:
        self._llm.collective_rpc("start_weight_update")

    def update_weights(self, update_info: Any) -> None:
        self._llm.collective_rpc("update_weights", args=(update_info,))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._llm.collective_rpc("finish_weight_update")


def send_by_cuda_ipc(llm: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Share ``state_dict`` with the engine's workers by CUDA IPC handle (the engine must
    have been started with ``weight_transfer_config={"backend": "ipc"}``).

    Tensors not yet on this process's current GPU (the engine's GPU when colocated;
    weights that came through Ray are in host memory) are moved there first; all stay
    alive until the workers have copied them. Checked by the
    ``gpu``-marked ``test_vllm_cuda_ipc_weight_sync``; it has not run on this project's
    CPU machines.
    """
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource
    from vllm.distributed.weight_transfer.ipc_engine import (
        IPCTrainerInitInfo,
        IPCTrainerWeightTransferEngine,
    )

    device = torch.device("cuda", torch.cuda.current_device())
    # Tensors already on this GPU are shared as they are (tied ones by the same handle).
    tensors = {name: torch.as_tensor(t).detach().to(device) for name, t in state_dict.items()}

    class StateDictSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            return iter(tensors.items())

    engine = IPCTrainerWeightTransferEngine.trainer_init(
        IPCTrainerInitInfo(rank=0), client=_EngineClient(llm), source=StateDictSource()
    )
    engine.send_weights()
