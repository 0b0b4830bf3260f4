"""Before training allocates anything: does one optimisation step fit in this machine's memory?

A config can ask for a batch that cannot fit (``batch_size: 1024`` at ``image_size: 1024``)
and would otherwise swap the machine to a halt minutes later. The estimate is deliberately
coarse and generous — activations of every encoder/decoder level, kept for the backward
pass, in fp32 — and the check refuses only what is clearly beyond the memory available.
"""

from __future__ import annotations

from pathlib import Path

from tumorscope.config import Config
from tumorscope.data.limits import human_bytes
from tumorscope.training.runfolder import RunError

# Tensors kept per feature map of a level for the backward pass: two conv blocks of
# conv → norm → activation each in the encoder and the decoder, plus skip and upsampling.
TENSORS_PER_LEVEL = 16
FP32 = 4


def step_bytes(cfg: Config) -> int:
    """Coarse upper estimate of the memory one training step of the largest batch takes."""
    m, s = cfg.model, cfg.data.image_size
    batch = max(
        [st.batch_size for st in cfg.stages] + [cfg.data.bag_patients * cfg.data.bag_slices]
    )
    per_slice = m.in_channels * s * s
    for level in range(m.depth + 1):
        side = max(1, s // 2**level)
        per_slice += TENSORS_PER_LEVEL * m.base_channels * 2**level * side * side
    return batch * per_slice * FP32


def available_bytes(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """``MemAvailable`` of this machine, or None where it cannot be read (not Linux)."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_step_memory(cfg: Config, available: int | None = None) -> None:
    """Refuse a config whose training step needs more memory than is available.

    Raises:
        RunError: naming the settings that decide the estimate.
    """
    have = available_bytes() if available is None else available
    need = step_bytes(cfg)
    if have is not None and need > have:
        raise RunError(
            f"config: one training step needs about {human_bytes(need)} "
            f"(batch sizes, data.image_size={cfg.data.image_size}, "
            f"model.base_channels={cfg.model.base_channels}, model.depth={cfg.model.depth}) "
            f"but {human_bytes(have)} of memory is available; lower them"
        )
