"""``tumorscope predict``: predict each input and write its JSON, mask or overlay.

For each input named ``<name>`` (a file's stem or a folder's name) it always writes
``<out>/<name>.json``; for volumes always ``<out>/<name>_mask.nii.gz`` in the input's
exact geometry (all zero when the conditional gate withheld the mask, as the JSON says);
for 2D inputs ``<out>/<name>_overlay.png``.

Clinical covariates for a volume's risk come from ``clinical`` (``NAME=VALUE``, every
volume) and ``clinical_table`` (one row per case, matched by :func:`case_id`); see
:mod:`tumorscope.inference.clinical`. They are checked against the run's covariates before
anything is written; 2D inputs have no risk and ignore them (their line says so).

Outputs never destroy a file: each is written atomically and only where no file exists, or,
with ``overwrite``, over a file an earlier prediction wrote there and nobody changed since
(:class:`~tumorscope.fileio.OutputFolder`, which records what it wrote in
``<out>/tumorscope-outputs.json``). Every output name is checked before the model is
loaded, so a refusal costs nothing and writes nothing. ``out`` may not be the folder an
input file lies in, nor lie inside a folder given as an input, unless
``allow_inside_input``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tumorscope.data.identity import carries_identity, identity_terms, pseudonym
from tumorscope.data.layout import read_case
from tumorscope.data.types import DataError
from tumorscope.fileio import OutputFolder, is_inside
from tumorscope.inference.clinical import CaseClinical, ClinicalInputs
from tumorscope.inference.inputs import file_stem, is_2d_input
from tumorscope.inference.predictor import Predictor
from tumorscope.inference.results import SliceResult, VolumeResult

log = logging.getLogger(__name__)


def input_name(path: Path) -> str:
    """``<name>`` of an input: a folder's name or a file's stem (``.nii.gz`` stripped whole);
    a pseudonym when the input is DICOM and its name carries the patient's identity."""
    name = path.name
    if not path.is_dir():
        name = next(
            (
                name[: -len(s)]
                for s in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg")
                if name.lower().endswith(s)
            ),
            path.stem,
        )
    if carries_identity(name, identity_terms(path)):
        return pseudonym(path)
    return name


def case_id(path: Path) -> str:
    """The id a clinical table row is matched by: the id the predictor gives the case (a
    folder's name; for a file a layout claims, its patient id, e.g. HECKTOR's
    ``CHUM-001__CT.nii.gz`` is ``CHUM-001``; else the file's stem)."""
    if path.is_dir():
        return path.name
    found, _ = read_case(path)
    return found.patient_id if found is not None else file_stem(path)


def output_names(
    path: Path,
    name: str,
    *,
    mc_samples: int = 0,
    gradcam: bool = False,
    figure: bool = False,
    tta_views: int = 0,
) -> list[str]:
    """The files ``tumorscope predict`` writes for one input, in ``out``."""
    two_d = is_2d_input(path)
    names = [f"{name}.json", f"{name}_overlay.png" if two_d else f"{name}_mask.nii.gz"]
    if mc_samples > 0 or tta_views > 0:
        names.append(f"{name}_uncertainty.png" if two_d else f"{name}_uncertainty.nii.gz")
    names += [f"{name}_gradcam.png"] if gradcam else []
    names += [f"{name}_figure.png"] if figure else []
    return names


def refuse_input_folder(out: Path, inputs: Sequence[Path], *, flag: str) -> None:
    """Refuse an ``out`` that is the folder of an input file or lies inside an input folder.

    Raises:
        DataError: Naming ``out`` and the input.
    """
    for p in inputs:
        if p.is_dir() and is_inside(out, p):
            where = f"is inside the input folder {p}"
        elif not p.is_dir() and out.resolve() == p.parent.resolve():
            where = f"is the folder of the input {p}"
        else:
            continue
        raise DataError(
            out,
            f"{where}; outputs never go into an input's folder (choose another --out, or {flag})",
        )


