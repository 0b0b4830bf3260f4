"""``calibration.domain_quantile``: validated at the config boundary, and the level of both
parts of the out-of-domain thresholds (empirical quantile and log-normal bound) in every
fit, down to the run's stored domain model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tumorscope.config import CalibrationConfig, ConfigError, load_config
from tumorscope.data.cache import load_prepared
from tumorscope.data.dataset import SliceDataset
from tumorscope.runs import load_run
from tumorscope.training.data import StageData
from tumorscope.training.ood import (
    dataset_features,
    domain_thresholds,
    fit_domain,
    fit_run_domain,
)
from tumorscope.training.run import train_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_the_default_is_the_98th_percentile() -> None:
    assert CalibrationConfig().domain_quantile == 0.98
    assert load_config(CONFIGS / "tiny.yaml").calibration.domain_quantile == 0.98


@pytest.mark.parametrize("value", ["0.5", "1", "1.0", "0.3", "1.5", "-0.9", ".nan", ".inf"])
def test_a_quantile_outside_the_open_interval_names_the_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"calibration:\n  domain_quantile: {value}\n")
    with pytest.raises(ConfigError, match=re.escape("calibration.domain_quantile")) as e:
        load_config(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("value", [0.51, 0.9, 0.999])
def test_a_quantile_inside_it_is_kept(value: float) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", [f"calibration.domain_quantile={value}"])
    assert cfg.calibration.domain_quantile == value


def test_the_prediction_bound_follows_the_quantile() -> None:
    # Many log-normal scores of one kind: each threshold is the log-normal quantile at its
    # own level (SciPy's), so the bound's level is the quantile asked for, not 0.98.
    rng = np.random.default_rng(11)
    sigma, mu = 0.25, 1.5
    scores = np.exp(rng.normal(mu, sigma, 100_000))
    one = np.zeros(scores.size, bool)
    for q in (0.9, 0.95, 0.99):
        want = stats.lognorm.ppf(q, s=sigma, scale=np.exp(mu))
        assert domain_thresholds(scores, one, q)[1] == pytest.approx(want, rel=0.01)
    # With few scores the bound (not the empirical quantile, about their maximum) decides:
    # its t quantile is taken at the level asked for.
    few = np.exp(rng.normal(mu, sigma, 12))
    logs = np.log(few)
    for q in (0.9, 0.99):
        t = stats.t.ppf(q, few.size - 1)
        bound = np.exp(logs.mean() + t * logs.std(ddof=1) * np.sqrt(1 + 1 / few.size))
        got = domain_thresholds(few, np.zeros(few.size, bool), q)[1]
        assert got == pytest.approx(max(bound, np.quantile(few, q)))


def test_fit_domain_stores_the_quantile_it_was_given() -> None:
    rng = np.random.default_rng(12)
    train, val = rng.normal(size=(80, 5)), rng.normal(size=(40, 5))
    kinds = np.arange(40) % 4 == 0
    low, high = (fit_domain(train, np.zeros(80, bool), val, kinds, quantile=q) for q in (0.9, 0.99))
    assert (low.quantile, high.quantile) == (0.9, 0.99)
    assert low.image_threshold < high.image_threshold
    assert low.volume_threshold < high.volume_threshold
    expect = domain_thresholds(low.score(val), kinds, 0.9)
    assert (low.image_threshold, low.volume_threshold) == pytest.approx(expect)


def test_the_run_fit_uses_the_quantile_it_is_given(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    prepared = load_prepared(tiny_run.parent / "cache", run.config)
    stage_data = StageData(prepared=prepared, cfg=run.config)
    fitted = fit_run_domain(run.model, stage_data, quantile=0.9)
    assert fitted is not None and fitted.quantile == 0.9
    val = SliceDataset(prepared, "val", train=False)
    feats, is_image = dataset_features(run.model, val, np.arange(len(val)))
    expect = domain_thresholds(fitted.score(feats), is_image, 0.9)
    assert (fitted.image_threshold, fitted.volume_threshold) == pytest.approx(expect)
    # The run itself was fitted at its config's quantile (the default), on the same data.
    assert run.domain is not None and run.domain.quantile == run.config.calibration.domain_quantile
    assert fitted.volume_threshold <= run.domain.volume_threshold + 1e-9


def test_training_stores_the_configured_quantile(synth_brain: Path, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml", ["calibration.domain_quantile=0.9"])
    train_run(cfg=cfg, data=[synth_brain], out=tmp_path / "run", cache=tmp_path / "cache")
    run = load_run(tmp_path / "run")
    assert run.domain is not None and run.domain.quantile == 0.9
    assert run.config.calibration.domain_quantile == 0.9
