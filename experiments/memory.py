"""Keep freed memory in the process, so that large training steps stop paying for page faults (glibc only).

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
hands it back to the kernel on ``free``. The 262,144-wide activations of the thesis's MNIST networks are
105 MB each at batch 100, so every training step maps, page-faults and zero-fills each of them again.
Measured on our 2-core CPU (one thread, ``tt-tt``, batch 100): a torch step made about 185,000 minor page
faults and took 880 ms of CPU; with :func:`retain_freed_memory` it made almost none and took 370-500 ms.
JAX (whose XLA threads allocate from their own malloc arenas, hence the single arena): 110,000 faults and
770 ms, then none and 530-590 ms.

:func:`retain_freed_memory` sets, through ``mallopt``: no ``mmap`` for allocations (``M_MMAP_MAX = 0``),
freed memory kept up to 1 GiB at the top of the heap (``M_TRIM_THRESHOLD``), one arena for all threads
(``M_ARENA_MAX = 1``). It must run before the framework allocates its large buffers (the training CLIs call
it first thing). The price: the process keeps its peak memory until it exits, and with one arena the threads
share one malloc lock: on small networks, whose buffers never reach the mmap threshold, it is no help and can hurt.
Measured side by side (20 steps, batch 100): ``tt-tt-tt`` torch 64 -> 46 ms but JAX 38 -> 45 ms, ``tt-tt-fc``
torch 38 -> 42 ms and JAX 32 -> 41 ms.

The same settings, for any program, from the shell::

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824:glibc.malloc.arena_max=1

(:data:`GLIBC_TUNABLES`; glibc 2.26 or later.)

Not for networks with very large parameters. Each step frees a parameter's gradient and allocates the next
one; on a heap that keeps everything, small allocations land in the freed block and the next gradient no longer
fits, so the heap grows by a gradient now and then. Measured on the thesis's ``fc-fc`` (a 784 x 262,144 dense
layer, 0.77 GiB per gradient; torch, batch 100): the process grew in 0.77 GiB steps from 4.6 to 7.6 GiB in
50 training steps and was killed for memory at 23 GiB after 368, while malloc's defaults kept it under 4.7 GiB.
So :func:`retain_freed_memory` does nothing when told of a parameter above :data:`MAX_PARAMETER_BYTES`
(256 MiB); the largest of the thesis's other networks is 64 MiB (``cifar-fc``'s 4096 x 4096 layer).
Large temporaries of the backward can fragment the heap the same way: ``784 (7,16,7) -> 262144 (64,64,64)``
contracted left to right (a 420 MB broadcast gradient per step at batch 100) grew a torch training process to
24 GB, killed for memory in its fifth epoch; right to left, the direction the layers now choose for it
(:func:`tt_common.contraction.choose_direction`), the same run stayed at 2.6-3.5 GB in training and peaked
at 8.7 GB in its batch-1000 evaluations, over 25 epochs.

Set ``TT_RETAIN_MEMORY=0`` to leave ``malloc`` alone (the test suite does, in ``conftest.py``). Elsewhere
than glibc (macOS, musl) it does nothing.

>>> retain_freed_memory()  # doctest: +SKIP
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ENV_VAR", "GLIBC_TUNABLES", "MAX_PARAMETER_BYTES", "retain_freed_memory", "retained"]

ENV_VAR = "TT_RETAIN_MEMORY"

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_THRESHOLD = 1 << 30
MAX_PARAMETER_BYTES = 256 * 2**20  # above it, retaining fragments the heap (see the module docstring)

GLIBC_TUNABLES = f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={_TRIM_THRESHOLD}:glibc.malloc.arena_max=1"

_retained = False


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``gnu_get_libc_version``), else ``None``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError off glibc
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory(largest_parameter_bytes: int = 0) -> bool:
    """Tells glibc's ``malloc`` to keep freed memory in the process; returns whether it is now so.

    Does nothing (and returns whether an earlier call took effect) off glibc, when ``$TT_RETAIN_MEMORY`` is
    ``0``, or when ``largest_parameter_bytes`` (of the model to train) exceeds :data:`MAX_PARAMETER_BYTES`.
    """
    global _retained
    if os.environ.get(ENV_VAR, "1") == "0" or largest_parameter_bytes > MAX_PARAMETER_BYTES:
        return _retained
    libc = _glibc()
    if libc is None:
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_ARENA_MAX, 1)))
    _retained = _retained or ok
    return _retained


def retained() -> bool:
    """Whether :func:`retain_freed_memory` has taken effect in this process."""
    return _retained