def _predict_image(
    predictor: Predictor, path: Path, name: str, folder: OutputFolder, gate: float | None
) -> tuple[SliceResult, dict[str, Any]]:
    from tumorscope.inference.overlay import save_overlay  # deferred: matplotlib

    result = predictor.predict(path, name=name, gate_threshold=gate)
    overlay = f"{name}_overlay.png"
    title = f"{name}: tumour p={result.tumour_probability:.2f}" + (
        "" if result.mask is not None else " (no mask: under the gate)"
    )
    if result.domain.out_of_domain:
        title = f"OUT OF DOMAIN, unreliable — {title}"
    if result.image is not None:
        image, mask, regions = result.image, result.mask, result.regions
        folder.write_with(
            overlay, lambda p: save_overlay(image, mask, p, regions=regions, title=title)
        )
    return result, {"overlay_file": overlay}


def _predict_volume(
    predictor: Predictor,
    path: Path,
    name: str,
    folder: OutputFolder,
    gate: float | None,
    *,
    slice_gate: bool | None = None,
    min_component_ml: float | None = None,
    clinical: CaseClinical | None = None,
) -> tuple[VolumeResult, dict[str, Any]]:
    result = predictor.predict_volume(
        path, gate_threshold=gate, slice_gate=slice_gate, min_component_ml=min_component_ml,
        clinical=None if clinical is None else clinical.values,
    )  # fmt: skip
    result.name = name
    mask = folder.write_with(f"{name}_mask.nii.gz", lambda p: predictor.write_mask(result, p))
    return result, {"mask_file": mask.name, "mask_empty_because_gated": result.gated}


def _line(
    result: SliceResult | VolumeResult,
    json_path: Path,
    clinical: CaseClinical | None = None,
    *,
    clinical_given: bool = False,
) -> str:
    """The line ``predict`` prints for one result; an out-of-domain one says so first (a 2D
    one says it ignored the covariates when ``clinical_given``)."""
    head = f"{result.name}: tumour p={result.tumour_probability:.2f}"
    if result.domain.out_of_domain:
        head = (
            f"{result.name}: OUT OF DOMAIN: {result.domain.reason}. "
            f"tumour p={result.tumour_probability:.2f} (unreliable)"
        )
    if isinstance(result, VolumeResult):
        ml = sum(result.volumes_ml.values())
        what = f"no mask ({result.mask_reason})" if result.gated else f"mask {ml:.1f} mL"
        risk = result.risk
        if risk is not None and risk.percentile is not None:
            imputed = [f"imputed {','.join(risk.imputed)}"] if risk.imputed else []
            notes = imputed if clinical is None else clinical.notes(risk.imputed)
            what += f", risk percentile {risk.percentile:.0f} ({', '.join([risk.model, *notes])})"
    else:
        px = 0 if result.mask is None else int(result.mask.any(axis=0).sum())
        what = f"no mask ({result.mask_reason})" if result.mask is None else f"mask {px} px"
        what += ", clinical covariates ignored (2D image: no risk)" if clinical_given else ""
    warn = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    unchecked = ", domain not checked" if result.domain.in_domain is None else ""
    review = ", NEEDS REVIEW (inside the review band)" if result.review.needs_review else ""
    return f"{head}, {what}{review}{warn}{unchecked} -> {json_path}"


