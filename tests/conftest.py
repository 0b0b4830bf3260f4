"""Session fixtures shared across test folders: tiny synthetic data and one tiny trained run.

Training once per session keeps the suite fast; tests that need a run read it and never
write into it (copy it to ``tmp_path`` first if a test must change it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_SHAPE = (48, 56, 40)


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    # Tests compare numbers; one intra-op thread keeps them reproducible and cheap on 2 cores.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_brain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 tiny synthetic BraTS-layout patients (``easy``) + 12 Kaggle-style images."""
    from tumorscope.synthetic import synthesize

    out = tmp_path_factory.mktemp("synth-brain")
    synthesize(
        profile="brain-mri",
        patients=8,
        out=out,
        kaggle=12,
        difficulty="easy",
        seed=1,
        shape=TINY_SHAPE,
    )
    return out


@pytest.fixture(scope="session")
def tiny_run(synth_brain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of ``configs/tiny.yaml`` trained on :func:`synth_brain` (read-only for tests)."""
    from tumorscope.config import load_config
    from tumorscope.training.run import train_run

    root = tmp_path_factory.mktemp("tiny-run")
    run = root / "run"
    train_run(
        cfg=load_config(CONFIGS / "tiny.yaml"), data=[synth_brain], out=run, cache=root / "cache"
    )
    return run


@pytest.fixture(scope="session")
def tiny_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tumorscope export --format onnx`` of :func:`tiny_run` (read-only for tests)."""
    from tumorscope.export.run import export_run

    out = tmp_path_factory.mktemp("tiny-export") / "onnx"
    export_run(run=tiny_run, out=out, format="onnx")  # data: the folders the run recorded
    return out
