"""The ``domain`` section of ``metrics.json`` and the demo's line of out-of-domain flags:
counted from the held-out units' own verdicts, checked against a prediction of each unit
made here, outside the evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tumorscope.data.layout import discover
from tumorscope.demo import domain_line, evaluate_held_out
from tumorscope.evaluation.collect import HeldOut
from tumorscope.evaluation.domain import domain_lines, domain_section, domain_summary
from tumorscope.evaluation.schema import validate_metrics
from tumorscope.inference.predictor import Predictor

N_BOOT = 20


@pytest.fixture(scope="module")
def evaluated(
    tiny_run: Path, synth_brain: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    """The demo's figures on the tiny run and the report folder they came from."""
    out = tmp_path_factory.mktemp("domain-flags") / "report"
    return evaluate_held_out(run=tiny_run, data=[synth_brain], out=out, n_boot=N_BOOT), out


def test_the_recorded_flags_are_those_of_each_held_out_unit(
    evaluated: tuple[dict, Path], tiny_run: Path, synth_brain: Path
) -> None:
    figures, out = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    section = metrics["domain"]
    assert figures["domain"] == section
    # Each held-out unit predicted here, outside the evaluation (the run's test split).
    predictor = Predictor.from_run(tiny_run)
    stats = predictor.domain.stats
    assert stats is not None
    test = set(predictor.manifest.splits["test"])
    index = discover([synth_brain])
    volumes = {
        c.patient_id: predictor.predict_volume(c).domain
        for c in index.cases
        if c.patient_id in test
    }
    items = [it for it in index.images if it.patient_id in test]
    images = {
        f"{it.source}:{it.patient_id}": r.domain
        for it, r in zip(items, predictor.predict_batch([it.path for it in items]), strict=True)
    }
    assert volumes and images, "the tiny run holds out volumes and images"
    for kind, units in (("volumes", volumes), ("images", images)):
        flagged = sum(d.in_domain is False for d in units.values())
        got = section[kind]
        assert (got["n"], got["n_checked"], got["n_flagged"]) == (len(units), len(units), flagged)
        assert got["flagged_share"]["value"] == pytest.approx(flagged / len(units))
        assert got["flagged_share"]["n"] == len(units)
    assert section["volume_threshold"] == stats.volume_threshold
    assert section["image_threshold"] == stats.image_threshold
    assert section["quantile"] == stats.quantile
    assert section["target_share"] == pytest.approx(1 - stats.quantile)
    # predictions.json: one row per unit, with the same verdict and score.
    rows = json.loads((out / "predictions.json").read_text())["domain"]
    by_id = {(r["kind"], r["id"]): r for r in rows}
    assert len(by_id) == len(rows) == len(volumes) + len(images)
    for kind, units in (("volume", volumes), ("image", images)):
        for uid, d in units.items():
            row = by_id[(kind, uid)]
            assert row["in_domain"] == d.in_domain
            assert row["score"] == pytest.approx(d.score, rel=1e-6)
    # The printed line and report.md say the same counts.
    line = domain_line(figures)
    nv, ni = section["volumes"], section["images"]
    assert line.startswith("out-of-domain flags on held-out inputs: ")
    assert f"{nv['n_flagged']}/{len(volumes)} volumes" in line
    assert f"{ni['n_flagged']}/{len(images)} images" in line
    share = 100 * ni["n_flagged"] / len(images)
    assert f"images ({share:.1f} %)" in line and line.endswith("goal ≤ 2 %")
    assert domain_summary(section) in (out / "report.md").read_text()


def test_the_summary_reads_like_the_demo_asks() -> None:
    held = HeldOut(
        volume_in_domain=[True] * 8,
        image_in_domain=[True] * 39 + [False],
        domain_model={"image_threshold": 20.0, "volume_threshold": 12.0, "quantile": 0.98},
    )
    section = domain_section(held, n_boot=N_BOOT, seed=0)
    assert domain_summary(section) == "0/8 volumes (0.0 %), 1/40 images (2.5 %); goal ≤ 2 %"
    assert section["images"]["flagged_share"]["value"] == pytest.approx(0.025)
    lo, hi = section["images"]["flagged_share"]["ci95"]
    assert 0.0 <= lo <= 0.025 <= hi <= 1.0
    assert "set on validation at the 0.98 level" in domain_lines({"domain": section})[2]


def test_unchecked_and_missing_units_are_counted_apart() -> None:
    held = HeldOut(volume_in_domain=[None, None], image_in_domain=[])
    section = domain_section(held, n_boot=N_BOOT, seed=0)
    assert section["quantile"] is None and section["target_share"] is None
    assert section["volume_threshold"] is None and section["image_threshold"] is None
    v, i = section["volumes"], section["images"]
    assert (v["n"], v["n_checked"], v["n_flagged"]) == (2, 0, 0)
    assert v["flagged_share"]["value"] is None
    assert "no domain model" in v["flagged_share"]["reason"]
    assert i["n"] == 0 and i["flagged_share"]["reason"] == "no held-out images"
    assert domain_summary(section) == "2 volumes not checked"
    # A model with one unchecked unit (a backend without features): left out of the share.
    held = HeldOut(
        volume_in_domain=[None, False, True, True],
        domain_model={"image_threshold": 1.0, "volume_threshold": 1.0, "quantile": 0.95},
    )
    v = domain_section(held, n_boot=N_BOOT, seed=0)["volumes"]
    assert (v["n"], v["n_checked"], v["n_flagged"]) == (4, 3, 1)
    assert v["flagged_share"]["value"] == pytest.approx(1 / 3)


def test_a_report_from_before_the_section_still_reads() -> None:
    assert domain_lines({}) == []
    assert domain_line({}) == "out-of-domain flags on held-out inputs: not measured"
