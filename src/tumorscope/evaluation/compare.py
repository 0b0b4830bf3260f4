"""``tumorscope compare``: reports side by side, with paired tests on the same patients.

Each input is a report folder of ``tumorscope evaluate`` (it holds ``predictions.json``)
or, when ``data`` is given, a run / stage folder that is evaluated first. The first input
is the reference; every other one is tested against it on the patients (and slice /
image ids) both evaluated:

- Dice: paired patient bootstrap of the mean difference (+ Wilcoxon signed-rank p), and
  non-inferiority: the lower 95% bound of ``Dice(B) − Dice(A)`` above ``−margin``.
- ROC-AUC: DeLong's test (p-value) on the shared units; the CI of the difference and a
  second p-value come from a paired patient bootstrap. DeLong treats every slice as an
  independent case, so with many slices per patient its p is optimistic; the table shows
  both and the patient-bootstrap p is the one to trust for slice-level AUCs.
- C-index: paired patient bootstrap of ``C(B) − C(A)``.

``compare.md``, ``compare.json`` and the reports of run folders (``out/reports/<name>/``)
are written through :class:`~tumorscope.fileio.OutputFolder`: never over a file tumorscope
did not write, and over an earlier comparison only with ``overwrite``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from tumorscope.evaluation.evaluate import EvaluationError, evaluate_run
from tumorscope.evaluation.report import PREDICTIONS_FILE, format_figure, load_predictions
from tumorscope.fileio import OutputFolder
from tumorscope.metrics.classification import roc_auc
from tumorscope.metrics.delong import delong_test
from tumorscope.metrics.stats import PairedBootstrap, non_inferiority, paired_bootstrap
from tumorscope.metrics.survival import harrell_c_index

log = logging.getLogger(__name__)

DEFAULT_MARGIN = 0.02
COMPARE_JSON = "compare.json"
COMPARE_MD = "compare.md"
HEADLINE = (
    "segmentation.dice",
    "segmentation.hd95_mm",
    "classification.roc_auc",
    "survival.c_index",
    "calibration.ece_after_temperature",
)


@dataclass
class Comparison:
    """Result of :func:`compare_runs`.

    Attributes:
        names: Input names, the reference first.
        headline: Name → dotted key → figure (from each ``metrics.json``).
        tests: One record per (other input, metric) with the paired difference and p-value.
        margin: Dice non-inferiority margin; None = no non-inferiority test.
        n_boot: Bootstrap replicates of the paired tests.
        out: Output folder.
    """

    names: list[str]
    headline: dict[str, dict[str, Any]]
    tests: list[dict[str, Any]] = field(default_factory=list)
    margin: float | None = DEFAULT_MARGIN
    n_boot: int = 1000
    out: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """``compare.json`` content."""
        return {
            "schema_version": 1,
            "reference": self.names[0],
            "names": self.names,
            "margin": self.margin,
            "n_boot": self.n_boot,
            "headline": self.headline,
            "tests": self.tests,
        }

    def _boot_p(self, p: float | None) -> str:
        # a bootstrap p of 0 only says "below the resolution of n_boot replicates"
        return f"< {1 / self.n_boot:.2g}" if p == 0.0 else _fmt(p, ".3g")

    def _p(self, t: dict[str, Any]) -> str:
        if t["test"] == "paired bootstrap":
            return self._boot_p(t["p_value"])
        text = _fmt(t["p_value"], ".3g")
        if "bootstrap_p" in t:
            text += f" (patient bootstrap {self._boot_p(t['bootstrap_p'])})"
        return text

    def markdown(self) -> str:
        """``compare.md``: headline figures side by side, then the paired tests."""
        lines = ["# tumorscope comparison", "", f"Reference: `{self.names[0]}`.", ""]
        lines += ["| figure | " + " | ".join(f"`{n}`" for n in self.names) + " |"]
        lines += ["|---" * (len(self.names) + 1) + "|"]
        for key in HEADLINE:
            cells = [format_figure(self.headline[n].get(key, {})) for n in self.names]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## paired tests (difference = other − reference, on shared patients)",
            "",
            "| other | metric | reference | other | Δ [95% CI] | p | test | n | non-inferior |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in self.tests:
            ni = t.get("non_inferior")
            lines.append(
                f"| `{t['other']}` | {t['metric']} | {_fmt(t['reference_value'])} | "
                f"{_fmt(t['other_value'])} | {_fmt(t['delta'])} [{_fmt(t['ci95'][0])}, "
                f"{_fmt(t['ci95'][1])}] | {self._p(t)} | {t['test']} | {t['n']} | "
                f"{'—' if ni is None else ('yes' if ni else 'no')} |"
            )
        lines.append("")
        if self.margin is not None:
            lines += [f"Non-inferiority (Dice): lower 95% bound of Δ above −{self.margin}.", ""]
        return "\n".join(lines)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _lookup(metrics: dict[str, Any], key: str) -> dict[str, Any]:
    node: Any = metrics
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return dict(node) if isinstance(node, dict) else {}


def _test(
    other: str,
    metric: str,
    test: str,
    n: int,
    ref: float,
    oth: float,
    paired: PairedBootstrap,
    p: float,
) -> dict[str, Any]:
    return {
        "other": other,
        "metric": metric,
        "test": test,
        "n": n,
        "reference_value": _num(ref),
        "other_value": _num(oth),
        "delta": _num(oth - ref),
        "ci95": [_num(paired.lo), _num(paired.hi)],
        "p_value": _num(p),
        "non_inferior": None,
    }


def _shared(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> list[tuple[Any, Any]]:
    index = {r[key]: r for r in b}
    return [(r, index[r[key]]) for r in a if r[key] in index]


def dice_test(
    ref: dict[str, Any],
    oth: dict[str, Any],
    name: str,
    margin: float | None,
    n_boot: int,
    seed: int,
) -> dict[str, Any] | None:
    """Paired bootstrap + Wilcoxon + non-inferiority on the per-patient 3D Dice."""
    pairs = _shared(ref["cases"], oth["cases"], "patient_id")
    if not pairs:
        return None
    da = np.asarray([p[0]["dice"] for p in pairs], dtype=float)
    db = np.asarray([p[1]["dice"] for p in pairs], dtype=float)
    pb = paired_bootstrap(lambda x: float(np.mean(x)), db, da, n_boot=n_boot, seed=seed)
    rec = _test(name, "dice", "paired bootstrap", da.size, da.mean(), db.mean(), pb, pb.p)
    diff = db - da
    rec["wilcoxon_p"] = _num(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    rec["non_inferior"] = None if margin is None else non_inferiority(pb.lo, margin)
    return rec


def auc_test(
    ref: dict[str, Any], oth: dict[str, Any], name: str, n_boot: int, seed: int
) -> dict[str, Any] | None:
    """DeLong test of the ROC-AUCs on shared units, with a paired patient-bootstrap CI."""
    pairs = _shared(ref["classification"], oth["classification"], "id")
    labels = np.asarray([p[0]["label"] for p in pairs], dtype=np.int64)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    sa = np.asarray([p[0]["probability"] for p in pairs], dtype=float)
    sb = np.asarray([p[1]["probability"] for p in pairs], dtype=float)
    groups = np.asarray([p[0]["patient_id"] for p in pairs], dtype=object)
    auc_a, auc_b, z, p = delong_test(sa, sb, labels)
    pb = paired_bootstrap(roc_auc, sb, sa, labels, groups=groups, n_boot=n_boot, seed=seed)
    rec = _test(name, "roc_auc", "DeLong", len(set(groups.tolist())), auc_a, auc_b, pb, p)
    rec["n_units"] = int(labels.size)
    rec["delong_z"] = _num(-z)  # delong_test's z is (A − B); the table reports other − reference
    rec["bootstrap_p"] = _num(pb.p)
    return rec


def cindex_test(
    ref: dict[str, Any], oth: dict[str, Any], name: str, n_boot: int, seed: int
) -> dict[str, Any] | None:
    """Paired patient bootstrap of Harrell's C-index difference."""
    pairs = _shared(ref["survival"], oth["survival"], "patient_id")
    event = np.asarray([p[0]["event"] for p in pairs], dtype=bool)
    if not event.any():
        return None
    time = np.asarray([p[0]["time"] for p in pairs], dtype=float)
    ra = np.asarray([p[0]["risk"] for p in pairs], dtype=float)
    rb = np.asarray([p[1]["risk"] for p in pairs], dtype=float)
    pb = paired_bootstrap(harrell_c_index, rb, ra, time, event, n_boot=n_boot, seed=seed)
    ca, cb = harrell_c_index(ra, time, event), harrell_c_index(rb, time, event)
    return _test(name, "c_index", "paired bootstrap", time.size, ca, cb, pb, pb.p)


