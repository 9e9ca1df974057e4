"""Tests for tt_common.machine: reading the CPU's model and SIMD extension from /proc/cpuinfo text."""

from __future__ import annotations

import pytest

from tt_common.machine import cpu_model, cpu_vector_extension

EPYC_AVX512 = "model name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512dq avx512bw\n"
XEON_AVX2 = "model name\t: Intel Xeon\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32\n"


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    (EPYC_AVX512, "AVX-512"),
    (XEON_AVX2, "AVX2"),
    (ARM, "NEON"),
    ("flags\t: fpu sse sse2 avx512_vnni\n", "SSE2"),  # avx512_vnni alone is not avx512f
    ("model name\t: something\n", ""),
    ("", ""),
])
def test_cpu_vector_extension_reads_the_widest_listed_flag(cpuinfo: str, expected: str) -> None:
    assert cpu_vector_extension(cpuinfo) == expected


def test_cpu_vector_extension_of_this_machine_is_a_known_name() -> None:
    assert cpu_vector_extension() in {"AMX", "AVX-512", "AVX2", "AVX", "NEON", "SSE2", ""}
    assert cpu_model()
