"""Device plumbing: timing with synchronisation, freeing memory, arrays to tensors, and
the one-rank process group FSDP2 shards over."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs asynchronously; a CPU never waits)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    """``run()`` and the seconds it took on ``device``, its kernels included."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return result, time.perf_counter() - start


def as_tensors(columns: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Each array of ``columns`` as a tensor on ``device``."""
    return {name: torch.as_tensor(value, device=device) for name, value in columns.items()}


def release(device: torch.device) -> None:
    """Free what nothing references any more, and CUDA's cached blocks with it: the next
    model's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def free_port() -> int:
    """A loopback port nobody listens on, for the process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """A one-rank process group in this process (NCCL on CUDA, gloo on CPU): FSDP2's
    mesh, as a learner's would be; destroyed on the way out."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", rank=0, world_size=1, device_id=device)
    else:
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()
