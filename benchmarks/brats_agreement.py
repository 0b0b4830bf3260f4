"""tumorscope's segmentation figures against the BraTS challenge's own package, on real predictions.

Predicts the held-out patients of a trained run (its ``test`` split, or ``--split``, plus
every patient in none of its splits) through ``Predictor.predict_volume``, as ``tumorscope evaluate`` does:
gated masks in the input's geometry, the file's voxel spacing. For every patient and region
it computes the figures twice, with tumorscope and with ``brats-evaluation`` (BraTS, on
``panoptica``; each region written as a NIfTI pair, evaluated with the bundled ``gli`` and
``mets`` configs and the package's two leaderboard parsers):

=====================  ====================================  ======================================
row                    tumorscope                            brats-evaluation
=====================  ====================================  ======================================
dice                   ``segmentation.dice``                 ``global_bin_dsc``
hd95                   ``segmentation.hd95`` (mm, larger     ``global_bin_hd95`` (P95 of both sets
                       directed P95)                         pooled, voxel units; 373 if no overlap)
hd95_pooled_voxels     the same pooled P95 of our surfaces   ``global_bin_hd95``
                       on a 1 mm grid
lesion_dice            ``lesionwise.lesion_wise`` (BraTS     ``mets`` parser, lesions > 50 mm³
                       2023 definition, glioma parameters)
lesion_hd95            as above (mm, 374 per miss / FP)      ``mets`` parser (pooled, 373)
lesion_dice_matched    lesion_dice, patients whose lesion    the same
                       TP / FN / FP counts agree
=====================  ====================================  ======================================

Where the definitions match (``dice``, ``hd95_pooled_voxels``, ``lesion_dice_matched``) the
figures should agree to 1e-6 (Dice) and 0.01 mm (HD95); the other rows measure how far the
definitions differ on these predictions (see ``tumorscope.metrics.lesionwise``). Cases where
the package's figure is undefined (NaN: no ground truth) are counted, not compared.

Prints a markdown table of max |difference| per row, writes the JSON (with every case) to
``--out`` and prints it, without the cases, on its last stdout line.

    python benchmarks/brats_agreement.py --run runs/demo --data runs/demo-data \\
        --out bench-out/brats_agreement.json [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import tempfile
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from machine import cpu

from tumorscope.data.layout import discover, load_case, region_masks
from tumorscope.evaluation.collect import held_out_patients, seen_patients
from tumorscope.evaluation.evaluate import load_predictor
from tumorscope.metrics import segmentation as seg
from tumorscope.metrics.lesionwise import brats2023_params, lesion_wise

MIN_VOLUME = brats2023_params("BraTS-GLI").min_volume_mm3
# (row, definitions match, tolerance where they do)
ROWS = [
    ("dice", True, 1e-6),
    ("hd95", False, None),
    ("hd95_pooled_voxels", True, 0.01),
    ("lesion_dice", False, None),
    ("lesion_hd95", False, None),
    ("lesion_dice_matched", True, 1e-6),
]


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def predict_cases(run: Path, data: Path, split: str, limit: int | None) -> list[dict[str, Any]]:
    """Predicted and true binary masks ``(X, Y, Z)`` per held-out patient and region."""
    predictor = load_predictor(run)
    manifest = predictor.manifest
    test, seen = held_out_patients(manifest, split), seen_patients(manifest)
    index = discover([data])
    cases = [c for c in index.cases if c.mask is not None]
    cases = [c for c in cases if c.patient_id in test or c.patient_id not in seen][:limit]
    out = []
    for case in cases:
        loaded = load_case(case, predictor.spec.channels, missing=predictor.spec.missing_channels)
        assert loaded.mask is not None
        result = predictor.predict_volume(loaded, source=case.source)
        truth = region_masks(loaded.mask, loaded.labels or case.source, predictor.regions)
        spacing = tuple(float(s) for s in loaded.meta.spacing[:3])
        for i, region in enumerate(predictor.regions):
            out.append(
                {
                    "id": f"{case.patient_id}:{region}",
                    "patient_id": case.patient_id,
                    "region": region,
                    "spacing": spacing,
                    "pred": result.masks[i].astype(bool),
                    "truth": truth[i].astype(bool),
                }
            )
    return out


def tumorscope_figures(c: dict[str, Any]) -> dict[str, Any]:
    p, t, sp = c["pred"], c["truth"], c["spacing"]
    lw = lesion_wise(p, t, sp)
    pooled = None
    if p.any() and t.any() and (p & t).any():  # the package's global HD95 needs overlap
        d_pt, d_tp = seg.surface_distances(p, t)
        pooled = float(np.percentile(np.concatenate([d_pt, d_tp]), 95))
    return {
        "dice": seg.dice(p, t),
        "hd95": seg.hd95(p, t, sp),
        "hd95_pooled_voxels": pooled,
        "lesion_dice": lw.dice,
        "lesion_hd95": lw.hd95,
        "lesion_counts": [lw.n_tp, lw.n_fn, lw.n_fp],
        "voxels_pred": int(p.sum()),
        "voxels_truth": int(t.sum()),
    }


def official_figures(cases: list[dict[str, Any]], work: Path) -> dict[str, dict[str, Any]]:
    """brats-evaluation's figures per case id (region WT of a binary mask written as label 2)."""
    import panoptica
    from brats_evaluation import (
        config_path,
        evaluate_single_exam,
        parse_mets_results,
        parse_seg_results,
    )

    panoptica.disable_citation_reminder()
    evaluators = {
        c: panoptica.Panoptica_Evaluator.load_from_config(str(config_path(c)))
        for c in ("gli", "mets")
    }
    results: dict[str, list[dict[str, Any]]] = {"gli": [], "mets": []}
    for k, c in enumerate(cases):
        folder = work / f"case{k:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        affine = np.diag([*c["spacing"], 1.0])
        for name, mask in (("ref", c["truth"]), ("pred", c["pred"])):
            img = nib.Nifti1Image(mask.astype(np.uint8) * 2, affine)
            nib.save(img, folder / f"{name}.nii.gz")
        for config, evaluator in evaluators.items():
            r = evaluate_single_exam(
                str(folder / "pred.nii.gz"), str(folder / "ref.nii.gz"), c["id"], evaluator
            )
            if "error" in r:
                raise RuntimeError(f"brats-evaluation failed on {c['id']}: {r['error']}")
            results[config].append(r)
    for config in results:
        (work / f"{config}.json").write_text(
            json.dumps({"metrics": results[config], "missings": []}, default=float)
        )
    # the mets parser scores lesions of volume >= its threshold (BraTS 2023 keeps > 50 mm³)
    # and counts a matched lesion as detected when its Dice >= 0 (i.e. always, as BraTS 2023)
    parse_mets_results(str(work / "mets.json"), MIN_VOLUME + 1e-3, 0.0, str(work / "mets.csv"))
    parse_seg_results(str(work / "gli.json"), str(work / "gli.csv"))
    mets = pd.read_csv(work / "mets.csv").set_index("subject_id")
    gli = pd.read_csv(work / "gli.csv").set_index("subject_id")
    out = {}
    for c, g in zip(cases, results["gli"], strict=True):
        m = mets.loc[c["id"]]
        counts = [m[f"large_instance_{k}_wt"] for k in ("tp", "fn", "fp")]
        out[c["id"]] = {
            "dice": _num(g["wt"]["global_bin_dsc"]),
            "hd95": _num(gli.loc[c["id"], "global_hd95_wt"]),  # inf → 373 (the parser)
            "hd95_pooled_voxels": _num(gli.loc[c["id"], "global_hd95_wt"]),
            "lesion_dice": _num(m["lesionwise_dsc_mean_wt"]),
            "lesion_hd95": _num(m["lesionwise_hd95_mean_wt"]),
            "lesion_counts": None if any(math.isnan(x) for x in counts) else counts,
            "glioma_lesion_dice": _num(gli.loc[c["id"], "lesionwise_dsc_mean_wt"]),
        }
    return out


