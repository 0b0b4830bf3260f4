"""Cox partial likelihood against lifelines, scikit-survival and torchsurv on real tables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.linear_model.coxph import CoxPHOptimizer
from sksurv.util import Surv
from torchsurv.loss.cox import neg_partial_log_likelihood

from tumorscope.losses.cox import cox_nll
from tumorscope.models.heads import PatientSurvivalHead

torch.set_num_threads(1)

Table = tuple[np.ndarray, np.ndarray, np.ndarray]


def _rossi() -> Table:
    df = load_rossi()
    x = df.drop(columns=["week", "arrest"]).to_numpy(float)
    return x, df["week"].to_numpy(float), df["arrest"].to_numpy(bool)


def _gbsg2() -> Table:
    x, y = load_gbsg2()
    x = pd.get_dummies(x, drop_first=True, dtype=float)
    return x.to_numpy(float), y["time"].astype(float), y["cens"].astype(bool)


TABLES = {"rossi": _rossi, "gbsg2": _gbsg2}


@pytest.fixture(scope="module", params=sorted(TABLES))
def table(request: pytest.FixtureRequest) -> Table:
    return TABLES[request.param]()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a))


def test_efron_equals_lifelines_per_event(table: Table) -> None:
    x, time, event = table
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(T=time, E=event)
    cph = CoxPHFitter().fit(df, "T", "E")
    eta = x @ cph.params_.to_numpy()
    ours = cox_nll(_t(eta), _t(time), _t(event), ties="efron")
    assert ours.dtype == torch.float64
    assert abs(ours.item() - (-cph.log_likelihood_ / event.sum())) < 1e-6


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_equals_scikit_survival_at_its_fit(table: Table, ties: str) -> None:
    # lifelines has Efron ties only; scikit-survival fits and scores both tie methods.
    x, time, event = table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CoxPHSurvivalAnalysis(ties=ties).fit(x, Surv.from_arrays(event, time))
    opt = CoxPHOptimizer(x, event, time, np.zeros(x.shape[1]), ties)
    # scikit-survival averages over all samples; ours is per event.
    ref = opt.nlog_likelihood(model.coef_) * len(time) / event.sum()
    ours = cox_nll(_t(x @ model.coef_), _t(time), _t(event), ties=ties)  # type: ignore[arg-type]
    assert abs(ours.item() - ref) < 1e-6


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_torchsurv_sum_divided_by_events(table: Table, ties: str) -> None:
    x, time, event = table
    eta = _t(x @ np.linspace(-0.01, 0.01, x.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchsurv warns that the data have ties
        ref = neg_partial_log_likelihood(
            eta, _t(event), _t(time), ties_method=ties, reduction="sum"
        )
    ours = cox_nll(eta, _t(time), _t(event), ties=ties)  # type: ignore[arg-type]
    # torchsurv accumulates in float32 here: compare to float32 precision.
    assert ours.item() == pytest.approx(ref.item() / event.sum(), rel=1e-6)


@pytest.mark.filterwarnings("ignore:Ties in `time` detected")
def test_torchsurv_mean_has_a_different_scale_under_ties() -> None:
    # torchsurv's "mean" with Efron divides by unique event times (DESIGN "Training").
    x, time, event = _rossi()
    eta = _t(x @ np.full(x.shape[1], 0.01))
    mean = neg_partial_log_likelihood(
        eta, _t(event), _t(time), ties_method="efron", reduction="mean"
    )
    ours = cox_nll(eta, _t(time), _t(event))
    n_unique = len(np.unique(time[event]))
    assert n_unique < event.sum()
    assert mean.item() == pytest.approx(ours.item() * event.sum() / n_unique, rel=1e-6)
    assert abs(mean.item() - ours.item()) > 0.1


def test_two_samples_analytic() -> None:
    eta = torch.tensor([0.3, -0.5], dtype=torch.float64)
    # Sample 0 has the event first; both are at risk.
    loss = cox_nll(eta, torch.tensor([1.0, 2.0]), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(-(0.3 - np.log(np.exp(0.3) + np.exp(-0.5))), abs=1e-12)


def test_efron_and_breslow_differ_only_with_ties() -> None:
    eta = torch.tensor([0.2, 1.0, -0.4, 0.5], dtype=torch.float64)
    event = torch.tensor([1, 1, 0, 1])
    no_ties = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert cox_nll(eta, no_ties, event, "efron").item() == pytest.approx(
        cox_nll(eta, no_ties, event, "breslow").item()
    )
    tied = torch.tensor([1.0, 1.0, 3.0, 4.0])
    e, b = cox_nll(eta, tied, event, "efron").item(), cox_nll(eta, tied, event, "breslow").item()
    # Hand-computed: tie group {0, 1} at t=1 with all four at risk, then {3} at t=4.
    r = np.exp([0.2, 1.0, -0.4, 0.5])
    efron = (
        -(0.2 + 1.0 + 0.5 - np.log(r.sum()) - np.log(r.sum() - 0.5 * (r[0] + r[1])) - np.log(r[3]))
        / 3
    )
    breslow = -(0.2 + 1.0 + 0.5 - 2 * np.log(r.sum()) - np.log(r[3])) / 3
    assert e == pytest.approx(efron, abs=1e-12) and b == pytest.approx(breslow, abs=1e-12)


def test_no_events_gives_an_in_graph_zero() -> None:
    eta = torch.randn(5, requires_grad=True)
    loss = cox_nll(eta, torch.arange(5.0), torch.zeros(5, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert eta.grad is not None and torch.equal(eta.grad, torch.zeros(5))


def test_shift_invariance_and_large_log_hazards() -> None:
    eta = torch.tensor([0.1, 2.0, -1.0, 0.7, 0.0], dtype=torch.float64)
    t, e = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0]), torch.tensor([1, 1, 1, 1, 0])
    base = cox_nll(eta, t, e).item()
    assert cox_nll(eta + 800.0, t, e).item() == pytest.approx(base, abs=1e-9)


def test_gradient_matches_finite_differences() -> None:
    eta = torch.randn(8, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0])
    e = torch.tensor([1, 1, 0, 1, 1, 0, 1, 0])
    for ties in ("efron", "breslow"):
        assert torch.autograd.gradcheck(lambda z, ties=ties: cox_nll(z, t, e, ties), (eta,))


def test_fp32_and_bf16_autocast_inputs_give_at_least_fp32() -> None:
    x, time, event = _rossi()
    eta64 = _t(x @ np.full(x.shape[1], 0.05))
    ref = cox_nll(eta64, _t(time), _t(event)).item()
    out32 = cox_nll(eta64.float(), _t(time), _t(event))
    assert out32.dtype == torch.float32 and out32.item() == pytest.approx(ref, abs=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf = cox_nll(eta64.bfloat16(), _t(time), _t(event))
    assert out_bf.dtype == torch.float32
    assert out_bf.item() == pytest.approx(
        cox_nll(eta64.bfloat16().double(), _t(time), _t(event)).item(), abs=1e-5
    )


def test_duplicating_a_patients_slices_leaves_the_patient_level_loss_unchanged() -> None:
    torch.manual_seed(0)
    head = PatientSurvivalHead(in_features=4, survival_dim=3).eval()
    emb = torch.randn(6, 3)
    index = torch.tensor([0, 0, 1, 2, 2, 2])
    time, event = torch.tensor([5.0, 2.0, 2.0]), torch.tensor([1, 1, 0])
    base = cox_nll(head(emb, index), time, event)
    dup = cox_nll(head(torch.cat([emb, emb[3:]]), torch.cat([index, index[3:]])), time, event)
    torch.testing.assert_close(dup, base)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(3), torch.zeros(3), torch.zeros(3), "exact"), "ties: 'exact'"),
        ((torch.zeros(3), torch.zeros(2), torch.zeros(3), "efron"), "equal length"),
        ((torch.zeros(3, 1), torch.zeros(3), torch.zeros(3), "efron"), "1-D"),
    ],
)
def test_bad_input_is_a_clear_error(
    args: tuple[torch.Tensor, torch.Tensor, torch.Tensor, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        cox_nll(*args)  # type: ignore[arg-type]
