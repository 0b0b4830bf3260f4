"""The ``torchrun`` launcher of multi-process training, and each process's entry point.

``train --nproc N`` (or ``torchrun --nproc_per_node=N -m tumorscope.training.distributed``)
starts N processes on this machine; each joins the process group and runs
:func:`tumorscope.training.worker.train_in_process` as its rank. The collective operations
the processes use are in :mod:`tumorscope.training.collective`.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from tumorscope.config import Config, load_config, save_config
from tumorscope.training.collective import init_from_env
from tumorscope.training.result import TrainResult, read_result
from tumorscope.training.worker import train_in_process

log = logging.getLogger(__name__)


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
        train_in_process(
            cfg=cfg, data=args.data, out=args.out, resume=args.resume, cache=args.cache, ctx=ctx
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
