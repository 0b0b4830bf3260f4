"""Which discovered units an evaluation holds out, and why the others are left out.

A run records the ``(source, content id)`` of its units per split at training time
(``RUN/seen.json``, :class:`~tumorscope.data.identity.SeenUnits`). Evaluating split ``S``,
a unit is *seen*, and left out, when its source and content match a unit of another of the
run's splits; every other unit is kept, also one whose relative file name a training unit
shares (every Kaggle-style folder has a ``yes/Y1.jpg``) but whose content differs. A run
made before ``seen.json`` existed falls back to names: a unit is seen when its patient id
(for an image, its relative file name) is in another of the run's splits. The
:attr:`Selection.summary` says which rule was used, how many units were kept and how many
were left out, and lands in ``metrics.json`` (``meta.held_out``) and ``report.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorscope.data.identity import SEEN_FILE, SeenUnits, content_id, load_seen
from tumorscope.data.types import Case, DataError, DatasetIndex, ImageItem
from tumorscope.fileio import OutputExistsError, OutputFolder, sha256_file
from tumorscope.runs.load import parent_run

log = logging.getLogger(__name__)

CONTENT_REASON = (
    "a unit is seen when its source and content (SHA-256 of its decoded pixels, or of a "
    "volume's image files) match a unit of another of the run's splits ({file})"
)
NAME_REASON = (
    "the run has no {file} (made before tumorscope recorded content identities): a unit is "
    "seen when its patient id (an image's relative file name) is in another of the run's "
    "splits, so an unseen image that shares a training image's name is left out too"
)
NO_SPLITS_REASON = "the run records no splits: every unit is evaluated"


@dataclass
class Selection:
    """The units an evaluation predicts, and the account of the others.

    Attributes:
        cases: Volume cases to predict (with a mask or an outcome).
        images: 2D images to predict.
        summary: ``{"rule", "reason", "split", "candidates", "kept", "excluded",
            "excluded_by_split", "kept_name_matches"}``: ``rule`` is ``content``, ``name`` or
            ``none``; ``kept_name_matches`` counts kept units whose name is in another of
            the run's splits (their content differs; the name rule would have left them out).
    """

    cases: list[Case] = field(default_factory=list)
    images: list[ImageItem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def run_seen_file(run: str | Path) -> Path:
    """Where a run's ``seen.json`` lives: in the run, or for a stage checkpoint or snapshot
    (``RUN/stages/<name>``, ``RUN/snapshots/step-<N>``) in its parent run."""
    run = Path(run)
    return (parent_run(run) or run) / SEEN_FILE


def read_run_seen(run: str | Path) -> SeenUnits | None:
    """The run's recorded content identities, or None for a run made before they existed.

    Raises:
        DataError: ``seen.json`` is malformed, or was changed after training wrote it.
    """
    path = run_seen_file(run)
    if not path.is_file():
        return None
    try:
        recorded = OutputFolder(path.parent).written().get(SEEN_FILE)
    except OutputExistsError:  # an unreadable record proves nothing either way
        recorded = None
    if recorded is not None and sha256_file(path) != recorded:
        raise DataError(path, "was changed after training wrote it; its identities cannot be used")
    return load_seen(path)


def _candidates(index: DatasetIndex) -> list[Case | ImageItem]:
    """Units an evaluation can score: cases with a mask or an outcome, and every image."""
    cases = [c for c in index.cases if c.mask is not None or c.patient_id in index.outcomes]
    return [*cases, *index.images]


def select_held_out(
    index: DatasetIndex,
    *,
    split: str,
    splits: Mapping[str, Sequence[str]],
    seen: SeenUnits | None,
    seen_file: str | Path = SEEN_FILE,
) -> Selection:
    """Choose the units of ``index`` to evaluate as split ``split`` of a run.

    Args:
        index: The discovered evaluation data.
        split: The run's split evaluated.
        splits: The run's splits, split → patient ids (names; the fallback rule).
        seen: The run's content identities (:func:`read_run_seen`); None: by name.
        seen_file: The file ``seen`` came from, named in the summary.

    Returns:
        The :class:`Selection`.
    """
    units = _candidates(index)
    others = {pid for name, ids in splits.items() if name != split for pid in ids}
    excluded: dict[str, int] = {}
    name_matches = 0
    kept: list[Case | ImageItem] = []
    for unit in units:
        if seen is not None:
            where = [s for s in seen.splits_of(unit.source, content_id(unit)) if s != split]
            name_matches += not where and unit.patient_id in others
        else:
            where = [
                name for name, ids in splits.items() if name != split and unit.patient_id in ids
            ]
        if where:
            excluded[where[0]] = excluded.get(where[0], 0) + 1
        else:
            kept.append(unit)
    if seen is not None:
        rule, reason = "content", CONTENT_REASON.format(file=seen_file)
    elif splits:
        rule, reason = "name", NAME_REASON.format(file=SEEN_FILE)
    else:
        rule, reason = "none", NO_SPLITS_REASON
    summary = {
        "rule": rule,
        "reason": reason,
        "split": split,
        "candidates": len(units),
        "kept": len(kept),
        "excluded": sum(excluded.values()),
        "excluded_by_split": dict(sorted(excluded.items())),
        "kept_name_matches": int(name_matches),
    }
    log.info("held out by %s: %d kept, %d excluded as seen", rule, len(kept), summary["excluded"])
    return Selection(
        cases=[u for u in kept if isinstance(u, Case)],
        images=[u for u in kept if isinstance(u, ImageItem)],
        summary=summary,
    )


def describe(summary: Mapping[str, Any]) -> str:
    """One report line: kept, excluded as seen (per split), and why."""
    if not summary:
        return "units chosen by the caller"
    by = ", ".join(
        f"{n} matching its {s} split" for s, n in summary.get("excluded_by_split", {}).items()
    )
    text = (
        f"{summary['kept']} of {summary['candidates']} units kept, {summary['excluded']} "
        f"excluded as seen" + (f" ({by})" if by else "")
    )
    if summary.get("rule") == "content":
        text += (
            f", {summary['kept_name_matches']} kept whose name a unit of the run's other "
            "splits shares but whose content differs"
        )
    return f"{text}; by {summary['rule']}: {summary['reason']}"
