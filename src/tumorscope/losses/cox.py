"""Cox negative partial log-likelihood, Efron or Breslow ties, per event.

Hand-written rather than torchsurv's ``neg_partial_log_likelihood``: its
``reduction="mean"`` divides the Efron likelihood by the number of unique event times,
not of events, so the scale moves batch to batch with the ties (DESIGN "Training"); here
the sum over events is divided by the number of events (lifelines' per-event scale).
"""

from __future__ import annotations

from typing import Literal

import torch

Ties = Literal["efron", "breslow"]


def _check(log_hazard: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str) -> None:
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties: {ties!r} is not one of ['efron', 'breslow']")
    if log_hazard.ndim != 1 or time.shape != log_hazard.shape or event.shape != log_hazard.shape:
        raise ValueError(
            "cox_nll: log_hazard, time and event must be 1-D of equal length, got "
            f"{tuple(log_hazard.shape)}, {tuple(time.shape)}, {tuple(event.shape)}"
        )


def cox_nll(
    log_hazard: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: Ties = "efron"
) -> torch.Tensor:
    """Negative Cox partial log-likelihood divided by the number of events.

    For unique event times ``t_g`` with ``d_g`` events, event set ``E_g``, risk-set sum
    ``R_g = Σ_{t_j ≥ t_g} exp(η_j)`` and tied sum ``D_g = Σ_{i ∈ E_g} exp(η_i)``:

    - Breslow: ``ℓ = Σ_g [Σ_{i∈E_g} η_i − d_g log R_g]``
    - Efron:   ``ℓ = Σ_g [Σ_{i∈E_g} η_i − Σ_{l=0}^{d_g−1} log(R_g − (l/d_g) D_g)]``

    and the result is ``−ℓ / Σ_g d_g``. Computed in float64 whatever the input dtype
    (also under autocast) and returned in the dtype of ``log_hazard`` promoted to at
    least float32. Vectorised: no Python loop over samples or times.

    Args:
        log_hazard: ``(N,)`` predicted log-hazards η (one per patient).
        time: ``(N,)`` follow-up times (any unit; only their order matters).
        event: ``(N,)`` bool or 0/1, True where the event was observed.
        ties: ``efron`` (default) or ``breslow``.

    Returns:
        Scalar loss. With no events, ``(log_hazard * 0).sum()``: a zero that stays in the
        autograd graph (a detached constant would break DDP).

    Raises:
        ValueError: for mismatched shapes or an unknown ``ties``.
    """
    _check(log_hazard, time, event, ties)
    out_dtype = torch.promote_types(log_hazard.dtype, torch.float32)
    event_b = event.to(torch.bool)
    n_events = int(event_b.sum())
    if n_events == 0:
        return (log_hazard * 0).sum().to(out_dtype)
    with torch.autocast(device_type=log_hazard.device.type, enabled=False):
        eta = log_hazard.to(torch.float64)
        # The likelihood is shift-invariant; subtracting the max keeps exp() finite.
        eta = eta - eta.detach().max()
        unique_t, group = torch.unique(time.to(torch.float64), sorted=True, return_inverse=True)
        n_groups = unique_t.shape[0]
        risk = torch.exp(eta)
        zeros = torch.zeros(n_groups, dtype=torch.float64, device=eta.device)
        at_time = zeros.index_add(0, group, risk)
        # R_g: sum over every sample with time >= t_g (reverse cumulative sum over sorted times).
        risk_set = torch.flip(torch.cumsum(torch.flip(at_time, (0,)), 0), (0,))
        ev_group = group[event_b]
        ev_eta = eta[event_b]
        if ties == "breslow":
            log_terms = torch.log(risk_set[ev_group])
        else:
            d = torch.bincount(ev_group, minlength=n_groups).to(torch.float64)
            tied = zeros.index_add(0, ev_group, risk[event_b])
            # Rank l of each event inside its tie group: 0..d_g-1 (order within a group is irrelevant).
            order = torch.argsort(ev_group, stable=True)
            sorted_groups = ev_group[order]
            starts = torch.cumsum(d, 0) - d
            rank = torch.empty_like(order)
            rank[order] = (
                torch.arange(order.shape[0], device=eta.device) - starts[sorted_groups].long()
            )
            frac = rank.to(torch.float64) / d[ev_group]
            log_terms = torch.log(risk_set[ev_group] - frac * tied[ev_group])
        loglik = ev_eta.sum() - log_terms.sum()
        return (-loglik / n_events).to(out_dtype)
