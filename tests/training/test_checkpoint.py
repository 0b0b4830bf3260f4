from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tumorscope.training.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    load_checkpoint,
    read_manifest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "tumorscope"


def _trained_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 5)).sum().backward()
        opt.step()
    return net, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path: Path) -> None:
    net, opt = _trained_optimizer()
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    save_checkpoint(
        tmp_path / "ck",
        model_state=net.state_dict(),
        manifest={"step": 3},
        optimizer_state=opt.state_dict(),
        state={"rng": rng_state(), "step": 3},
    )
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    net2 = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Linear(3, 1))
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)
    manifest, model_state, optim_state, state = load_checkpoint(tmp_path / "ck")
    net2.load_state_dict(model_state)
    assert optim_state is not None
    opt2.load_state_dict(optim_state)
    set_rng_state(state["rng"])
    assert manifest["step"] == 3
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    # The restored optimizer continues exactly like the original one.
    x = torch.randn(4, 5)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).sum().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.01)


def test_altered_or_missing_files_are_refused(tmp_path: Path) -> None:
    net, _ = _trained_optimizer()
    save_checkpoint(tmp_path / "ck", model_state=net.state_dict(), manifest={})
    f = tmp_path / "ck" / MODEL_FILE
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        read_manifest(tmp_path / "ck")
    f.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_manifest(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no manifest"):
        read_manifest(tmp_path / "nothing")


def test_no_pickle_loading_anywhere_in_the_package() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "load":
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("torch", "pickle"):
                    offenders.append(f"{path}:{node.lineno}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                mod = getattr(node, "module", None) or ""
                if "pickle" in names or mod == "pickle":
                    offenders.append(f"{path}:{node.lineno}")
    assert offenders == []
