"""What the slice heads read: pooled encoder maps and the segmentation map's evidence.

Both are pure functions of tensors, traced into the exported graph with the network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

# Pixels averaged by the top-k evidence of a segmentation map (a fixed count, so that the
# traced graph has no shape-dependent k; capped at H·W for tiny inputs).
EVIDENCE_TOPK = 16
# Evidence features per region: top-k mean and log-mean-exp.
EVIDENCE_PER_REGION = 2
# Encoder stages the multiscale readout pools (the coarsest ones).
READOUT_STAGES = 2


def seg_evidence(seg_logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2R)`` evidence of ``(B, R, H, W)`` logits: per region the mean of the top
    :data:`EVIDENCE_TOPK` logits and the log-mean-exp (a soft maximum), in fp32."""
    flat = seg_logits.float().flatten(2)
    k = min(EVIDENCE_TOPK, int(flat.shape[-1]))
    top = torch.topk(flat, k, dim=-1).values.mean(dim=-1)
    lme = torch.logsumexp(flat, dim=-1) - math.log(int(flat.shape[-1]))
    return torch.cat([top, lme], dim=1)


def pooled_readout(maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """``(B, 2·Σc)``: the global average and maximum of each ``(B, c, h, w)`` map, joined."""
    parts = []
    for m in maps:
        parts += [m.mean(dim=(2, 3)), m.amax(dim=(2, 3))]
    return torch.cat(parts, dim=1)
