"""retain_freed_memory, checked in fresh processes (it changes malloc for the whole process)."""

import os
import platform
import subprocess
import sys

import pytest

from experiments.memory import GLIBC_TUNABLES

# Allocates and frees a 64 MiB array, then counts the minor page faults of allocating and filling another.
PROBE = """
import resource, sys
import numpy as np
from experiments.memory import retain_freed_memory, retained
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retained()
n = 64 * 2**20 // 8
for _ in range(2):
    block = np.ones(n); del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.ones(n)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

PAGES = 64 * 2**20 // 4096

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


def _faults(mode: str, **extra_env: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TT_RETAIN_MEMORY"}  # conftest turns it off for pytest
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip())


@glibc_only
def test_freed_blocks_are_reused_without_page_faults() -> None:
    default, retained = _faults("default"), _faults("retain")
    assert retained < PAGES // 100, (default, retained)
    assert default > 10 * max(retained, 1), (default, retained)  # the default allocator maps the block anew
    assert _faults("default", GLIBC_TUNABLES=GLIBC_TUNABLES) < PAGES // 100  # the shell recipe of the docstring


@glibc_only
def test_the_environment_variable_turns_it_off() -> None:
    env = {**os.environ, "TT_RETAIN_MEMORY": "0"}
    code = "from experiments.memory import retain_freed_memory as r, retained; print(r(), retained())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "False"]


@glibc_only
def test_a_parameter_above_the_limit_leaves_malloc_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TT_RETAIN_MEMORY"}
    code = ("from experiments.memory import MAX_PARAMETER_BYTES as m, retain_freed_memory as r, retained; "
            "print(r(m + 1), retained(), r(m), retained())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["False", "False", "True", "True"]
