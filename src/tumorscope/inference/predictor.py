"""``Predictor``: one call from an image, a case folder or a volume to mask, probability, risk.

Everything that shapes a prediction — preprocessing, temperature, threshold, gate,
Breslow baseline, cohort risk quantiles, clinical imputation — comes from the run's
manifest, never from the caller (the gate threshold may be overridden per call).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file

from tumorscope.config import Config, config_from_dict
from tumorscope.data.types import TUMOUR_TYPES, Case, DataError, ImageMeta, LoadedCase
from tumorscope.inference.results import RiskResult, SliceResult, VolumeResult, to_stored
from tumorscope.training.checkpoint import MANIFEST_FILE, MODEL_FILE, read_manifest

if TYPE_CHECKING:
    from tumorscope.data.transforms import PreprocessSpec, VolumeSlices
    from tumorscope.models.multitask import MultiTaskNet

log = logging.getLogger(__name__)

ImageInput = np.ndarray | str | Path
VolumeInput = np.ndarray | str | Path | Case | LoadedCase
NO_SEGMENTATION = "the model has no segmentation head"
# More channels than any model takes (ModelConfig.in_channels <= 16): a 3D array is a volume.
_MAX_CHANNELS = 16


@dataclass
class _Image2D:
    """A 2D input read for the model.

    ``data`` is ``(H, W)`` / ``(C, H, W)`` as given (arrays, PNG/JPEG); ``image`` the first
    channel in the input's own grid. A NIfTI slice is instead ``volume``: a one-slice
    canonical volume cut exactly as training slices are, its singleton axis moved from
    ``axis`` to the last place.
    """

    data: np.ndarray
    label: str
    where: str
    image: np.ndarray
    meta: ImageMeta | None = None
    volume: LoadedCase | None = None
    axis: int = 2
    warnings: list[str] = field(default_factory=list)


class Predictor:
    """Inference on CPU from a trained run.

    Args:
        model: A ``MultiTaskNet`` (put in eval mode).
        cfg: The run's resolved config.
        manifest: The run's manifest (``preprocessing``, ``calibration``, ...).
        batch_size: Slices per forward pass.
    """

    def __init__(
        self, model: MultiTaskNet, cfg: Config, manifest: dict[str, Any], batch_size: int = 16
    ) -> None:
        from tumorscope.data.transforms import PreprocessSpec

        self.model = model.eval()
        self.cfg = cfg
        self.manifest = manifest
        self.spec = PreprocessSpec.from_dict(manifest["preprocessing"])
        self.calibration: dict[str, Any] = manifest.get("calibration") or {}
        self.batch_size = batch_size
        self.regions = list(cfg.model.regions)
        cal = self.calibration
        self.temperature = float(1.0 if cal.get("temperature") is None else cal["temperature"])
        self.threshold = float(0.5 if cal.get("threshold") is None else cal["threshold"])
        gate = cal.get("gate_threshold")
        self.gate_threshold = float(cfg.calibration.gate_threshold if gate is None else gate)
        if not self.temperature > 0:
            raise ValueError(f"calibration: temperature {self.temperature} is not positive")

    @classmethod
    def from_run(cls, run_dir: str | Path, *, batch_size: int = 16) -> Predictor:
        """Load ``model.safetensors`` + ``manifest.json`` (hashes verified, no pickle).

        Raises:
            CheckpointError: Missing or altered files.
            ConfigError: The stored config is invalid.
            DataError: The run has no calibration (training did not finish), or its weights,
                preprocessing or calibration do not fit its config.
        """
        from tumorscope.models.registry import create_model

        run = Path(run_dir)
        manifest = read_manifest(run)
        if "calibration" not in manifest:
            raise DataError(
                run, "manifest has no calibration: not a finished run (train it to the end)"
            )
        cfg = config_from_dict(manifest["config"], source=str(run / MANIFEST_FILE))
        model = create_model(cfg.model)
        try:
            model.load_state_dict(load_file(str(run / MODEL_FILE)))
            return cls(model, cfg, manifest, batch_size=batch_size)
        except (RuntimeError, ValueError, KeyError) as e:
            raise DataError(run / MANIFEST_FILE, f"run cannot be loaded: {e}") from None

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
                threshold 0.5, gate from ``cfg``, no survival baseline).
            seed: Seed of the weight initialisation (the global RNG is left untouched).
            batch_size: Slices per forward pass.
        """
        from tumorscope.data.transforms import PreprocessSpec
        from tumorscope.models.registry import create_model

        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = create_model(cfg.model)
        manifest = {
            "format": "tumorscope-run",
            "untrained": True,
            "config": cfg.to_dict(),
            "preprocessing": PreprocessSpec.from_config(cfg).to_dict(),
            "clinical_columns": [],
            "calibration": {
                "temperature": 1.0,
                "threshold": 0.5,
                "gate_threshold": cfg.calibration.gate_threshold,
                **(calibration or {}),
            },
        }
        return cls(model, cfg, manifest, batch_size=batch_size)

    def save(self, folder: str | Path) -> Path:
        """Write the model and manifest as a new run folder that :meth:`from_run` reads.

        Raises:
            FileExistsError: ``folder`` already holds a manifest (runs are never overwritten).
        """
        from tumorscope.training.checkpoint import save_checkpoint

        out = Path(folder)
        if (out / MANIFEST_FILE).exists():
            raise FileExistsError(f"{out}: already holds a run; refusing to overwrite it")
        manifest = {k: v for k, v in self.manifest.items() if k != "files"}
        save_checkpoint(out, model_state=self.model.state_dict(), manifest=manifest)
        return out

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward_slices(
        self, images: np.ndarray, tasks: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the network on preprocessed slices, ``batch_size`` at a time.

        Args:
            images: ``(N, C, S, S)`` float32.
            tasks: Tasks to run (default: all the model has).

        Returns:
            ``seg_prob (N, R, S, S)``, ``tumour_logit (N,)``, and where present
            ``tumour_type_logits (N, 4)``, ``embedding (N, D)``.
        """
        from tumorscope.models.multitask import pad_to_multiple, unpad

        run_tasks = tuple(tasks) if tasks is not None else tuple(self.model.tasks)
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, images.shape[0], self.batch_size):
            x = torch.from_numpy(
                np.ascontiguousarray(images[start : start + self.batch_size], dtype=np.float32)
            )
            x, pad = pad_to_multiple(x, self.model.size_multiple)
            out = self.model(x, tasks=run_tasks)
            found = {
                "seg_prob": None if out.seg_logits is None else torch.sigmoid(unpad(out.seg_logits, pad)),
                "tumour_logit": None if out.tumour_logit is None else out.tumour_logit.reshape(-1),
                "tumour_type_logits": out.tumour_type_logits,
                "embedding": out.survival_embedding,
            }  # fmt: skip
            for key, value in found.items():
                if value is not None:
                    chunks.setdefault(key, []).append(value.numpy())
        return {k: np.concatenate(v) for k, v in chunks.items()}

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
            self._read_2d(img, names[i] if names else None, i, len(images))
            for i, img in enumerate(images)
        ]
        cuts = [_cut(x, self.spec) for x in inputs]
        out = self.forward_slices(np.stack([c[0] for c in cuts]))
        probs = self.slice_probability(out)
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
                    tumour_type=self._type_probs(out, i),
                    warnings=x.warnings + image_warnings(x.data, side, self.spec),
                    probabilities=seg,
                    gate_threshold=gate,
                    image=x.image,
                    meta=x.meta,
                )
            )
        return results

    def _type_probs(self, out: dict[str, np.ndarray], i: int) -> dict[str, float] | None:
        if "tumour_type_logits" not in out:
            return None
        z = out["tumour_type_logits"][i].astype(np.float64)
        e = np.exp(z - z.max())
        return {t: float(v) for t, v in zip(TUMOUR_TYPES, e / e.sum(), strict=True)}

    def _read_2d(self, img: ImageInput, name: str | None, i: int, n: int) -> _Image2D:
        """Read and check the ``i``-th of ``n`` 2D inputs (``name`` overrides the default)."""
        from tumorscope.data.imagefolder import load_image
        from tumorscope.data.readers import IMAGE_SUFFIXES, is_nifti_path

        n_ch = len(self.spec.channels)
        if isinstance(img, np.ndarray):
            label = name or ("array" if n == 1 else f"array_{i}")
            shape = tuple(img.shape)
            if img.ndim == 4 or (img.ndim == 3 and shape[0] > _MAX_CHANNELS):
                raise DataError(
                    label,
                    f"array of shape {shape} is a 3D volume where a 2D image is expected; "
                    "use predict_volume",
                )
            if img.ndim == 3 and shape[0] not in (1, 3, n_ch):
                raise DataError(
                    label,
                    f"image has {shape[0]} channels; the model takes {n_ch} "
                    f"({', '.join(self.spec.channels)}) or a greyscale (H, W) image",
                )
            if img.ndim not in (2, 3):
                raise DataError(label, f"array of shape {shape} is not (H, W) or (C, H, W)")
            if not np.issubdtype(img.dtype, np.number) or not np.isfinite(img).all():
                raise DataError(label, "image holds NaN, Inf or non-numeric values")
            data = img.astype(np.float32)
            if data.ndim == 2:
                grey = data
            else:  # an RGB array is averaged to grey by preprocessing; show what the model sees
                grey = data.mean(axis=0) if shape[0] == 3 and n_ch != 3 else data[0]
            return _Image2D(data=data, label=label, where=label, image=grey)
        path = Path(img)
        stem = name or _stem(path)
        if not path.exists():
            raise DataError(path, "no such file")
        if path.is_dir():
            raise DataError(path, "is a folder; use predict_volume for case or DICOM folders")
        if is_nifti_path(path):
            return _read_nifti_2d(path, stem, self.spec)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                path, f"unsupported file type {path.suffix!r}: expected PNG, JPEG or NIfTI"
            )
        arr, _ = load_image(path)
        return _Image2D(data=arr, label=stem, where=str(path), image=arr)

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
        loaded, src, name, _ = _load_volume(case, self.spec, source=source, affine=affine)
        return loaded, src, name

    def predict_full(self, image_or_case: Any, **kwargs: Any) -> Any:
        """All heads plus MC-dropout uncertainty and Grad-CAM for a 2D image or a volume.

        A thin front to :func:`tumorscope.inference.uncertainty.predict_full` (keyword
        arguments: ``mc_samples``, ``gradcam``, ``review_cutoff``, ``seed``, ``cam_method``,
        ``clinical``, ``gate_threshold``, ``source``); returns its ``FullResult``.
        """
        from tumorscope.inference.uncertainty import predict_full

        return predict_full(self, image_or_case, **kwargs)

    def predict_volume(
        self,
        case: VolumeInput,
        *,
        source: str | None = None,
        clinical: Mapping[str, float | None] | None = None,
        gate_threshold: float | None = None,
        affine: np.ndarray | None = None,
    ) -> VolumeResult:
        """Predict a whole volume slice by slice inside the brain/body mask.

        Args:
            case: Case folder (BraTS, HECKTOR), DICOM series folder, NIfTI path, array,
                ``Case`` or ``LoadedCase`` (see :meth:`load_volume`).
            source: Layout name when ``case`` is a ``LoadedCase``.
            clinical: Covariates for the survival head; missing ones are imputed with the
                training values stored in the run.
            gate_threshold: Probability under which no mask is returned (default: the run's).
            affine: Affine of an array input.

        Returns:
            :class:`VolumeResult`: masks ``(R, X, Y, Z)`` in the canonical grid of the input,
            ``masks_in_input_geometry()`` in its stored grid, volumes in mL, patient
            probability, risk.
        """
        from tumorscope.data.transforms import preprocess_volume, restore_volume

        gate = self._gate(gate_threshold)
        loaded, src, name, warnings = _load_volume(case, self.spec, source=source, affine=affine)
        if not np.isfinite(loaded.image).all():
            raise DataError(loaded.meta.path, "volume holds NaN or Inf values")
        # A mask that came with a LoadedCase must not steer the slice choice: prediction is blind.
        blind = dataclasses.replace(loaded, mask=None)
        slices = preprocess_volume(blind, self.spec, source=src, all_slices=True)
        shape = tuple(int(s) for s in loaded.image.shape[1:])
        warnings = warnings + volume_warnings(loaded, slices, self.spec)
        ungated = np.zeros((len(self.regions), *shape), dtype=np.uint8)
        p, probs, risk, reason = 0.0, np.zeros(0), None, "no slice inside the brain/body mask"
        tasks = self.model.tasks
        if slices.slice_index.size:
            out = self.forward_slices(slices.images)
            probs = self.slice_probability(out)
            p = float(probs.max())
            reason = f"patient tumour probability {p:.3f} is under the gate threshold {gate:.2f}"
            if "seg_prob" in out:
                ungated = (restore_volume(out["seg_prob"], slices, shape) >= 0.5).astype(np.uint8)
            if "embedding" in out:
                used = self._survival_slices(slices, probs, shape[2])
                risk = self.risk(out["embedding"][used], clinical)
                risk.slices_used = [int(z) for z in slices.slice_index[used]]
        gated = p < gate or slices.slice_index.size == 0
        log.debug("%s: %d slices, p=%.3f, gated=%s", name, slices.slice_index.size, p, gated)
        masks = np.zeros_like(ungated) if gated else ungated
        voxel_ml = abs(float(np.linalg.det(loaded.meta.affine[:3, :3]))) / 1000.0
        return VolumeResult(
            name=name,
            tumour_probability=p,
            tumour=p >= self.threshold,
            threshold=self.threshold,
            masks=masks,
            masks_ungated=ungated,
            gated=gated,
            mask_reason=reason if gated else (None if "segmentation" in tasks else NO_SEGMENTATION),
            regions=self.regions,
            volumes_ml={r: float(masks[i].sum()) * voxel_ml for i, r in enumerate(self.regions)},
            risk=risk,
            slice_probabilities={
                int(z): float(q) for z, q in zip(slices.slice_index, probs, strict=True)
            },
            warnings=warnings,
            meta=loaded.meta,
            gate_threshold=gate,
        )

    def _survival_slices(self, slices: VolumeSlices, probs: np.ndarray, depth: int) -> np.ndarray:
        """Positions (into ``slices``) of the slices the survival head pools.

        Training pooled ``slices_per_patient`` slices per patient, ``tumour_slice_fraction``
        of them tumour slices; the same rule is applied here with the model's own slice
        decisions (calibrated probability >= threshold) in place of the unknown true mask,
        so that risks are on the scale of the cohort quantiles and baseline hazard.
        """
        from tumorscope.data.transforms import select_slices

        fg = np.zeros(depth, dtype=np.float32)
        tumour = np.zeros(depth, dtype=bool)
        fg[slices.slice_index] = slices.foreground
        tumour[slices.slice_index] = probs >= self.threshold
        chosen = select_slices(fg, tumour, self.spec)
        return np.nonzero(np.isin(slices.slice_index, chosen))[0]

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
        from tumorscope.data.imputation import ClinicalImputer
        from tumorscope.metrics.survival import survival_curves
        from tumorscope.training.loop import survival_head

        cols: list[str] = list(self.manifest.get("clinical_columns") or [])
        unknown = sorted(set(clinical or {}) - set(cols))
        if unknown:
            raise ValueError(f"clinical: unknown covariate(s) {unknown}; the run uses {cols}")
        clin, imputed = None, []
        if cols:
            imputer = ClinicalImputer.from_dict(self.calibration.get("imputation") or {})
            if list(imputer.columns) != cols:
                raise ValueError(f"run manifest: imputation columns do not match {cols}")
            row = dict(clinical or {})
            imputed = [c for c in cols if row.get(c) is None]
            clin = torch.from_numpy(imputer.transform(row)[None])
        with torch.no_grad():
            emb = torch.from_numpy(np.ascontiguousarray(embedding, dtype=np.float32))
            index = torch.zeros(emb.shape[0], dtype=torch.long)
            lh = float(survival_head(self.model)(emb, index, clin)[0])
        q = self.calibration.get("risk_quantiles")
        percentile = float(np.interp(lh, q["value"], np.asarray(q["q"]) * 100)) if q else None
        base = self.calibration.get("baseline_hazard")
        times: list[float] = []
        surv: list[float] = []
        if base:
            times = [float(t) for t in base["times"]]
            curve = survival_curves([lh], (base["times"], base["cumulative"]), times)[0]
            surv = curve.tolist()
        return RiskResult(
            log_hazard=lh, percentile=percentile, survival_times=times, survival=surv,
            imputed=imputed,
        )  # fmt: skip

    def write_mask(self, result: VolumeResult, path: str | Path) -> Path:
        """Write ``result.masks`` as one label volume in the input's exact geometry.

        Region ``i`` gets label ``i + 1`` (later regions overwrite earlier ones); the file
        has the input's stored shape and affine (qform and sform).
        """
        from tumorscope.data.readers import write_like

        if result.meta is None:
            raise ValueError(f"{result.name}: result has no input geometry to write the mask in")
        return write_like(result.label_map(), result.meta, path)


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


# --------------------------------------------------------------------------- 2D inputs


def _read_nifti_2d(path: Path, label: str, spec: PreprocessSpec) -> _Image2D:
    """Read a 2D NIfTI (``(X, Y)`` or a volume with one singleton axis) as one slice."""
    import nibabel as nib

    from tumorscope.data.errors import DimensionError
    from tumorscope.data.readers import read_nifti, to_canonical

    try:
        canon, meta = read_nifti(path)
    except DimensionError:
        # The readers take 3D files only; a pure 2D file is read as (X, Y, 1) here.
        try:
            img = nib.load(path)
            raw = np.asanyarray(img.dataobj)  # type: ignore[attr-defined]
            affine = np.asarray(img.affine, dtype=np.float64)  # type: ignore[attr-defined]
        except Exception as e:  # nibabel raises many types on odd files; report, never crash
            raise DataError(path, f"NIfTI cannot be read ({type(e).__name__}: {e})") from None
        if raw.ndim != 2:
            raise DataError(
                path, f"expected a 2D image, got {raw.ndim} dimensions {raw.shape}"
            ) from None
        if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-12:
            raise DataError(path, "voxel-to-world affine is singular") from None
        stored = np.asarray(raw, dtype=np.float32)[:, :, None]
        canon, canon_affine = to_canonical(stored, affine)
        meta = ImageMeta(
            path=path,
            shape=tuple(int(s) for s in canon.shape),
            spacing=tuple(float(v) for v in np.sqrt((canon_affine[:3, :3] ** 2).sum(0))),
            affine=canon_affine,
            original_affine=affine,
            original_shape=stored.shape,
        )
    if not np.isfinite(canon).all():
        raise DataError(path, "image holds NaN or Inf values")
    singles = [k for k, s in enumerate(canon.shape) if s == 1]
    if not singles:
        raise DataError(
            path, f"expected a 2D image, got a 3D volume of shape {canon.shape}; use predict_volume"
        )
    axis = 2 if 2 in singles else singles[0]
    plane = np.moveaxis(np.asarray(canon, dtype=np.float32), axis, 2)
    volume, warnings = _single_channel(plane, meta, spec)
    if axis != 2:
        warnings.append(f"slice is not axial (stored orientation {''.join(meta.orientation)})")
    stored = to_stored(canon, meta)
    return _Image2D(
        data=plane[:, :, 0],
        label=label,
        where=str(path),
        image=stored.reshape(_plane_shape(stored.shape)),
        meta=meta,
        volume=volume,
        axis=axis,
        warnings=warnings,
    )


def _plane_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Stored shape without singleton axes (kept 2D: the first axes when more are 1)."""
    kept = tuple(s for s in shape if s != 1)
    return kept if len(kept) == 2 else tuple(shape[:2])


def _cut(
    x: _Image2D, spec: PreprocessSpec
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], int]:
    """Model input ``(C, S, S)`` of a 2D input, the map of ``(R, S, S)`` outputs back to the
    input's grid ``(R, H, W)``, and the side in pixels of the square crop."""
    from tumorscope.data.transforms import (
        prepare_image,
        preprocess_volume,
        restore_image_mask,
        restore_volume,
    )

    if x.volume is None:
        prep = prepare_image(x.data, spec, path=x.where)
        return prep.image, lambda seg: restore_image_mask(seg, prep.restore), prep.restore.box[2]
    # A NIfTI slice is cut as a one-slice volume, so it matches training slices exactly.
    one = dataclasses.replace(spec, min_foreground_fraction=0.0)
    slices = preprocess_volume(x.volume, one, source="volume", all_slices=True)
    meta, axis, shape = x.meta, x.axis, x.volume.image.shape[1:]

    def back(seg: np.ndarray) -> np.ndarray:
        canon = np.moveaxis(restore_volume(seg[None], slices, shape), 3, axis + 1)
        stored = canon if meta is None else to_stored(canon, meta)
        return stored.reshape(seg.shape[0], *_plane_shape(stored.shape[1:]))

    return slices.images[0], back, slices.restore.box[2]


# --------------------------------------------------------------------------- 3D inputs


def _load_volume(
    case: VolumeInput, spec: PreprocessSpec, *, source: str | None, affine: np.ndarray | None
) -> tuple[LoadedCase, str, str, list[str]]:
    """Read any volume input into a canonical :class:`LoadedCase` with the spec's channels.

    Returns:
        ``(loaded, source layout, name, warnings)``.
    """
    from tumorscope.data import brats
    from tumorscope.data.layout import discover, load_case
    from tumorscope.data.readers import is_nifti_path

    channels, missing = spec.channels, spec.missing_channels
    if isinstance(case, LoadedCase):
        if case.image.ndim != 4 or case.image.shape[0] != len(channels):
            raise DataError(
                case.meta.path,
                f"image shape {case.image.shape} is not (C={len(channels)}, X, Y, Z)",
            )
        return case, source or "volume", _stem(case.meta.path), []
    if isinstance(case, np.ndarray):
        loaded, notes = _array_volume(case, spec, affine)
        return loaded, source or "volume", "array", notes
    if isinstance(case, Case):
        return (
            load_case(case, channels, missing=missing, with_mask=False),
            case.source,
            case.patient_id,
            [],
        )
    path = Path(case)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_file():
        if not is_nifti_path(path):
            raise DataError(path, "a volume must be a NIfTI file, a case folder or a DICOM folder")
        loaded, notes = _nifti_volume(path, spec)
        return loaded, source or "volume", _stem(path), notes
    if brats.is_case_folder(path):
        c, problems = brats.read_case(path)
        if c is None:
            raise problems[0] if problems else DataError(path, "not a readable BraTS case folder")
        return load_case(c, channels, missing=missing, with_mask=False), c.source, path.name, []
    ct, pet = sorted(path.glob("*__CT.nii.gz")), sorted(path.glob("*__PT.nii.gz"))
    if len(ct) == 1 and len(pet) == 1:
        pid = ct[0].name[: -len("__CT.nii.gz")]
        c = Case(patient_id=pid, source="hecktor", channels={"ct": ct[0], "pet": pet[0]})
        return load_case(c, channels, missing=missing, with_mask=False), "hecktor", path.name, []
    index = discover([path])
    cases = index.cases
    warnings: list[str] = []
    if cases and all(c.source == "dicom" for c in cases):
        found = {ch: p for c in cases for ch, p in c.channels.items()}
        if len(cases) > 1 and len(found) < len(cases):
            raise DataError(
                path, f"{len(cases)} DICOM series of the same modality; expected one per channel"
            )
        if len(found) == 1 and len(channels) == 1 and channels[0] not in found:
            modality = next(iter(found))
            warnings.append(
                f"DICOM {modality.upper()} series taken as the model's {channels[0]} channel"
            )
            found = {channels[0]: next(iter(found.values()))}
        cases = [Case(patient_id=path.name, source="dicom", channels=found)]
    if len(cases) != 1:
        what = f"{len(cases)} cases" if cases else "no case"
        raise DataError(
            path, f"expected one case folder (BraTS, HECKTOR or DICOM series), found {what}"
        )
    return (
        load_case(cases[0], channels, missing=missing, with_mask=False),
        cases[0].source,
        path.name,
        warnings,
    )


def _single_channel(
    arr: np.ndarray, meta: ImageMeta, spec: PreprocessSpec
) -> tuple[LoadedCase, list[str]]:
    """A one-channel canonical volume placed into the spec's channels."""
    from tumorscope.data.transforms import IMAGE_CHANNEL

    channels = spec.channels
    if len(channels) == 1:
        return LoadedCase(arr[None].astype(np.float32), None, meta, (True,)), []
    if spec.missing_channels != "zero_fill" or IMAGE_CHANNEL not in channels:
        raise DataError(
            meta.path,
            f"volume has 1 channel; the model takes {len(channels)} ({', '.join(channels)}): "
            "pass a case folder",
        )
    k = channels.index(IMAGE_CHANNEL)
    image = np.zeros((len(channels), *arr.shape), dtype=np.float32)
    image[k] = arr
    present = tuple(i == k for i in range(len(channels)))
    return LoadedCase(image, None, meta, present), [f"single volume taken as {IMAGE_CHANNEL}"]


def _nifti_volume(path: Path, spec: PreprocessSpec) -> tuple[LoadedCase, list[str]]:
    from tumorscope.data.readers import read_nifti

    arr, meta = read_nifti(path)
    return _single_channel(np.asarray(arr, dtype=np.float32), meta, spec)


def _array_volume(
    array: np.ndarray, spec: PreprocessSpec, affine: np.ndarray | None
) -> tuple[LoadedCase, list[str]]:
    """``(X, Y, Z)`` / ``(C, X, Y, Z)`` array with a stored-orientation affine → canonical."""
    from nibabel.affines import voxel_sizes
    from nibabel.orientations import aff2axcodes

    from tumorscope.data.readers import to_canonical

    n_ch = len(spec.channels)
    where = Path("array")
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[0] not in (1, n_ch):
        raise DataError(
            where,
            f"volume of shape {array.shape} is not (X, Y, Z) or (C={n_ch}, X, Y, Z)",
        )
    if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise DataError(where, "volume holds NaN, Inf or non-numeric values")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or abs(float(np.linalg.det(aff[:3, :3]))) < 1e-12:
        raise DataError(where, f"affine must be a non-singular 4×4 matrix, got {aff.tolist()}")
    canon = [to_canonical(np.asarray(c, dtype=np.float32), aff) for c in a]
    canon_affine = canon[0][1]
    meta = ImageMeta(
        path=where,
        shape=tuple(int(s) for s in canon[0][0].shape),
        spacing=tuple(float(v) for v in voxel_sizes(canon_affine)),
        affine=canon_affine,
        orientation=tuple(str(c) for c in aff2axcodes(aff)),
        original_affine=aff,
        original_shape=tuple(int(s) for s in a.shape[1:]),
    )
    if a.shape[0] == 1:
        return _single_channel(canon[0][0], meta, spec)
    image = np.stack([c[0] for c in canon]).astype(np.float32)
    return LoadedCase(image, None, meta, (True,) * n_ch), []


# --------------------------------------------------------------------------- domain check
# The manifest holds no training-cohort intensity/spacing statistics, so "far from training"
# is judged against what the spec implies (channels, profile, crop, input size) and ranges
# any scan of the profile falls in. In-plane spacing (mm) per profile:
PLAUSIBLE_SPACING_MM: dict[str, tuple[float, float]] = {
    "brain-mri": (0.3, 6.0),
    "petct": (0.3, 8.0),
}
# In-plane extent (mm) of the brain/body foreground: a brain is ~120–200 mm across.
PLAUSIBLE_EXTENT_MM: dict[str, tuple[float, float]] = {
    "brain-mri": (80.0, 280.0),
    "petct": (40.0, 700.0),
}
MAX_SLICE_THICKNESS_MM = 10.0
MAX_UPSAMPLING = 4.0
MIN_DISTINCT_VALUES = 8
MAX_NEGATIVE_FRACTION = 0.05
_MRI_CHANNELS = frozenset({"flair", "t1", "t1ce", "t2"})


def _sample(x: np.ndarray, n: int = 200_000) -> np.ndarray:
    flat = np.asarray(x).reshape(-1)
    return flat[:: max(1, flat.size // n)]


def channel_warnings(name: str, values: np.ndarray) -> list[str]:
    """Intensity checks of one channel's raw values against its modality.

    Args:
        name: Canonical channel name (``flair``, ``ct``, ``pet``, ...).
        values: The channel's intensities, any shape.

    Returns:
        Human-readable warnings (empty when nothing is off).
    """
    v = _sample(values).astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi == lo:
        return [f"channel {name} is constant ({lo:g}): nothing to see"]
    out = []
    distinct = np.unique(v).size
    if distinct <= MIN_DISTINCT_VALUES:
        out.append(
            f"channel {name} has only {distinct} distinct values: a label mask, not an image?"
        )
    negative = float((v < 0).mean())
    if name in _MRI_CHANNELS and negative > MAX_NEGATIVE_FRACTION:
        out.append(
            f"channel {name}: {negative:.0%} of values are negative; MRI magnitudes are not "
            "(already normalised, or not MRI?)"
        )
    if name == "ct" and (lo > -100.0 or hi < 100.0):
        out.append(f"channel ct spans [{lo:g}, {hi:g}]: does not look like Hounsfield units")
    if name == "pet" and negative > MAX_NEGATIVE_FRACTION:
        out.append(f"channel pet: {negative:.0%} of values are negative; SUV/activity are not")
    return out


def image_warnings(data: np.ndarray, side: int, spec: PreprocessSpec) -> list[str]:
    """Domain check of one 2D input (``(H, W)`` or ``(C, H, W)``; ``side`` of its square crop)."""
    from tumorscope.data.transforms import IMAGE_CHANNEL

    if data.ndim == 2 or (data.shape[0] != len(spec.channels)):
        grey = data if data.ndim == 2 else data.mean(axis=0)
        out = channel_warnings(IMAGE_CHANNEL, grey)
        absent = [c for c in spec.channels if c != IMAGE_CHANNEL]
        if absent:
            out.append(f"greyscale image: channels {absent} zero-filled")
    else:
        out = [w for c, name in enumerate(spec.channels) for w in channel_warnings(name, data[c])]
    if side * MAX_UPSAMPLING < spec.image_size:
        out.append(
            f"foreground is {side} px across, upsampled more than {MAX_UPSAMPLING:g}× "
            f"to the model's {spec.image_size} px input"
        )
    return out


def volume_warnings(loaded: LoadedCase, slices: VolumeSlices, spec: PreprocessSpec) -> list[str]:
    """Domain check of a volume: spacing, foreground extent, channels, intensities, slices."""
    out = []
    sx, sy, sz = (float(s) for s in loaded.meta.spacing[:3])
    lo, hi = PLAUSIBLE_SPACING_MM.get(spec.profile, (0.1, 10.0))
    if not (lo <= sx <= hi and lo <= sy <= hi):
        out.append(f"in-plane spacing ({sx:.3g}, {sy:.3g}) mm is outside {lo:g}–{hi:g} mm")
    if sz > MAX_SLICE_THICKNESS_MM:
        out.append(f"slice spacing {sz:.3g} mm is above {MAX_SLICE_THICKNESS_MM:g} mm")
    if slices.slice_index.size:
        extent = slices.restore.box[2] / (1.0 + spec.crop_margin) * (sx + sy) / 2.0
        lo, hi = PLAUSIBLE_EXTENT_MM.get(spec.profile, (0.0, np.inf))
        if not lo <= extent <= hi:
            out.append(
                f"foreground is {extent:.0f} mm across, outside the {lo:g}–{hi:g} mm of a "
                f"{spec.profile} scan (wrong spacing in the header, or another body part?)"
            )
    present = loaded.channel_present or (True,) * len(spec.channels)
    for c, name in enumerate(spec.channels):
        if present[c]:
            out.extend(channel_warnings(name, loaded.image[c]))
        else:
            out.append(f"channel {name} is absent and zero-filled")
    if slices.slice_index.size < 3:
        out.append(f"only {slices.slice_index.size} slice(s) inside the brain/body mask")
    return out
