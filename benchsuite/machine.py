"""What this machine is, as records and the roofline cache name it."""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_vector_flags() -> list[str]:
    """The SIMD extensions that decide which kernels run (AVX-512 and VNNI change int8 and fp32 speed)."""
    flags = (_cpuinfo_field("flags") or "").split()
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or "vnni" in f)
