"""The one conversion every metric calls at its boundary: arrays, tensors, sequences → NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def to_numpy(x: Any) -> NDArray[Any]:
    """Convert a NumPy array, torch tensor or nested sequence to a NumPy array."""
    if hasattr(x, "detach"):  # torch tensor, converted at the boundary
        x = x.detach().cpu().numpy()
    return np.asarray(x)
