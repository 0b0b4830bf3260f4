"""Multi-process training: ``torchrun`` (gloo on CPU, NCCL on GPU), one script everywhere.

Every rank draws the same *global* batch indices and loads its contiguous shard. The
per-slice network runs on the shard; its outputs are all-gathered with autograd
(``torch.distributed.nn.functional.all_gather``) so that every loss — batch Dice, masked
means over present targets, and the Cox partial likelihood over the global risk set — is
computed on the global batch exactly as one process would. Each rank then holds
``world × ∂L/∂θ`` restricted to its shard for the network and ``∂L/∂θ`` for the parts run
after the gather; summing gradients over ranks and dividing by ``world`` gives exactly the
single-process gradient. No DDP wrapper is needed, and batch norm is not used (DESIGN).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from tumorscope.config import Config, load_config, save_config
from tumorscope.data.batch import Batch

if TYPE_CHECKING:
    from tumorscope.models.multitask import ModelOutput
    from tumorscope.training.run import TrainResult

log = logging.getLogger(__name__)


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
    from torch.distributed.nn.functional import all_gather

    gathered = {}
    with warnings.catch_warnings():
        # Deprecated in favour of a private API; it is the public autograd-aware gather.
        warnings.simplefilter("ignore", FutureWarning)
        for f in fields(output):
            value = getattr(output, f.name)
            if isinstance(value, torch.Tensor):
                gathered[f.name] = torch.cat(all_gather(value.contiguous()), dim=0)
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


def launch(
    *,
    cfg: Config,
    data: Sequence[str | Path],
    out: str | Path,
    resume: bool,
    cache: str | Path | None,
    nproc: int,
) -> TrainResult:
    """Start ``nproc`` training processes with ``torchrun`` on this machine and wait for them."""
    from tumorscope.training.run import read_result

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        save_config(cfg, cfg_path)
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "tumorscope.training.distributed", "--config", str(cfg_path), "--out", str(out),
        ]  # fmt: skip
        for d in data:
            cmd += ["--data", str(d)]
        if cache is not None:
            cmd += ["--cache", str(cache)]
        if resume:
            cmd.append("--resume")
        threads = max(1, (os.cpu_count() or 1) // nproc)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        log.info("launching %d training processes: %s", nproc, " ".join(cmd))
        proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training failed (exit {proc.returncode}); see the log above"
        )
    result: TrainResult = read_result(Path(out))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of each ``torchrun`` process."""
    from tumorscope.training.run import train_run

    parser = argparse.ArgumentParser(description="tumorscope training worker (run by torchrun)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"[rank {os.environ.get('RANK', '0')}] %(message)s"
    )
    ctx = init_from_env()
    try:
        cfg = load_config(args.config, args.overrides)
        train_run(
            cfg=cfg, data=args.data, out=args.out, resume=args.resume, cache=args.cache, ctx=ctx
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
