"""Test-time augmentation views: flips, small rotations and scales of a slice, each with
its exact inverse, applied batched on ``(B, C, H, W)`` tensors.

A view maps the model's input to a transformed input, and maps the network's per-pixel
output back to the input's grid (:meth:`View.inverse`), so the predictions of every view
land on the same pixels and can be averaged. Flips are exact; rotations and scales
resample bilinearly (``torch.nn.functional.grid_sample``, zeros outside the image: the
preprocessed background is 0), and their inverse fills pixels the view did not see with
the nearest border value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Largest rotation (degrees) and scale change of the default views: small, so every view
#: is still an image of the kind the model was trained on (training's ``light``
#: augmentation flips; ``full`` also rotates by up to 30° and scales by 0.7–1.4).
ROTATION_DEG = 8.0
SCALE = 0.1


@dataclass(frozen=True)
class View:
    """One test-time augmentation.

    Attributes:
        name: Short name (``identity``, ``flip_lr``, ``rot+8``...).
        flip_lr: Mirror left-right (the last axis).
        flip_ud: Mirror up-down (the second-to-last axis).
        angle_deg: Rotation in degrees, clockwise as an image is displayed (row 0 on top).
        scale: Zoom factor (> 1 magnifies).
    """

    name: str
    flip_lr: bool = False
    flip_ud: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0

    @property
    def warps(self) -> bool:
        """True when the view resamples (a rotation or a scale), False for flips alone."""
        return self.angle_deg != 0.0 or self.scale != 1.0

    def _theta(self, n: int, inverse: bool, like: torch.Tensor) -> torch.Tensor:
        a = math.radians(self.angle_deg)
        # affine_grid maps output coordinates to input ones: the view's output at u shows
        # the input at (R(-a) / s) u, so the view rotates by +a and magnifies by s.
        m = (
            torch.tensor(
                [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64
            )
            / self.scale
        )
        if inverse:
            m = torch.linalg.inv(m)
        theta = torch.zeros(n, 2, 3, dtype=like.dtype)
        theta[:, :, :2] = m.to(like.dtype)
        return theta

    def _warp(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        theta = self._theta(x.shape[0], inverse, x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        mode = "border" if inverse else "zeros"
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=mode, align_corners=False)

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, on in ((-1, self.flip_lr), (-2, self.flip_ud)) if on]
        return torch.flip(x, dims) if dims else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The view of ``(B, C, H, W)`` inputs."""
        x = self._flip(x)
        return self._warp(x, inverse=False) if self.warps else x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, K, H, W)`` per-pixel outputs of the view, back on the input's grid."""
        if self.warps:
            y = self._warp(y, inverse=True)
        return self._flip(y)


IDENTITY = View("identity")
#: The views in the order ``--tta N`` takes them: the identity, the three flips, then
#: rotations and scales within the training augmentation's range.
DEFAULT_VIEWS = (
    IDENTITY,
    View("flip_lr", flip_lr=True),
    View("flip_ud", flip_ud=True),
    View("flip_both", flip_lr=True, flip_ud=True),
    View(f"rot+{ROTATION_DEG:g}", angle_deg=ROTATION_DEG),
    View(f"rot-{ROTATION_DEG:g}", angle_deg=-ROTATION_DEG),
    View(f"scale{1 + SCALE:g}", scale=1 + SCALE),
    View(f"scale{1 - SCALE:g}", scale=1 - SCALE),
)
MAX_VIEWS = len(DEFAULT_VIEWS)


def default_views(n: int) -> tuple[View, ...]:
    """The first ``n`` of :data:`DEFAULT_VIEWS`.

    Raises:
        ValueError: ``n`` outside ``1..MAX_VIEWS``.
    """
    if not 1 <= n <= MAX_VIEWS:
        raise ValueError(f"tta: takes 1 to {MAX_VIEWS} views, got {n}")
    return DEFAULT_VIEWS[:n]
