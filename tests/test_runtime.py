"""tumorscope info: the CPU model and the SIMD flags every reported figure is tagged with."""

from __future__ import annotations

from pathlib import Path

from tumorscope.runtime import cpu_description, runtime_info

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni sha_ni
processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2
"""


def test_cpu_model_and_simd_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO)
    model, flags = cpu_description(str(f))
    assert model == "AMD EPYC 9R14 96-Core Processor"
    assert flags == "avx2 avx512f avx512_vnni avx512_bf16"  # first CPU's, in SIMD_FLAGS order


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path: Path) -> None:
    model, flags = cpu_description(str(tmp_path / "absent"))
    assert model and flags == ""


def test_runtime_info_carries_the_cpu() -> None:
    info = runtime_info().as_dict()
    assert info["cpu_model"] and isinstance(info["cpu_flags"], str)
    if Path("/proc/cpuinfo").is_file():
        text = Path("/proc/cpuinfo").read_text()
        assert info["cpu_model"] in text
        assert all(flag in text for flag in info["cpu_flags"].split())
