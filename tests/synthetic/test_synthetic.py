"""Synthetic generator, sampling side: presets, hazards, outcomes, oracle C-index (no rendering)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored

from tumorscope.synthetic import (
    DIFFICULTIES,
    PRESETS,
    get_preset,
    oracle_c_index,
    sample_cohort,
)
from tumorscope.synthetic.anatomy import BRAIN_FOV_MM, BRAIN_SHAPE, ElasticField
from tumorscope.synthetic.brain import grid_axes
from tumorscope.synthetic.outcomes import BETAS, log_hazard


@pytest.fixture(scope="module")
def cohorts() -> dict[tuple[str, str], list]:
    return {
        (profile, d): sample_cohort(profile=profile, patients=300, difficulty=d, seed=0)
        for profile in ("brain-mri", "petct")
        for d in DIFFICULTIES
    }


def test_default_grid_is_brats_240x240x155_at_1mm() -> None:
    assert BRAIN_SHAPE == (240, 240, 155)
    axes, spacing = grid_axes(BRAIN_SHAPE, BRAIN_FOV_MM)
    assert spacing == (1.0, 1.0, 1.0)
    assert [len(a) for a in axes] == [240, 240, 155]
    assert axes[0][1] - axes[0][0] == pytest.approx(1.0)


@pytest.mark.parametrize("profile", ["brain-mri", "petct"])
def test_oracle_c_index_of_a_300_patient_standard_cohort_lies_in_its_band(cohorts, profile) -> None:
    cohort = cohorts[(profile, "standard")]
    c = oracle_c_index(cohort)
    lo, hi = PRESETS["standard"].oracle_band
    assert (lo, hi) == (0.72, 0.78)
    assert lo <= c <= hi, f"{profile}: oracle C {c:.3f} outside [{lo}, {hi}]"
    # Independent implementation: scikit-survival's Harrell's C on the same data.
    events = np.array([p.event for p in cohort])
    times = np.array([p.time for p in cohort], dtype=float)
    risk = np.array([p.log_hazard for p in cohort])
    ref = concordance_index_censored(events, times, risk)[0]
    assert c == pytest.approx(ref, abs=2e-3)


@pytest.mark.parametrize("profile", ["brain-mri", "petct"])
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_mean_oracle_c_index_of_each_preset_lies_in_its_band(profile, difficulty) -> None:
    # One 300-patient cohort has a standard deviation of about 0.02; five seeds average it out.
    cs = [
        oracle_c_index(sample_cohort(profile=profile, patients=300, difficulty=difficulty, seed=s))
        for s in range(5)
    ]
    lo, hi = PRESETS[difficulty].oracle_band
    assert lo <= float(np.mean(cs)) <= hi, (profile, difficulty, cs)


def test_oracle_bands_are_ordered_easy_standard_hard(cohorts) -> None:
    for profile in ("brain-mri", "petct"):
        cs = [oracle_c_index(cohorts[(profile, d)]) for d in DIFFICULTIES]
        assert cs[0] > cs[1] > cs[2]


@pytest.mark.parametrize("profile", ["brain-mri", "petct"])
def test_about_30_percent_censoring_and_some_missing_covariates(cohorts, profile) -> None:
    for d in DIFFICULTIES:
        cohort = cohorts[(profile, d)]
        censored = 1.0 - np.mean([p.event for p in cohort])
        assert 0.2 <= censored <= 0.4, (d, censored)
        assert all(p.time >= 1 for p in cohort)
        missing = sum(v is None for p in cohort for v in p.covariates.values())
        assert missing > 0


def test_true_log_hazard_is_the_documented_linear_predictor(cohorts) -> None:
    for (profile, d), cohort in cohorts.items():
        scale = PRESETS[d].scales(profile)[0]
        for p in cohort[:20]:
            expected = scale * sum(b * p.features[k] for k, b in BETAS[profile].items())
            assert p.log_hazard == pytest.approx(expected)
            assert log_hazard(profile, p.features, scale) == pytest.approx(expected)


def test_presets_differ_as_documented(cohorts) -> None:
    def stats(d: str) -> dict[str, float]:
        cohort = cohorts[("brain-mri", d)]
        lesions = [les for p in cohort for les in p.lesions]
        return {
            "small": sum(les.diameter_mm < 10.0 for les in lesions),
            "non_enh": sum(not les.enhancing for les in lesions),
            "mimics": sum(len(p.mimics) for p in cohort),
            "ghosting": sum(p.anatomy.ghosting > 0 for p in cohort),
            "multifocal": sum(len(p.lesions) > 1 for p in cohort),
            "conspicuity": float(np.mean([les.conspicuity for les in lesions])),
            "noise": float(np.mean([p.anatomy.noise for p in cohort])),
        }

    easy, std, hard = stats("easy"), stats("standard"), stats("hard")
    # easy: one or two bright tumours, nothing else.
    assert easy["small"] == easy["non_enh"] == easy["mimics"] == easy["ghosting"] == 0
    assert all(1 <= len(p.lesions) <= 2 for p in cohorts[("brain-mri", "easy")])
    assert easy["conspicuity"] > 0.9
    # hard: sub-centimetre lesions, non-enhancing and multifocal tumours, hard negatives, ghosting.
    for key in ("small", "non_enh", "mimics", "ghosting", "multifocal"):
        assert hard[key] > std[key] > easy[key] or (
            key == "multifocal" and hard[key] > easy[key]
        ), key
    assert hard["small"] >= 100 and hard["non_enh"] >= 100 and hard["mimics"] >= 1000
    assert hard["conspicuity"] < std["conspicuity"] < easy["conspicuity"]
    assert hard["noise"] > std["noise"] > easy["noise"]


def test_small_lesions_are_under_1cm_and_every_tumour_is_at_least_01_ml(cohorts) -> None:
    for d in DIFFICULTIES:
        for p in cohorts[("brain-mri", d)]:
            assert p.lesions, "every BraTS patient has a tumour"
            assert p.tumour_volume_ml >= 0.1
            for les in p.lesions:
                assert les.whole_volume_ml > 0.1 or les.diameter_mm < 10.0


def test_patient_depends_on_seed_and_index_only() -> None:
    a = sample_cohort(profile="brain-mri", patients=5, difficulty="standard", seed=7)
    b = sample_cohort(profile="brain-mri", patients=3, difficulty="standard", seed=7)
    c = sample_cohort(profile="brain-mri", patients=3, difficulty="standard", seed=8)
    assert a[:3] == b
    assert a[0] != c[0]
    assert [p.patient_id for p in a] == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="difficulty must be one of"):
        get_preset("medium")
    with pytest.raises(ValueError, match="profile must be one of"):
        sample_cohort(profile="ct", patients=3, difficulty="easy", seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        sample_cohort(profile="petct", patients=0, difficulty="easy", seed=0)
    cohort = sample_cohort(profile="petct", patients=3, difficulty="easy", seed=0)
    no_events = [dataclasses.replace(p, event=False) for p in cohort]
    with pytest.raises(ValueError, match="one event"):
        oracle_c_index(no_events)


def test_oracle_c_index_matches_a_hand_count() -> None:
    cohort = sample_cohort(profile="brain-mri", patients=4, difficulty="easy", seed=0)
    times, events, risks = [5.0, 10.0, 15.0, 20.0], [True, True, False, True], [3.0, 1.0, 2.0, 0.0]
    fixed = [
        dataclasses.replace(p, time=t, event=e, log_hazard=r)
        for p, t, e, r in zip(cohort, times, events, risks, strict=True)
    ]
    # Comparable pairs (i had the event first): (0,1) (0,2) (0,3) (1,2) (1,3); concordant: all
    # but (1,2) where risk 1.0 < 2.0 although patient 1 died first → C = 4/5.
    assert oracle_c_index(fixed) == pytest.approx(0.8)


def test_elastic_field_on_grid_equals_pointwise_evaluation() -> None:
    rng = np.random.default_rng(0)
    nodes = tuple(np.linspace(-100, 100, n).astype(np.float32) for n in (6, 7, 5))
    field = ElasticField(nodes=nodes, values=rng.normal(size=(3, 6, 7, 5)).astype(np.float32))  # type: ignore[arg-type]
    axes = tuple(np.linspace(-90, 90, n).astype(np.float32) for n in (9, 11, 7))
    grid = field.on_grid(axes)  # type: ignore[arg-type]
    pts = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    np.testing.assert_allclose(grid.reshape(3, -1), field.at(pts), atol=1e-5)
    # Weights form a partition of unity: a constant field stays constant.
    const = ElasticField(nodes=nodes, values=np.ones((3, 6, 7, 5), dtype=np.float32))  # type: ignore[arg-type]
    np.testing.assert_allclose(const.on_grid(axes), 1.0, atol=1e-5)
    assert math.isfinite(float(grid.sum()))
