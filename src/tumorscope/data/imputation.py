"""Clinical covariates: missing-value imputation and scaling fitted on the training split.

Numeric columns are imputed with the training median, binary (0/1) columns with the
training mode (scikit-learn's ``SimpleImputer``); then every column is standardised with
the training mean and standard deviation of the imputed values. The fitted state is a
plain dict ``{"columns", "values", "center", "scale"}`` saved in the run manifest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.impute import SimpleImputer


def _column(rows: Sequence[Mapping[str, float | None]], col: str) -> np.ndarray:
    vals = [r.get(col) for r in rows]
    return np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)


def _is_binary(x: np.ndarray) -> bool:
    seen = x[np.isfinite(x)]
    return seen.size > 0 and bool(np.isin(seen, (0.0, 1.0)).all())


@dataclass(frozen=True)
class ClinicalImputer:
    """Fitted imputation values and scaling per clinical column.

    Attributes:
        columns: Column names, in the order of the clinical vector.
        values: Imputation value per column (median or mode of the training split).
        center: Mean per column of the imputed training values.
        scale: Standard deviation per column (1 where constant).
    """

    columns: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    center: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    @classmethod
    def fit(
        cls, rows: Sequence[Mapping[str, float | None]], columns: Sequence[str]
    ) -> ClinicalImputer:
        """Fit on the clinical rows of the *training* patients only.

        Args:
            rows: Covariate mappings (missing = None or absent key).
            columns: Column order of the output vector.

        Returns:
            The fitted imputer; a column never observed in ``rows`` imputes 0.
        """
        cols = tuple(columns)
        if not cols:
            return cls()
        values, center, scale = [], [], []
        for c in cols:
            x = _column(rows, c)
            if np.isfinite(x).any():
                strategy = "most_frequent" if _is_binary(x) else "median"
                imp = SimpleImputer(strategy=strategy, keep_empty_features=True)
                filled = imp.fit_transform(x[:, None])[:, 0]
                v = float(imp.statistics_[0])
            else:
                filled, v = np.zeros(max(1, x.size)), 0.0
            sd = float(filled.std())
            values.append(v)
            center.append(float(filled.mean()))
            scale.append(sd if sd > 1e-12 else 1.0)
        return cls(cols, tuple(values), tuple(center), tuple(scale))

    def transform(self, row: Mapping[str, float | None] | None) -> np.ndarray:
        """``(K,)`` float32 imputed, standardised covariates (all imputed when ``row`` is None)."""
        row = row or {}
        out = np.empty(len(self.columns), dtype=np.float32)
        for i, c in enumerate(self.columns):
            v = row.get(c)
            x = self.values[i] if v is None or not np.isfinite(float(v)) else float(v)
            out[i] = (x - self.center[i]) / self.scale[i]
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping for the run manifest."""
        return {
            "columns": list(self.columns),
            "values": list(self.values),
            "center": list(self.center),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClinicalImputer:
        """Inverse of :meth:`to_dict` (``center``/``scale`` default to no scaling)."""
        cols = tuple(str(c) for c in d.get("columns", ()))
        k = len(cols)
        values = tuple(float(v) for v in d.get("values", ()))
        center = tuple(float(v) for v in d.get("center", (0.0,) * k))
        scale = tuple(float(v) for v in d.get("scale", (1.0,) * k))
        if not len(values) == len(center) == len(scale) == k:
            raise ValueError(f"imputer: {k} columns but {len(values)} values")
        return cls(cols, values, center, scale)
