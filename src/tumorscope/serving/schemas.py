"""The typed answers of the service (its OpenAPI schema is built from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tumorscope.serving.errors import ErrorBody


class Classification(BaseModel):
    """The slice (or patient) decision."""

    label: Literal["tumour", "no tumour"]
    tumour_probability: float = Field(description="Calibrated (temperature-scaled) probability")
    confidence: float = Field(description="Calibrated probability of the decided label")
    threshold: float = Field(description="Decision threshold chosen on validation data")


class Segmentation(BaseModel):
    """The conditional mask of a 2D input: withheld under the gate."""

    mask_available: bool
    gate_threshold: float
    mask_reason: str | None = Field(description="Why no mask was returned")
    regions: list[str]
    mask_labels: dict[str, int] = Field(description="Region → its value in the mask PNG")
    area_pixels: dict[str, int] | None
    area_mm2: dict[str, float] | None = Field(
        description="Area in mm² where the input gives its pixel spacing (DICOM, NIfTI)"
    )
    percentage: dict[str, float] | None = Field(description="Region area / image area × 100")
    mask_png_base64: str | None = Field(
        description="8-bit PNG label map in the input's own grid (values: mask_labels)"
    )


class Domain(BaseModel):
    """Whether the input is like the model's training data."""

    score: float | None
    threshold: float | None
    in_domain: bool | None = Field(description="None when no check ran (reason says why)")
    reason: str


class Uncertainty(BaseModel):
    """How sure the model is: MC dropout or test-time augmentation, one distribution."""

    method: str
    views: list[str] = Field(description="Test-time views (identity alone for MC dropout)")
    dropout_samples: int = Field(description="Dropout samples per view (0: dropout off)")
    samples: int = Field(description="Members of the distribution: views × dropout samples")
    score: float | None = Field(description="Case uncertainty score, nats")
    score_definition: str
    review_cutoff: float
    needs_review: bool | None
    tumour_probability_mean: float | None
    tumour_probability_std: float | None
    tumour_mutual_information: float | None = Field(description="Epistemic part, nats")
    tumour_entropy: float | None = Field(description="Total: aleatoric + epistemic, nats")
    tumour_aleatoric: float | None = Field(description="Expected entropy, nats")
    segmentation_aleatoric: float | None = Field(
        description="Mean expected entropy in the mask's neighbourhood, nats"
    )


class Review(BaseModel):
    """The confidence-based review flag of the tumour decision (the band around the
    threshold chosen on validation data; see ``tumorscope.inference.review``)."""

    needs_review: bool | None = Field(description="None when the run has no cut-off")
    confidence: float | None
    confidence_definition: str
    review_confidence: float | None = Field(description="The cut-off chosen on validation")
    target_error: float | None = Field(
        description="Error rate allowed among the decisions not flagged, on validation"
    )
    reason: str


class GradCam(BaseModel):
    """Where the tumour decision looked: a heat map blended on the input."""

    method: str
    target: str
    png_base64: str = Field(description="RGB PNG in the input's own grid")


class SlicePrediction(BaseModel):
    """The answer for one 2D image."""

    kind: Literal["image"] = "image"
    classification: Classification
    segmentation: Segmentation
    uncertainty: Uncertainty | None = None
    gradcam: GradCam | None = None
    domain: Domain
    review: Review
    needs_review: bool = Field(
        description="Out of domain, the decision inside the review band (review), or "
        "(when asked for) uncertainty over its cut-off"
    )
    recommendation: str = Field(description="What was found and whether review is flagged")
    warnings: list[str]
    input_shape: list[int]
    disclaimer: str


class BatchItem(BaseModel):
    """One image of a batch: its prediction or its error."""

    index: int
    ok: bool
    prediction: SlicePrediction | None = None
    error: ErrorBody | None = None


class BatchPrediction(BaseModel):
    """One answer per uploaded image, in upload order."""

    items: list[BatchItem]
    succeeded: int
    failed: int
    disclaimer: str


class SurvivalCurve(BaseModel):
    """A survival curve: ``S(t)`` at each time (a patient's Breslow curve, the cohort's
    Kaplan–Meier estimate)."""

    time_days: list[float] = Field(description="Days, increasing")
    survival: list[float] = Field(description="Survival probability at each time, 0–1")


class Survival(BaseModel):
    """The patient's survival risk."""

    log_hazard: float
    percentile: float | None = Field(description="Position in the training cohort, 0–100")
    survival_curve: SurvivalCurve
    imputed_covariates: list[str]


class VolumePrediction(BaseModel):
    """The answer for one volume."""

    kind: Literal["volume"] = "volume"
    classification: Classification
    probability_aggregation: str
    mask_available: bool
    mask_reason: str | None
    gate_threshold: float
    regions: list[str]
    mask_labels: dict[str, int]
    volumes_ml: dict[str, float]
    mask_url: str | None = Field(
        description="GET it (with the API key) for the mask NIfTI in the input's geometry"
    )
    slice_probabilities: dict[str, float] = Field(description="Canonical axial index → p")
    survival: Survival | None
    domain: Domain
    review: Review
    needs_review: bool = Field(description="Out of domain, or inside the review band")
    recommendation: str
    geometry: dict[str, Any] | None
    warnings: list[str]
    disclaimer: str


class LegacyClassification(BaseModel):
    """The brain prototype's classification fields."""

    predicted_class: int = Field(description="1 tumour, 0 no tumour")
    predicted_label: str
    confidence: float
    tumor_probability: float


class LegacySegmentation(BaseModel):
    """The brain prototype's segmentation fields."""

    mask_available: bool
    tumor_area_pixels: int
    tumor_percentage: float
    mask_base64: str | None = Field(description="PNG, 255 inside the tumour, 0 elsewhere")


class MultitaskPrediction(BaseModel):
    """``/predict_multitask``: the brain prototype's response fields, and ours."""

    classification: LegacyClassification
    segmentation: LegacySegmentation
    gradcam_overlay: str | None
    recommendation: str
    disclaimer: str
    tumorscope: SlicePrediction


class Health(BaseModel):
    """A health check's answer."""

    status: Literal["live", "ready"]


class CohortSurvival(BaseModel):
    """The training cohort's survival, which a patient's predicted curve is read against."""

    estimator: str = Field(description="How cohort_curve was estimated, from which outcomes")
    patients: int = Field(description="Training patients with an outcome")
    events: int = Field(description="Of them, with the event observed (not censored)")
    cohort_curve: SurvivalCurve = Field(
        description="Kaplan–Meier S(t) just after each observed time (1 before the first)"
    )


class ModelInfo(BaseModel):
    """The model card."""

    name: str
    version: str
    backend: str
    profile: str
    parameters: dict[str, int] = Field(description="Parameters per part of the network")
    input: dict[str, Any] = Field(description="The preprocessing spec")
    regions: list[str]
    heads: list[str]
    labels: list[str]
    calibration: dict[str, Any]
    domain_check: bool
    validation_metrics: dict[str, Any] = Field(description="Measured during training")
    report: dict[str, Any] | None = Field(
        description="metrics.json of an evaluate output (--report), with its data"
    )
    survival: CohortSurvival | None = Field(
        description="The training cohort's survival; None when the run stores no outcomes"
    )
    capabilities: dict[str, bool] = Field(
        description="What this backend computes on request: mc_dropout, tta, gradcam"
    )
    export: dict[str, Any] | None = Field(
        description="For an exported run (tumorscope export): its format, graphs, parity "
        "figures, quantisation choices and source run; None for a PyTorch run"
    )
    files_sha256: dict[str, str]
    limits: dict[str, int]
    disclaimer: str
