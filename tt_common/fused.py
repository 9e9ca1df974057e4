"""The plan of a fused TT product: every core applied to a block of rows in one kernel, framework-neutral.

The core-by-core product (:mod:`tt_common.contraction`) writes every intermediate state to memory and reads it
back, and each step does only 3 to 6 FLOPs per byte it moves. A fused kernel (``tt_jax._pallas``,
``tt_torch._triton``) keeps the state of a block of ``block_rows`` rows on chip across all ``d`` steps and
moves only the input rows in and the output rows out: :func:`fused_traffic_bytes`.

The state of one row can be far larger than a block of on-chip memory (``784 -> 262144`` ends with 262,144
floats per row), so a program may also fix the first ``split`` output modes: left to right, once core ``k`` is
contracted its output index ``j_k`` never mixes with the others again, so the program for ``(j_1..j_split)``
applies those cores' slices ``G_k[:, :, j_k, :]`` and writes one contiguous tile of ``N / P`` outputs per row
(``P = n_1 .. n_split`` programs per block of rows). The price: every program reads its rows again (from
cache) and the first ``split`` steps are repeated per tile. A layer whose *input* row alone exceeds the block
(``262144 -> 10``) cannot be fused this way: :func:`fused_plan` raises.

Pallas's Triton lowering needs power-of-two array sizes: for it every mode and rank is padded up to one
(:func:`pow2`); the padded cores are zero beyond the real ones, so the product is unchanged. The Triton kernel
masks its loads instead (``pad=False``). The kernels always contract left to right (the state's size, not the
FLOPs, bounds them).

>>> from tt_common.shapes import TTMatrixShape
>>> plan = fused_plan(TTMatrixShape.create((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), 8), 1000)
>>> plan.split, plan.block_rows, plan.programs_per_block, plan.max_state
(1, 8, 4, 2048)
>>> fused_plan(TTMatrixShape.create((2, 3), (5, 2), 2), 3).in_modes  # padded to powers of two
(2, 4)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from tt_common.shapes import TTMatrixShape

__all__ = ["DEFAULT_MAX_BLOCK_ELEMENTS", "FusedPlan", "FusedStep", "fused_plan", "fused_traffic_bytes", "pow2"]

# Elements of the largest state a program holds (block_rows x one row's state): 16,384 floats are 64 KiB,
# what one GPU thread block can keep in registers and shared memory without spilling much.
DEFAULT_MAX_BLOCK_ELEMENTS = 2**14
# Rows per block that give the in-kernel products a useful height (matrix units want 16 and more).
TARGET_BLOCK_ROWS = 16


def pow2(n: int) -> int:
    """The smallest power of two at or above ``n`` (``n >= 1``).

    >>> [pow2(n) for n in (1, 2, 3, 7, 8, 9)]
    [1, 2, 4, 8, 8, 16]
    """
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class FusedStep:
    """One step of a program, per row: the state ``(outer, c, inner)`` times the core matrix ``(a, c)``.

    ``sliced``: the core is one output slice ``G_k[:, :, j_k, :]`` (``a = r_k``), chosen by the program.
    """

    core: int
    a: int
    c: int
    outer: int
    inner: int
    sliced: bool

    @property
    def state_in(self) -> int:
        return self.outer * self.c * self.inner

    @property
    def state_out(self) -> int:
        return self.outer * self.a * self.inner


@dataclass(frozen=True)
class FusedPlan:
    """How a fused kernel contracts a layer: padded modes and ranks, the split, the block of rows, the steps."""

    shape: TTMatrixShape
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: tuple[int, ...]
    split: int
    block_rows: int
    steps: tuple[FusedStep, ...]

    @property
    def in_features(self) -> int:
        """Padded input width ``prod(in_modes)``."""
        return math.prod(self.in_modes)

    @property
    def out_features(self) -> int:
        """Padded output width ``prod(out_modes)``."""
        return math.prod(self.out_modes)

    @property
    def programs_per_block(self) -> int:
        """``P``: the output tiles of one block of rows (the product of the split output modes)."""
        return math.prod(self.out_modes[: self.split])

    @property
    def tile(self) -> int:
        """Outputs per row that one program writes: ``out_features / P``."""
        return self.out_features // self.programs_per_block

    @property
    def max_state(self) -> int:
        """Elements of the largest state of one row in a program."""
        return max(max(s.state_in, s.state_out) for s in self.steps)

    @property
    def padded(self) -> bool:
        """Whether any mode was padded (the input and the output then need a padded copy)."""
        return self.in_modes != self.shape.in_modes or self.out_modes != self.shape.out_modes

    def num_blocks(self, batch_size: int) -> int:
        return -(-batch_size // self.block_rows)


def _steps(m: tuple[int, ...], n: tuple[int, ...], r: tuple[int, ...], split: int) -> tuple[FusedStep, ...]:
    """Left to right; core ``k < split`` is sliced at the program's ``j_k``."""
    out = []
    for k in range(len(m)):
        a = r[k + 1] if k < split else n[k] * r[k + 1]
        outer = 1 if k < split else math.prod(n[split:k])
        out.append(FusedStep(k, a, r[k] * m[k], outer, math.prod(m[k + 1 :]), k < split))
    return tuple(out)


