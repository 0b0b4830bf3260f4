"""``Predictor``: one call from an image, a case folder or a volume to mask, probability, risk.

Everything that shapes a prediction — preprocessing, temperature, threshold, gate, volume
post-processing, Breslow baseline, cohort risk quantiles, clinical imputation — comes from
the run's manifest, never from the caller (the gate threshold and the post-processing may
be overridden per call).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tumorscope.config import Config
from tumorscope.data.readers import write_like
from tumorscope.data.spec import PreprocessSpec
from tumorscope.data.types import DataError, LoadedCase
from tumorscope.inference.domain import image_warnings
from tumorscope.inference.full import FullResult, predict_full
from tumorscope.inference.inputs import ImageInput, VolumeInput, cut, load_volume, read_2d
from tumorscope.inference.ood import DomainCheck
from tumorscope.inference.results import RiskResult, SliceResult, VolumeResult, type_probabilities
from tumorscope.inference.review import review_decision
from tumorscope.inference.risk import patient_risk, survival_model_of
from tumorscope.inference.volume import NO_SEGMENTATION, predict_volume
from tumorscope.models.multitask import MultiTaskNet
from tumorscope.models.registry import create_model
from tumorscope.runs import Backend, Calibration, LoadedRun, RunManifest, TorchBackend, load_run
from tumorscope.runs.files import DOMAIN_FILE, MANIFEST_FILE, write_checkpoint
from tumorscope.runs.onnx import OnnxBackend


class Predictor:
    """Inference on CPU from a trained run.

    Args:
        model: A ``MultiTaskNet`` (put in eval mode) or any :class:`~tumorscope.runs.Backend`.
        cfg: The run's resolved config.
        manifest: The run's manifest (typed, or its JSON form).
        batch_size: Slices per forward pass (for a ``MultiTaskNet``).
        calibration: Calibration to predict with (default: the manifest's).
        domain: The run's out-of-domain check (default: none, every result says so).

    Raises:
        DataError: neither ``calibration`` nor the manifest holds one.
        ValueError: a calibration value out of range.
    """

    def __init__(
        self,
        model: MultiTaskNet | Backend,
        cfg: Config,
        manifest: RunManifest | Mapping[str, Any],
        batch_size: int = 16,
        *,
        calibration: Calibration | None = None,
        domain: DomainCheck | None = None,
    ) -> None:
        self.backend: Backend = (
            TorchBackend(model, batch_size) if isinstance(model, MultiTaskNet) else model
        )
        if not isinstance(manifest, RunManifest):
            manifest = RunManifest.from_dict(manifest)
        cal = calibration if calibration is not None else manifest.calibration
        if cal is None:
            raise DataError("<manifest>", "manifest has no calibration: not a finished run")
        self.manifest = manifest.replace(calibration=cal)
        self.calibration: Calibration = cal
        self.cfg = cfg
        self.spec = PreprocessSpec.from_dict(dict(manifest.preprocessing))
        self.batch_size = batch_size
        self.regions = list(cfg.model.regions)
        self.temperature = cal.temperature
        self.threshold = cal.threshold
        self.gate_threshold = cal.gate_threshold
        self.slice_gate = cal.slice_gate
        self.min_component_ml = cal.min_component_ml
        self.domain = domain if domain is not None else DomainCheck(None)
        self.survival = survival_model_of(cal)

    @property
    def clinical_covariates(self) -> list[str]:
        """Clinical covariates the run's risk reads (survival model and survival head)."""
        cols = list(self.manifest.clinical_columns)
        extra = [] if self.survival is None else list(self.survival.design.clinical)
        return cols + [c for c in extra if c not in cols]

    @property
    def model(self) -> MultiTaskNet:
        """The PyTorch network (Grad-CAM needs it).

        Raises:
            DataError: the backend is not a PyTorch one (an export names its source run).
        """
        if not isinstance(self.backend, TorchBackend):
            export = self.manifest.export or {}
            source = (export.get("source") or {}).get("run", "the run it was exported from")
            raise DataError(
                "<export>" if export else "<predictor>",
                "Grad-CAM needs the PyTorch network and this is an ONNX export (its graphs "
                f"carry no gradients): ask for Grad-CAM with {source}",
            )
        return self.backend.model

    @property
    def network(self) -> MultiTaskNet | OnnxBackend:
        """What MC dropout and test-time augmentation sample: the PyTorch network, or an
        export's graphs (the tail graph takes the dropout masks as inputs).

        Raises:
            DataError: a backend that can do neither.
        """
        if isinstance(self.backend, OnnxBackend):
            return self.backend
        return self.model

    @classmethod
    def from_loaded(cls, run: LoadedRun, *, batch_size: int = 16) -> Predictor:
        """A predictor over what :func:`tumorscope.runs.load_run` returned.

        Raises:
            DataError: The run has no calibration (training did not finish).
        """
        if run.calibration is None:
            raise DataError(
                run.path, "manifest has no calibration: not a finished run (train it to the end)"
            )
        c, d = run.calibration, DomainCheck(run.domain)
        return cls(run.backend, run.config, run.manifest, batch_size, calibration=c, domain=d)

    @classmethod
    def from_run(cls, run_dir: str | Path, *, batch_size: int = 16) -> Predictor:
        """Load a run folder or a stage checkpoint through :func:`tumorscope.runs.load_run`
        (hashes verified, no pickle).

        Raises:
            CheckpointError: Missing or altered files.
            ConfigError: The stored config is invalid.
            DataError: The run has no calibration (training did not finish), or its weights,
                preprocessing or calibration do not fit its config.
        """
        return cls.from_loaded(load_run(run_dir, batch_size=batch_size), batch_size=batch_size)

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        calibration: Mapping[str, Any] | None = None,
        seed: int = 0,
        batch_size: int = 16,
    ) -> Predictor:
        """An untrained predictor (seeded weights) for benchmarks and tests.

        Args:
            cfg: Config giving the model and preprocessing.
            calibration: Entries overriding the identity calibration (temperature 1,
                threshold 0.5, gate and post-processing from ``cfg``, no survival baseline).
            seed: Seed of the weight initialisation (the global RNG is left untouched).
            batch_size: Slices per forward pass.
        """
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = create_model(cfg.model)
        cal = Calibration.from_dict(calibration or {}, config=dataclasses.asdict(cfg.calibration))
        manifest = RunManifest(
            config=cfg.to_dict(),
            preprocessing=PreprocessSpec.from_config(cfg).to_dict(),
            heads=tuple(cfg.model.heads),
            regions=tuple(cfg.model.regions),
            channels=tuple(cfg.data.channels),
            calibration=cal,
            extra={"untrained": True},
        )
        return cls(model, cfg, manifest, batch_size=batch_size)

    def save(self, folder: str | Path) -> Path:
        """Write the model, manifest and domain model (:data:`DOMAIN_FILE`, when the
        predictor has one) as a new run folder that :meth:`from_run` reads; the manifest's
        ``files`` hashes are those of the files written.

        Raises:
            FileExistsError: ``folder`` already holds a manifest (runs are never overwritten).
        """
        out = Path(folder)
        if (out / MANIFEST_FILE).exists():
            raise FileExistsError(f"{out}: already holds a run; refusing to overwrite it")
        manifest = self.manifest.replace(files={}).to_dict()
        stats = self.domain.stats
        files = None if stats is None else {DOMAIN_FILE: stats.to_tensors()}
        state = self.model.state_dict()
        write_checkpoint(out, model_state=state, manifest=manifest, tensor_files=files)
        return out

    # ------------------------------------------------------------------ forward
    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the network on preprocessed slices (see :meth:`Backend.forward_slices`).

        Args:
            images: ``(N, C, S, S)`` float32.
            tasks: Tasks to run (default: all the model has).

        Returns:
            ``seg_prob (N, R, S, S)``, ``tumour_logit (N,)``, and where present
            ``tumour_type_logits (N, 4)``, ``embedding (N, D)``, ``domain_features (N, F)``.
        """
        return self.domain.forward(self.backend, images, tasks)

    def calibrated_probability(self, logit: np.ndarray) -> np.ndarray:
        """Temperature-scaled sigmoid ``σ(z / T)`` of tumour logits (float64)."""
        z = np.asarray(logit, dtype=np.float64) / self.temperature
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def slice_probability(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(N,)`` calibrated tumour probability per slice from :meth:`forward_slices` output.

        A model without a ``tumour`` head (a segmentation-only baseline) gets the largest
        pixel probability of its tumour region instead, the usual proxy.
        """
        if "tumour_logit" in out:
            return self.calibrated_probability(out["tumour_logit"])
        if "seg_prob" not in out:
            raise ValueError("the model has neither a tumour head nor a segmentation head")
        region = (
            self.regions.index(self.spec.tumour_region)
            if self.spec.tumour_region in self.regions
            else 0
        )
        return np.asarray(out["seg_prob"][:, region].max(axis=(1, 2)), dtype=np.float64)

    def _gate(self, gate_threshold: float | None) -> float:
        gate = self.gate_threshold if gate_threshold is None else float(gate_threshold)
        if not 0.0 <= gate <= 1.0:
            raise ValueError(f"gate_threshold: {gate} is not a probability in [0, 1]")
        return gate

    # ------------------------------------------------------------------ 2D
    def predict(
        self, image: ImageInput, *, name: str | None = None, gate_threshold: float | None = None
    ) -> SliceResult:
        """Predict one 2D image (see :meth:`predict_batch`)."""
        names = [name] if name else None
        return self.predict_batch([image], names=names, gate_threshold=gate_threshold)[0]

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        *,
        names: Sequence[str] | None = None,
        gate_threshold: float | None = None,
    ) -> list[SliceResult]:
        """Predict several 2D images in batched forward passes.

        Args:
            images: Arrays ``(H, W)`` / ``(C, H, W)`` (C = 1, 3 (averaged to grey) or the
                model's channel count), PNG/JPEG paths or 2D NIfTI paths (``(X, Y)`` or
                ``(X, Y, 1)``).
            names: Result names (default: file stems, ``array`` / ``array_<i>``).
            gate_threshold: Probability under which no mask is returned (default: the run's).

        Returns:
            One :class:`SliceResult` per image; masks ``(R, H, W)`` in each input's own grid.

        Raises:
            DataError: An unreadable or invalid input, naming it and the fault.
            ValueError: A gate threshold outside [0, 1].
        """
        gate = self._gate(gate_threshold)
        if names is not None and len(names) != len(images):
            raise ValueError(f"names: {len(names)} names for {len(images)} images")
        if not images:
            return []
        inputs = [
            read_2d(img, names[i] if names else None, i, len(images), self.spec)
            for i, img in enumerate(images)
        ]
        cuts = [cut(x, self.spec) for x in inputs]
        out = self.forward_slices(np.stack([c[0] for c in cuts]))
        probs, domains = self.slice_probability(out), self.domain.images(out, len(inputs))
        results = []
        for i, (x, (_, back, side)) in enumerate(zip(inputs, cuts, strict=True)):
            p = float(probs[i])
            seg = back(out["seg_prob"][i]) if "seg_prob" in out else None
            gated = p < gate
            results.append(
                SliceResult(
                    name=x.label,
                    tumour_probability=p,
                    tumour=p >= self.threshold,
                    threshold=self.threshold,
                    mask=None if gated or seg is None else (seg >= 0.5).astype(np.uint8),
                    mask_reason=(
                        f"tumour probability {p:.3f} is under the gate threshold {gate:.2f}"
                        if gated
                        else (NO_SEGMENTATION if seg is None else None)
                    ),
                    regions=self.regions,
                    tumour_type=type_probabilities(out, i),
                    warnings=x.warnings + image_warnings(x.data, side, self.spec),
                    probabilities=seg,
                    gate_threshold=gate,
                    image=x.image,
                    meta=x.meta,
                    domain=domains[i],
                    review=review_decision(p, self.threshold, self.calibration),
                )
            )
        return results

    # ------------------------------------------------------------------ 3D
    def load_volume(
        self, case: VolumeInput, *, source: str | None = None, affine: np.ndarray | None = None
    ) -> tuple[LoadedCase, str, str]:
        """Read a case folder, DICOM folder, NIfTI file, array, ``Case`` or ``LoadedCase``.

        Args:
            case: The volume. Arrays are ``(X, Y, Z)`` or ``(C, X, Y, Z)`` with ``affine``.
            source: Layout name (``brats``, ``hecktor``, ...) for a ``LoadedCase``.
            affine: 4×4 voxel-to-world affine of an array input (default identity, 1 mm).

        Returns:
            ``(loaded case in canonical orientation, source layout, name)``.

        Raises:
            DataError: Unreadable input or channels that do not match the model.
        """
        loaded, src, name, _ = load_volume(case, self.spec, source=source, affine=affine)
        return loaded, src, name

    def predict_full(self, image_or_case: ImageInput | VolumeInput, **kwargs: Any) -> FullResult:
        """All heads plus MC-dropout uncertainty and Grad-CAM for a 2D image or a volume.

        A thin front to :func:`tumorscope.inference.full.predict_full` (keyword
        arguments: ``mc_samples``, ``gradcam``, ``review_cutoff``, ``seed``, ``cam_method``,
        ``clinical``, ``gate_threshold``, ``source``, ``slice_gate``, ``min_component_ml``).
        """
        return predict_full(self, image_or_case, **kwargs)

    def predict_volume(
        self,
        case: VolumeInput,
        *,
        source: str | None = None,
        clinical: Mapping[str, float | None] | None = None,
        gate_threshold: float | None = None,
        affine: np.ndarray | None = None,
        slice_gate: bool | None = None,
        min_component_ml: float | None = None,
    ) -> VolumeResult:
        """Predict a whole volume slice by slice inside the brain/body mask.

        ``masks`` are the thresholded network output after the patient gate and the
        post-processing of :func:`~tumorscope.inference.postprocess.postprocess_masks`
        (slices under the gate zeroed, 3D components under ``min_component_ml`` removed);
        ``masks_ungated`` keep the raw thresholded output. Slices outside the brain/body
        mask are not predicted and count as probability 0.

        Args:
            case: Case folder (BraTS, HECKTOR), DICOM series folder, NIfTI path, array,
                ``Case`` or ``LoadedCase`` (see :meth:`load_volume`).
            source: Layout name when ``case`` is a ``LoadedCase``.
            clinical: Covariates for the survival head; missing ones are imputed with the
                training values stored in the run.
            gate_threshold: Probability under which no mask is returned, and under which
                a slice is zeroed (default: the run's).
            affine: Affine of an array input.
            slice_gate: Zero the slices under the gate (default: the run's).
            min_component_ml: Remove 3D components smaller than this, in mL (default: the
                run's; 0 keeps all).

        Returns:
            :class:`VolumeResult`: masks ``(R, X, Y, Z)`` in the canonical grid of the input,
            ``masks_in_input_geometry()`` in its stored grid, volumes in mL, patient
            probability, risk, and what the post-processing did.

        Raises:
            DataError: Unreadable input, or one holding NaN or Inf.
            ValueError: A gate threshold outside [0, 1] or a negative ``min_component_ml``.
        """
        return predict_volume(
            self,
            case,
            source=source,
            clinical=clinical,
            gate=self._gate(gate_threshold),
            affine=affine,
            slice_gate=self.slice_gate if slice_gate is None else bool(slice_gate),
            min_component_ml=(
                self.min_component_ml if min_component_ml is None else float(min_component_ml)
            ),
        )

    def risk(
        self, embedding: np.ndarray, clinical: Mapping[str, float | None] | None = None
    ) -> RiskResult:
        """Patient risk from the per-slice survival embeddings of one patient.

        Args:
            embedding: ``(N, D)`` embeddings of the patient's slices.
            clinical: Covariate name → value (None or absent: imputed from the run).

        Returns:
            :class:`RiskResult` (log-hazard, cohort percentile, Breslow survival curve).

        Raises:
            ValueError: An unknown covariate name.
        """
        return patient_risk(
            self.backend, self.calibration, self.manifest.clinical_columns, embedding, clinical
        )

    def write_mask(self, result: VolumeResult, path: str | Path) -> Path:
        """Write ``result.masks`` as one label volume in the input's exact geometry.

        Region ``i`` gets label ``i + 1`` (later regions overwrite earlier ones); the file
        has the input's stored shape and affine (qform and sform).
        """
        if result.meta is None:
            raise ValueError(f"{result.name}: result has no input geometry to write the mask in")
        return write_like(result.label_map(), result.meta, path)
