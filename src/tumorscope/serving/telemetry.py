"""Prometheus metrics of one service instance (its own registry, so that several apps in
one process — the tests — never share counters)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Telemetry", "route_label"]

#: Routes named in the labels; any other path counts as ``other`` (label sets stay bounded).
ROUTES = (
    "/health/live",
    "/health/ready",
    "/model/info",
    "/predict",
    "/predict_multitask",
    "/predict/batch",
    "/predict/volume",
    "/metrics",
    "/docs",
    "/openapi.json",
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def route_label(path: str) -> str:
    """The label of a request path (``/results/{id}/mask.nii.gz`` for downloads)."""
    if path in ROUTES:
        return path
    if path.startswith("/results/"):
        return "/results/{id}/mask.nii.gz"
    return "other"


@dataclass
class Telemetry:
    """Request counts by route and status, latency histograms, in-flight requests, the
    model's load time and rejected requests by reason."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "tumorscope_requests", "Requests answered", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "tumorscope_request_seconds",
            "Time from a request's arrival to its answer",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("tumorscope_in_flight", "Requests being answered", registry=r)
        self.queued = Gauge(
            "tumorscope_queued", "Predictions waiting for a free inference slot", registry=r
        )
        self.rejected = Counter(
            "tumorscope_rejected", "Requests refused before inference", ["reason"], registry=r
        )
        self.load_seconds = Gauge(
            "tumorscope_model_load_seconds", "Seconds to load the model and warm it up", registry=r
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return bytes(generate_latest(self.registry))
