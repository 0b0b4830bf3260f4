"""The CPU every benchmark JSON records: this kind of machine varies from one to the next."""

from __future__ import annotations

from tumorscope.runtime import cpu_description


def cpu() -> dict[str, str]:
    """``{"model": CPU model name, "flags": the SIMD flags that decide speed and precision}``."""
    model, flags = cpu_description()
    return {"model": model, "flags": flags}
