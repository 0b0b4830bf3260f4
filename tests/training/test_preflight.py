"""The memory pre-flight: a step that cannot fit is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tumorscope.config import load_config
from tumorscope.training.preflight import available_bytes, check_step_memory, step_bytes
from tumorscope.training.run import RunError, train_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_estimate_grows_with_batch_and_image_and_counts_every_level() -> None:
    small = load_config(CONFIGS / "tiny.yaml")
    s, c, d = small.data.image_size, small.model.base_channels, small.model.depth
    batch = max(
        [st.batch_size for st in small.stages] + [small.data.bag_patients * small.data.bag_slices]
    )
    levels = sum(16 * c * 2**k * max(1, s // 2**k) ** 2 for k in range(d + 1))
    assert step_bytes(small) == batch * (small.model.in_channels * s * s + levels) * 4
    doubled = load_config(CONFIGS / "tiny.yaml", [f"data.image_size={2 * s}"])
    assert 3.5 < step_bytes(doubled) / step_bytes(small) <= 4.0


def test_meminfo_is_read_and_a_missing_one_means_unknown(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       24000000 kB\nMemAvailable:   12345 kB\n")
    assert available_bytes(f) == 12345 * 1024
    assert available_bytes(tmp_path / "absent") is None


def test_a_step_beyond_memory_is_refused_before_the_run_folder_exists(
    synth_brain: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        ["data.image_size=1024", "model.base_channels=128", "model.depth=3"]
        + [f"stages.{st.name}.batch_size=1024" for st in load_config(CONFIGS / "tiny.yaml").stages],
    )
    assert step_bytes(cfg) > 2**40  # about 4 TiB: no machine here has it
    with pytest.raises(RunError, match=r"one training step needs about .* TiB .* lower them"):
        check_step_memory(cfg, available=24 * 2**30)
    out = tmp_path / "run"
    with pytest.raises(RunError, match="one training step needs"):
        train_run(cfg=cfg, data=[synth_brain], out=out)
    assert not out.exists()
    check_step_memory(load_config(CONFIGS / "demo.yaml"), available=24 * 2**30)  # the demo fits


def test_clinical_features_that_do_not_match_the_data_fail_before_training(
    synth_brain: Path, tmp_path: Path
) -> None:
    from tumorscope.config import ConfigError
    from tumorscope.training.data import StageData

    cfg = load_config(CONFIGS / "tiny.yaml", ["model.clinical_features=99"])
    with pytest.raises(
        ConfigError, match=r"model\.clinical_features: 99, but the data has \d+ clinical"
    ):
        StageData.build(data=[synth_brain], cfg=cfg, cache=tmp_path / "cache")
