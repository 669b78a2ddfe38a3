"""FSDP2 sharding of the policy over the learners, and the full-state views of it.

RLlib's LearnerGroup replicates the module on every learner (DDP): parameters,
gradients and AdamW state, 16 bytes per parameter in float32 on each GPU, which a
3B model barely fits and a 7B model does not. Sharded (``learner_sharding="fsdp"``)
every learner holds ``1/N`` of them; each decoder layer is gathered just before it
runs and freed after (``fully_shard`` per layer, then the root for the embeddings,
final norm and LM head).

The learner computes log-probs with :func:`response_token_logprobs`, which calls the
decoder and the LM head directly (to run the head on target positions only).
FSDP2 gathers a group's parameters in its module's forward hooks, so the root group
must be a module whose ``forward`` is that whole computation: :class:`TokenScorer`.

Collectives: everything here that gathers runs on every learner in the same order,
so callers must call it on all learners (RexRag's LearnerGroup does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from agents.llm.models import tied_parameter_names
from agents.rexrag.logprobs import TokenScorer

#: How several learners hold the policy: RLlib's DDP replicas, or FSDP2 shards.
LEARNER_SHARDINGS = ("ddp", "fsdp")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (``get_decoder().layers``)."""
    layers = getattr(model.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"cannot shard {type(model).__name__}: its decoder has no `layers` list "
            "(learner_sharding='fsdp' supports decoder-only Hugging Face models)"
        )
    return list(layers)


def shard_model(
    model: nn.Module, *, compute_dtype: torch.dtype, cpu_offload: bool, device_type: str
) -> TokenScorer:
    """Shard ``model`` in place over all ranks of the default process group; returns
    the :class:`TokenScorer` to call it through.

    The shards keep the model's dtype (the policy's float32 master weights: a 1e-6
    learning-rate step is below bfloat16's resolution; the frozen reference's may be
    bfloat16); each layer is gathered in ``compute_dtype`` and gradients are reduced in
    float32. ``cpu_offload`` keeps the shards, their gradients and the optimizer step
    in CPU memory.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    mesh = init_device_mesh(device_type, (torch.distributed.get_world_size(),))
    options: dict[str, Any] = {
        "mesh": mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32),
        "offload_policy": (
            CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
            if cpu_offload
            else OffloadPolicy()
        ),
    }
    for layer in decoder_layers(model):
        fully_shard(layer, **options)
    scorer = TokenScorer(model)
    fully_shard(scorer, **options)
    return scorer


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` holds FSDP2 (DTensor) parameters."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def gathered_state_dict(
    module: nn.Module, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with every shard gathered, on CPU, on rank 0 (an empty
    dict on the other ranks); cast to ``dtype`` when given.

    One parameter at a time: the accelerator holds one full parameter beyond its
    shards, and rank 0's CPU builds the one full copy that is sent or saved. Every
    rank must call it (each ``full_tensor`` is a collective).
    """
    from torch.distributed.tensor import DTensor

    rank0 = torch.distributed.get_rank() == 0
    accelerator = _collective_device()
    tied = tied_parameter_names(module)  # tied weights: gathered once, saved as one tensor
    gathered: dict[str, torch.Tensor] = {}
    for name, value in module.state_dict().items():
        if name in tied:
            if rank0:
                gathered[name] = gathered[tied[name]]
            continue
        if isinstance(value, DTensor):
            if value.device.type != accelerator.type:  # CPU-offloaded shard, NCCL group
                value = value.to(accelerator)
            value = value.full_tensor()
        if rank0:
            gathered[name] = value.detach().to("cpu", dtype=dtype or value.dtype)
    return gathered


def load_full_state_dict(module: nn.Module, state: Mapping[str, Any]) -> None:
    """Load full tensors (every rank has them: RLlib sends a restored state to every
    learner) into the sharded ``module``; each rank keeps its own shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = {name: torch.as_tensor(value) for name, value in state.items()}
    set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True))


def gathered_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state with every shard gathered, keyed by parameter name, on
    rank 0's CPU (empty elsewhere). Every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def load_full_optimizer_state(
    module: nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Load a state from :func:`gathered_optimizer_state` into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        module, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
    )


def max_over_ranks(value: int) -> int:
    """The largest ``value`` any rank passed (1 rank: ``value``). Sharded ranks must run
    the same number of forward passes, each one gathers every layer."""
    if not torch.distributed.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return int(tensor.item())


def sum_over_ranks(value: float) -> float:
    """The sum of ``value`` over ranks (1 rank: ``value``)."""
    if not torch.distributed.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    torch.distributed.all_reduce(tensor)
    return float(tensor.item())


def _collective_device() -> torch.device:
    """Where the default group's collectives take tensors: CUDA for NCCL, else CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def clip_global_norm(gradients: Mapping[Any, torch.Tensor], max_norm: float) -> float:
    """Scale ``gradients`` in place so their global L2 norm is at most ``max_norm``;
    returns the norm before clipping. Sharded (DTensor) gradients are reduced over
    ranks first, so every rank clips by the same global norm."""
    from torch.distributed.tensor import DTensor

    grads = list(gradients.values())
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    norm = float(total)
    scale = max_norm / (norm + 1e-6)  # RLlib's global-norm clipping, on every rank alike
    if scale < 1.0:
        for grad in grads:
            grad.mul_(scale)
    return norm
