"""Process-wide runtime set-up shared by every entry point: seeding, threads, precision."""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tumorscope import __version__

log = logging.getLogger(__name__)


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; optionally enforce deterministic torch algorithms.

    Args:
        seed: Seed for every generator.
        deterministic: Use deterministic kernels (needed for exact resume).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def configure_threads(threads: int) -> int:
    """Set torch intra-op threads (0 keeps the default) and return the number in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def bf16_supported() -> bool:
    """True when this CPU has native bf16 kernels (AVX512-BF16 / AMX) for oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str) -> str:
    """Map ``auto`` to ``bf16`` or ``fp32``; refuse ``bf16`` on a CPU without support."""
    if precision == "auto":
        return "bf16" if bf16_supported() else "fp32"
    if precision == "bf16" and not bf16_supported():
        log.warning("runtime.precision=bf16 asked for, but this CPU lacks bf16 support; using fp32")
        return "fp32"
    return precision


@dataclass(frozen=True)
class RuntimeInfo:
    """What ``tumorscope info`` reports."""

    tumorscope: str
    python: str
    platform: str
    torch: str
    numpy: str
    monai: str
    threads: int
    cpu_count: int
    cpu_model: str
    cpu_flags: str
    bf16_supported: bool
    cuda_available: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# The instruction-set extensions that decide CPU speed and ``precision: auto``.
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, str]:
    """``(model name, the SIMD_FLAGS present)`` of this CPU; the platform's processor string
    and an empty flag list where ``/proc/cpuinfo`` cannot be read (not Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, " ".join(f for f in SIMD_FLAGS if f in flags)


def runtime_info() -> RuntimeInfo:
    """Collect versions and hardware capabilities."""
    import monai  # deferred: heavy, and only `tumorscope info` asks for its version

    cpu_model, cpu_flags = cpu_description()
    return RuntimeInfo(
        tumorscope=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        torch=torch.__version__,
        numpy=np.__version__,
        monai=monai.__version__,
        threads=torch.get_num_threads(),
        cpu_count=os.cpu_count() or 1,
        cpu_model=cpu_model,
        cpu_flags=cpu_flags,
        bf16_supported=bf16_supported(),
        cuda_available=torch.cuda.is_available(),
    )
