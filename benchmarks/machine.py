"""The CPU every benchmark JSON records: this kind of machine varies from one to the next."""

from __future__ import annotations

from pathlib import Path

from tumorscope.runtime import cpu_description


def cpu() -> dict[str, str]:
    """``{"model": CPU model name, "flags": the SIMD flags that decide speed and precision}``."""
    model, flags = cpu_description()
    return {"model": model, "flags": flags}


def status_mib(field: str) -> float:
    """``VmRSS``/``VmHWM`` of this process from ``/proc/self/status``, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
