"""The machine a measurement ran on, for reports (framework-neutral).

>>> isinstance(cpu_model(), str) and cpu_model() != ""
True
>>> cpu_vector_extension("flags : fpu sse2 avx avx2 fma\\n")
'AVX2'
"""

from __future__ import annotations

import platform

__all__ = ["cpu_description", "cpu_model", "cpu_vector_extension"]

# Widest first: the first whose flag the CPU lists is the one its math libraries' fastest kernels use.
_VECTOR_EXTENSIONS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                      ("asimd", "NEON"), ("sse2", "SSE2"))


def _read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    for line in _read_cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_vector_extension(cpuinfo: str | None = None) -> str:
    """The widest SIMD extension the CPU lists (``"AVX-512"``, ``"AVX2"``, ...; ``""`` where unknown).

    Two VMs with the same model name ("AMD EPYC") can differ in it, and with it in speed (2x measured here) and
    in the rounding of float32 math libraries, so that a seeded run's metrics differ between them from the
    first epoch on. ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when not given).
    """
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    flags = set(line.split(":", 1)[1].split()) if ":" in line else set()
    return next((name for flag, name in _VECTOR_EXTENSIONS if flag in flags), "")


def cpu_description(model: str, vector_extension: str | None = None) -> str:
    """``"AMD EPYC, AVX-512"``: the model name and the SIMD extension, where each is known.

    >>> cpu_description("AMD EPYC", "AVX-512"), cpu_description("AMD EPYC", None)
    ('AMD EPYC, AVX-512', 'AMD EPYC')
    """
    return ", ".join(part for part in (model, vector_extension) if part)