def predict_inputs(
    *,
    run: Path,
    inputs: Sequence[Path],
    out: Path,
    gate_threshold: float | None = None,
    mc_samples: int = 0,
    gradcam: bool = False,
    figure: bool = False,
    tta_views: int = 0,
    truth: Sequence[Path] | None = None,
    overwrite: bool = False,
    allow_inside_input: bool = False,
    slice_gate: bool | None = None,
    min_component_ml: float | None = None,
    clinical: Sequence[str] | None = None,
    clinical_table: Path | None = None,
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
        tta_views: Test-time-augmentation views (1–8; merged with ``mc_samples``); > 0
            writes the uncertainty outputs like ``mc_samples``.
        truth: Ground-truth masks, one per input in the same order (for the figure).
        overwrite: Replace outputs an earlier prediction wrote in ``out`` (never other files).
        allow_inside_input: Allow ``out`` to be an input's folder (its files are still
            never replaced).
        slice_gate: Override of the run's slice gate (volumes: zero the slices under the
            gate threshold).
        min_component_ml: Override of the run's smallest kept 3D mask component, mL
            (volumes; 0 keeps all).
        clinical: ``NAME=VALUE`` covariates for every volume's risk (``NAME=NA``: missing,
            imputed from the run); 2D inputs ignore them.
        clinical_table: A ``.csv``/``.tsv`` table of covariates, one row per patient id
            (``Brats20ID``, ``PatientID``, ``patient_id``, ...), matched to each volume by
            :func:`case_id`; a case without a row gets every covariate imputed.

    Yields:
        One line per input for the user (``"<name>: tumour p=0.93, mask 12.4 mL -> …"``,
        or ``"<name>: error: PATH: fault"``).

    Raises:
        DataError: Two inputs share a name, ``out`` is an input's folder, a bad clinical
            covariate or table (before any work), or any input failed (after all were tried).
        OutputExistsError: An output would replace a file it may not (before any work).
    """
    paths = [Path(p) for p in inputs]
    given = ClinicalInputs.read(clinical, clinical_table)
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
    if not allow_inside_input:
        refuse_input_folder(out, paths, flag="pass --allow-inside-input")
    folder = OutputFolder(out, overwrite=overwrite)
    for p in paths:
        names = output_names(
            p, input_name(p), mc_samples=mc_samples, gradcam=gradcam, figure=figure,
            tta_views=tta_views,
        )  # fmt: skip
        folder.check_all(names)
    predictor = Predictor.from_run(run)
    covariates: dict[Path, CaseClinical] = {}
    volumes = [p for p in paths if not is_2d_input(p)]
    if given.given and volumes:
        known = predictor.clinical_covariates
        given.check(known)
        covariates = {p: given.for_case(case_id(p), known) for p in volumes}
    failed: list[DataError] = []
    for p in paths:
        name = input_name(p)
        result: SliceResult | VolumeResult
        try:
            if is_2d_input(p):
                result, files = _predict_image(predictor, p, name, folder, gate_threshold)
            else:
                result, files = _predict_volume(
                    predictor, p, name, folder, gate_threshold, slice_gate=slice_gate,
                    min_component_ml=min_component_ml, clinical=covariates.get(p),
                )  # fmt: skip
        except DataError as e:
            failed.append(e)
            yield f"{name}: error: {e}"
            continue
        if mc_samples > 0 or tta_views > 0 or gradcam or figure:
            # deferred: captum and matplotlib, needed only for these outputs
            from tumorscope.inference.cli_extras import write_uncertainty_outputs

            try:
                files.update(
                    write_uncertainty_outputs(
                        predictor, p, out, name, mc_samples=mc_samples, gradcam=gradcam,
                        figure=figure, tta_views=tta_views, truth=truth[paths.index(p)] if truth else None,
                        gate_threshold=gate_threshold, overwrite=overwrite,
                        slice_gate=slice_gate, min_component_ml=min_component_ml,
                        clinical=None if p not in covariates else covariates[p].values,
                    )
                )  # fmt: skip
            except DataError as e:
                failed.append(e)
                yield f"{name}: error: {e}"
                continue
        # An input whose path carries the patient's identity is recorded by its pseudonym.
        shown = str(p) if name != pseudonym(p) else f"{name} (path withheld: it names the patient)"
        doc = {**result.to_json(), "input": shown, "run": str(run), **files}
        case = covariates.get(p)
        if case is not None and doc.get("risk") is not None:
            doc["risk"].update(case.to_json())
        json_path = folder.write_json(f"{name}.json", doc, allow_nan=False)
        for w in result.warnings:
            log.warning("%s: %s", name, w)
        if result.domain.out_of_domain:
            log.warning("%s: out of domain: %s", name, result.domain.reason)
        yield _line(result, json_path, case, clinical_given=given.given)
    if failed:
        raise DataError(
            failed[0].path, f"{failed[0].fault} ({len(failed)} of {len(paths)} inputs failed)"
        )