@functools.lru_cache(maxsize=256)  # eager torch asks on every call
def fused_plan(
    shape: TTMatrixShape,
    batch_size: int,
    *,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    max_block_rows: int = 128,
    pad: bool = True,
) -> FusedPlan:
    """The fused kernel's plan for a batch of ``batch_size``: the fewest split output modes that let a block of
    ``min(16, batch)`` rows (rounded up to a power of two) fit ``max_block_elements``, else the split with the
    largest block; the block of rows is the largest power of two that fits (at most ``max_block_rows``).
    ``pad=False`` keeps the real modes and ranks (a kernel that masks its loads instead: Triton's).

    Raises ``ValueError`` (naming ``shape``) when not even one row fits: its input row alone is too large.

    >>> plan = fused_plan(TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4), 100)  # 784 -> 262144
    >>> plan.split, plan.block_rows, plan.tile, plan.in_features
    (3, 8, 128, 1024)
    >>> fused_plan(TTMatrixShape.create((8, 16, 16, 16, 8), (5, 2, 1, 1, 1), 4), 100)
    Traceback (most recent call last):
    ...
    ValueError: shape: one input row of 262144 (padded) elements exceeds max_block_elements = 16384; the fused kernel cannot hold it
    """
    for name, value in (("batch_size", batch_size), ("max_block_elements", max_block_elements),
                        ("max_block_rows", max_block_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    grow = pow2 if pad else int
    m = tuple(grow(v) for v in shape.in_modes)
    n = tuple(grow(v) for v in shape.out_modes)
    r = tuple(grow(v) for v in shape.ranks)
    if math.prod(m) > max_block_elements:
        raise ValueError(f"shape: one input row of {math.prod(m)}{' (padded)' if pad else ''} elements exceeds max_block_elements = "
                         f"{max_block_elements}; the fused kernel cannot hold it")
    want = min(TARGET_BLOCK_ROWS, pow2(batch_size), max_block_rows)
    best: tuple[int, int, tuple[FusedStep, ...]] | None = None
    for split in range(shape.d + 1):
        steps = _steps(m, n, r, split)
        per_row = max(max(s.state_in, s.state_out) for s in steps)
        rows = _rows_that_fit(per_row, max_block_elements, min(max_block_rows, pow2(batch_size)))
        if rows and (best is None or rows > best[1]):
            best = (split, rows, steps)
        if rows >= want:
            break
    if best is None:
        raise ValueError(f"shape: no split of the output modes fits max_block_elements = {max_block_elements}")
    split, rows, steps = best
    return FusedPlan(shape, m, n, r, split, rows, steps)


def _rows_that_fit(per_row: int, budget: int, cap: int) -> int:
    """The largest power of two ``rows <= cap`` with ``rows * per_row <= budget``, or 0."""
    rows = 0
    while (rows * 2 or 1) <= cap and (rows * 2 or 1) * per_row <= budget:
        rows = rows * 2 or 1
    return rows


def fused_traffic_bytes(shape: TTMatrixShape, batch_size: int, itemsize: int = 4) -> int:
    """Least memory traffic of any product ``x @ W + b``: the input read once, the output written once, the
    cores and the bias read once. A fused kernel's roofline; the core-by-core product moves every state too.

    >>> fused_traffic_bytes(TTMatrixShape.create((2, 3), (4, 5), ranks=2), 10)  # 4 x (60 + 200 + 46 + 20)
    1304
    """
    cores = sum(math.prod(s) for s in shape.core_shapes)
    return itemsize * (batch_size * (shape.in_features + shape.out_features) + cores + shape.out_features)