def compare(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row of :data:`ROWS`: cases compared, undefined ones, max |Δ| and mean Δ (ours − theirs)."""
    table = {}
    for name, match, tol in ROWS:
        key = "lesion_dice" if name == "lesion_dice_matched" else name
        diffs, undefined = [], 0
        for r in rows:
            if (
                name == "lesion_dice_matched"
                and r["ours"]["lesion_counts"] != r["theirs"]["lesion_counts"]
            ):
                continue
            a, b = r["ours"][key], r["theirs"][key]
            if a is None or b is None:
                undefined += 1
                continue
            diffs.append(a - b)
        d = np.asarray(diffs, dtype=float)
        worst = float(np.abs(d).max()) if d.size else None
        table[name] = {
            "definitions_match": match,
            "tolerance": tol,
            "n": int(d.size),
            "n_undefined": undefined,
            "max_abs_diff": worst,
            "mean_diff": float(d.mean()) if d.size else None,
            "within_tolerance": None if tol is None or worst is None else worst <= tol,
        }
    return table


def markdown(table: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| figure | definitions match | n | not compared | max abs diff | mean diff (ours - theirs) |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in table.items():
        worst = "n/a" if t["max_abs_diff"] is None else f"{t['max_abs_diff']:.3g}"
        mean = "n/a" if t["mean_diff"] is None else f"{t['mean_diff']:+.3g}"
        match = f"yes (tol {t['tolerance']:g})" if t["definitions_match"] else "no"
        lines.append(f"| {name} | {match} | {t['n']} | {t['n_undefined']} | {worst} | {mean} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", type=Path, required=True, help="run folder or RUN/stages/<name>")
    ap.add_argument("--data", type=Path, required=True, help="BraTS-layout data folder")
    ap.add_argument("--out", type=Path, default=Path("bench-out/brats_agreement.json"))
    ap.add_argument(
        "--split", default="test", help="the run's split to predict (+ unseen patients)"
    )
    ap.add_argument("--quick", action="store_true", help="the first 4 held-out patients")
    ap.add_argument("--limit", type=int, default=None, help="at most this many patients")
    ap.add_argument("--work", type=Path, default=None, help="keep the NIfTI pairs here")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning, module="panoptica")
    limit = 4 if args.quick else args.limit

    t0 = time.perf_counter()
    cases = predict_cases(args.run, args.data, args.split, limit)
    t_predict = time.perf_counter() - t0
    ours = {c["id"]: tumorscope_figures(c) for c in cases}
    t_ours = time.perf_counter() - t0 - t_predict
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints per subject
            theirs = official_figures(cases, work)
    t_theirs = time.perf_counter() - t0 - t_predict - t_ours
    rows = [
        {
            "id": c["id"],
            "spacing": list(c["spacing"]),
            "ours": ours[c["id"]],
            "theirs": theirs[c["id"]],
        }
        for c in cases
    ]
    table = compare(rows)
    summary = {
        "run": str(args.run),
        "data": str(args.data),
        "split": args.split,
        "patients": len({c["patient_id"] for c in cases}),
        "regions": sorted({c["region"] for c in cases}),
        "spacings": sorted({tuple(c["spacing"]) for c in cases}),
        "packages": {p: version(p) for p in ("BraTS_evaluation", "panoptica")},
        "lesion_wise_params": "BraTS-GLI (3 dilations, lesions > 50 mm³)",
        "agreement": table,
        "seconds": {
            "predict": round(t_predict, 1),
            "tumorscope": round(t_ours, 1),
            "brats_evaluation": round(t_theirs, 1),
        },
        "cpu": cpu(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**summary, "cases": rows}, indent=1) + "\n")
    print(markdown(table))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
