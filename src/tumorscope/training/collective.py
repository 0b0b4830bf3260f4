"""Collective operations of multi-process training (gloo on CPU, NCCL on GPU).

Every rank draws the same *global* batch indices and loads its contiguous shard. The
per-slice network runs on the shard; its outputs are all-gathered with autograd
(``torch.distributed.nn.functional.all_gather``) so that every loss — batch Dice, masked
means over present targets, and the Cox partial likelihood over the global risk set — is
computed on the global batch exactly as one process would. Each rank then holds
``world × ∂L/∂θ`` restricted to its shard for the network and ``∂L/∂θ`` for the parts run
after the gather; summing gradients over ranks and dividing by ``world`` gives exactly the
single-process gradient. No DDP wrapper is needed, and batch norm is not used (DESIGN).
The ``torchrun`` launcher is :mod:`tumorscope.training.distributed`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather

from tumorscope.data.batch import Batch
from tumorscope.models.multitask import ModelOutput


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (``world == 1``: no distribution)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = DistContext()


def init_from_env() -> DistContext:
    """Join the process group ``torchrun`` describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size())


def shard(indices: Sequence[int], ctx: DistContext, what: str) -> list[int]:
    """Contiguous shard ``rank`` of a global batch whose size divides by ``world``."""
    n = len(indices)
    if n % ctx.world:
        raise ValueError(
            f"{what}: global batch of {n} slices does not divide by {ctx.world} processes"
        )
    size = n // ctx.world
    return list(indices[ctx.rank * size : (ctx.rank + 1) * size])


def gather_output(output: ModelOutput) -> ModelOutput:
    """All-gather every tensor field of a ModelOutput along the batch axis, with autograd."""
    gathered: dict[str, Any] = {}
    with warnings.catch_warnings():
        # Deprecated in favour of a private API; it is the public autograd-aware gather.
        warnings.simplefilter("ignore", FutureWarning)
        for f in fields(output):
            value = getattr(output, f.name)
            if isinstance(value, torch.Tensor):
                gathered[f.name] = torch.cat(all_gather(value.contiguous()), dim=0)
            elif isinstance(value, list):  # deep-supervision scales
                gathered[f.name] = [torch.cat(all_gather(v.contiguous()), dim=0) for v in value]
    return replace(output, **gathered)


def gather_batch(batch: Batch) -> Batch:
    """All-gather a sharded batch (targets only need values, not gradients)."""
    world = dist.get_world_size()
    moved: dict[str, Any] = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        if f.name == "patient_index":
            continue
        if isinstance(value, torch.Tensor):
            parts = [torch.empty_like(value) for _ in range(world)]
            dist.all_gather(parts, value.contiguous())
            moved[f.name] = torch.cat(parts, dim=0)
        elif isinstance(value, list):
            parts_obj: list[Any] = [None] * world
            dist.all_gather_object(parts_obj, value)
            moved[f.name] = [x for part in parts_obj for x in part]
    order: dict[str, int] = {}
    for pid in moved["patient_ids"]:
        order.setdefault(pid, len(order))
    moved["patient_index"] = torch.tensor(
        [order[p] for p in moved["patient_ids"]], dtype=torch.long
    )
    return replace(batch, **moved)


def average_gradients(params: Iterable[torch.nn.Parameter], world: int) -> None:
    """Sum gradients over ranks and divide by ``world`` (see the module docstring)."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank."""
    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if ctx.active:
        dist.barrier()
