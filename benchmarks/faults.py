"""Faults during checkpoint writes: ``kill -9`` at random moments, and a full disk.

A writer process rewrites one checkpoint folder in a loop (model, optimizer and state, the
step number in every tensor); the parent kills it with SIGKILL at a random moment, then
loads the folder as training's ``--resume`` does. Every trial must load a consistent
checkpoint (all tensors and the state agree on the step) no older than the last write the
writer reported complete. A second writer runs under a file-size limit (the disk filling
up): the write fails, and the old checkpoint and no partial file remain.

    python benchmarks/faults.py --trials 50        # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu

WRITER = """
import sys, torch
from pathlib import Path
from tumorscope.training.checkpoint import save_checkpoint
folder, start = Path(sys.argv[1]), int(sys.argv[2])
net = torch.nn.Linear(256, 256)
opt = torch.optim.AdamW(net.parameters())
net(torch.randn(2, 256)).sum().backward()
opt.step()
step = start
while True:
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(step)
    for st in opt.state.values():
        st["exp_avg"].fill_(step)
    save_checkpoint(folder, model_state=net.state_dict(), manifest={"step": step},
                    optimizer_state=opt.state_dict(), state={"step": step})
    print(step, flush=True)
    step += 1
    if len(sys.argv) > 3 and step >= int(sys.argv[3]):
        break
"""


def check_folder(folder: Path) -> int:
    """Load ``folder`` as ``--resume`` does; the step it holds (raises if inconsistent)."""
    from tumorscope.training.checkpoint import load_checkpoint

    manifest, model, optim, state = load_checkpoint(folder)
    step = int(manifest["step"])
    values = {float(t.unique().item()) for t in model.values()}
    assert optim is not None
    values |= {float(v["exp_avg"].unique().item()) for v in optim["state"].values()}
    if values != {float(step)} or int(state["step"]) != step:
        raise AssertionError(f"{folder}: step {step} but tensors hold {sorted(values)}")
    if list(folder.glob("*.new")):
        raise AssertionError(f"{folder}: staged files left after loading")
    return step


def kill_trial(folder: Path, rng: random.Random) -> dict[str, float]:
    """One trial: start the writer, let it complete a write, kill it at a random moment."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), "1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = int(proc.stdout.readline())  # one complete checkpoint exists from here on
    time.sleep(rng.uniform(0.0, 0.25))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    done = [first, *(int(x) for x in out.split())]
    loaded = check_folder(folder)
    if loaded < done[-1]:
        raise AssertionError(f"{folder}: loaded step {loaded}, but step {done[-1]} completed")
    return {"last_completed": done[-1], "loaded": loaded}


def disk_full_trial(folder: Path) -> dict[str, object]:
    """A write under a file-size limit fails; the previous checkpoint still loads."""
    subprocess.run(
        [sys.executable, "-c", WRITER, str(folder), "1", "2"], check=True, capture_output=True
    )
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    limited = (
        "import resource, signal, runpy, sys;"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000));"
        f"sys.argv = ['w', {str(folder)!r}, '5', '6'];"
        f"exec(compile({WRITER!r}, 'writer', 'exec'))"
    )
    proc = subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    return {
        "write_failed": proc.returncode != 0 and "File too large" in proc.stderr,
        "unchanged": before == after,
        "loaded": check_folder(folder),
    }


def run(trials: int, seed: int = 0) -> dict[str, object]:
    rng = random.Random(seed)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(trials):
            results.append(kill_trial(Path(tmp) / f"ck{i}", rng))
        full = disk_full_trial(Path(tmp) / "full")
    behind = sum(r["loaded"] < r["last_completed"] for r in results)
    return {
        "trials": trials,
        "loaded_consistent": trials,  # check_folder raised otherwise
        "older_than_last_completed": behind,
        "mean_completed_writes_before_kill": sum(r["last_completed"] for r in results) / trials,
        "disk_full": full,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="5 trials")
    parser.add_argument("--full", action="store_true", help="50 trials (the default)")
    args = parser.parse_args()
    print(json.dumps({**run(5 if args.quick else args.trials), "cpu": cpu()}))


if __name__ == "__main__":
    main()
