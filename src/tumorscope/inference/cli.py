"""``tumorscope predict``: predict each input and write its JSON, mask or overlay.

For each input named ``<name>`` (a file's stem or a folder's name) it always writes
``<out>/<name>.json``; for volumes always ``<out>/<name>_mask.nii.gz`` in the input's
exact geometry (all zero when the conditional gate withheld the mask, as the JSON says);
for 2D inputs ``<out>/<name>_overlay.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tumorscope.data.types import DataError
from tumorscope.inference.inputs import is_2d_input
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import SliceResult, VolumeResult

log = logging.getLogger(__name__)


def input_name(path: Path) -> str:
    """``<name>`` of an input: a folder's name or a file's stem (``.nii.gz`` stripped whole)."""
    name = path.name
    if path.is_dir():
        return name
    for suffix in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def _predict_image(
    predictor: Predictor, path: Path, name: str, out: Path, gate: float | None
) -> tuple[SliceResult, dict[str, Any]]:
    from tumorscope.inference.overlay import save_overlay  # deferred: matplotlib

    result = predictor.predict(path, name=name, gate_threshold=gate)
    overlay = out / f"{name}_overlay.png"
    title = f"{name}: tumour p={result.tumour_probability:.2f}" + (
        "" if result.mask is not None else " (no mask: under the gate)"
    )
    if result.image is not None:
        save_overlay(result.image, result.mask, overlay, regions=result.regions, title=title)
    return result, {"overlay_file": overlay.name}


def _predict_volume(
    predictor: Predictor, path: Path, name: str, out: Path, gate: float | None
) -> tuple[VolumeResult, dict[str, Any]]:
    result = predictor.predict_volume(path, gate_threshold=gate)
    result.name = name
    mask = predictor.write_mask(result, out / f"{name}_mask.nii.gz")
    return result, {"mask_file": mask.name, "mask_empty_because_gated": result.gated}


def _line(result: SliceResult | VolumeResult, json_path: Path) -> str:
    head = f"{result.name}: tumour p={result.tumour_probability:.2f}"
    if isinstance(result, VolumeResult):
        ml = sum(result.volumes_ml.values())
        what = f"no mask ({result.mask_reason})" if result.gated else f"mask {ml:.1f} mL"
    else:
        px = 0 if result.mask is None else int(result.mask.any(axis=0).sum())
        what = f"no mask ({result.mask_reason})" if result.mask is None else f"mask {px} px"
    warn = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    return f"{head}, {what}{warn} -> {json_path}"


def predict_inputs(
    *,
    run: Path,
    inputs: Sequence[Path],
    out: Path,
    gate_threshold: float | None = None,
    mc_samples: int = 0,
    gradcam: bool = False,
    figure: bool = False,
    truth: Sequence[Path] | None = None,
) -> Iterator[str]:
    """Predict every input with the run's model and write the outputs into ``out``.

    Args:
        run: Run folder (``model.safetensors`` + ``manifest.json``).
        inputs: PNG/JPEG files, NIfTI files (2D or 3D), BraTS/HECKTOR case folders, DICOM
            series folders.
        out: Output folder (created).
        gate_threshold: Override of the run's conditional-mask gate (0–1).
        mc_samples: MC-dropout samples; > 0 adds uncertainty figures to ``<name>.json``
            and writes ``<name>_uncertainty.nii.gz`` (volumes) or ``.png`` (2D).
        gradcam: Write ``<name>_gradcam.png``.
        figure: Write the six-panel ``<name>_figure.png``.
        truth: Ground-truth masks, one per input in the same order (for the figure).

    Yields:
        One line per input for the user (``"<name>: tumour p=0.93, mask 12.4 mL -> …"``,
        or ``"<name>: error: PATH: fault"``).

    Raises:
        DataError: Two inputs share a name, or any input failed (after all were tried).
    """
    paths = [Path(p) for p in inputs]
    if truth and len(truth) != len(paths):
        raise DataError(
            truth[0], f"{len(truth)} --truth masks for {len(paths)} inputs; give one per input"
        )
    seen: dict[str, Path] = {}
    for p in paths:
        name = input_name(p)
        if name in seen:
            raise DataError(p, f"has the same output name {name!r} as {seen[name]}; rename one")
        seen[name] = p
    predictor = Predictor.from_run(run)
    out.mkdir(parents=True, exist_ok=True)
    failed: list[DataError] = []
    for p in paths:
        name = input_name(p)
        try:
            predict = _predict_image if is_2d_input(p) else _predict_volume
            result, files = predict(predictor, p, name, out, gate_threshold)
        except DataError as e:
            failed.append(e)
            yield f"{name}: error: {e}"
            continue
        if mc_samples > 0 or gradcam or figure:
            # deferred: captum and matplotlib, needed only for these outputs
            from tumorscope.inference.cli_extras import write_uncertainty_outputs

            try:
                files.update(
                    write_uncertainty_outputs(
                        predictor, p, out, name, mc_samples=mc_samples, gradcam=gradcam,
                        figure=figure, truth=truth[paths.index(p)] if truth else None,
                        gate_threshold=gate_threshold,
                    )
                )  # fmt: skip
            except DataError as e:
                failed.append(e)
                yield f"{name}: error: {e}"
                continue
        json_path = out / f"{name}.json"
        _write_json(json_path, {**result.to_json(), "input": str(p), "run": str(run), **files})
        for w in result.warnings:
            log.warning("%s: %s", name, w)
        yield _line(result, json_path)
    if failed:
        raise DataError(
            failed[0].path, f"{failed[0].fault} ({len(failed)} of {len(paths)} inputs failed)"
        )