def _names(folders: Sequence[Path]) -> list[str]:
    names = [f.name for f in folders]
    if len(set(names)) < len(names):
        names = [f"{f.parent.name}/{f.name}" for f in folders]
    if len(set(names)) < len(names):
        names = [str(f) for f in folders]
    return names


def _resolve(
    folder: Path,
    name: str,
    out: Path,
    data: Sequence[Path] | None,
    split: str,
    n_boot: int,
    overwrite: bool,
) -> Path:
    if (folder / PREDICTIONS_FILE).is_file():
        return folder
    if (folder / "manifest.json").is_file():
        if not data:
            raise EvaluationError(
                folder, "is a run folder; evaluate it first or pass data to evaluate it here"
            )
        report = out / "reports" / name.replace("/", "_")
        evaluate_run(
            run=folder, data=list(data), out=report, split=split, n_boot=n_boot,
            overwrite=overwrite,
        )  # fmt: skip
        return report
    raise EvaluationError(folder, "neither a report folder (predictions.json) nor a run folder")


def compare_runs(
    *,
    runs: Sequence[Path],
    out: Path,
    data: Sequence[Path] | None = None,
    split: str = "test",
    margin: float | None = DEFAULT_MARGIN,
    n_boot: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> Comparison:
    """Compare report (or run) folders; writes ``compare.md`` and ``compare.json`` into ``out``.

    Args:
        runs: Report folders (or run / stage folders when ``data`` is given); the first is
            the reference.
        out: Output folder.
        data: Data folders used to evaluate run folders first.
        split: Split evaluated for run folders.
        margin: Dice non-inferiority margin (> 0); None = no non-inferiority test.
        n_boot: Bootstrap replicates.
        seed: Bootstrap seed.
        overwrite: Replace the files of an earlier comparison in ``out`` (never others).

    Raises:
        EvaluationError: An input is neither a report nor (with ``data``) a run folder.
        OutputExistsError: An output would replace a file it may not (checked first).
        ValueError: Fewer than two inputs.
    """
    folders = [Path(r) for r in runs]
    if len(folders) < 2:
        raise ValueError(f"runs: compare needs at least two folders, got {len(folders)}")
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin: must be positive and finite, got {margin}")
    out = Path(out)
    written = OutputFolder(out, overwrite=overwrite)
    written.check_all((COMPARE_JSON, COMPARE_MD))  # before any report is evaluated
    names = _names(folders)
    loaded = {
        n: load_predictions(_resolve(f, n, out, data, split, n_boot, overwrite))
        for n, f in zip(names, folders, strict=True)
    }
    headline = {n: {k: _lookup(p["metrics"], k) for k in HEADLINE} for n, p in loaded.items()}
    result = Comparison(names=names, headline=headline, margin=margin, n_boot=n_boot, out=out)
    ref = loaded[names[0]]
    for n in names[1:]:
        for rec in (
            dice_test(ref, loaded[n], n, margin, n_boot, seed),
            auc_test(ref, loaded[n], n, n_boot, seed),
            cindex_test(ref, loaded[n], n, n_boot, seed),
        ):
            if rec is not None:
                result.tests.append(rec)
    written.write_json(COMPARE_JSON, result.to_json())
    written.write_bytes(COMPARE_MD, result.markdown().encode())
    return result
