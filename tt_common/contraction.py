"""The TT matrix-by-batch product, core by core, written once for every array library.

``tt_matmul`` contracts an input ``x`` of shape ``(..., M)`` with the cores and
returns ``x @ W`` of shape ``(..., N)`` without ever building ``W``. It only
uses ``reshape``, the 2-D transpose ``.T`` and the matrix product, which NumPy,
JAX and PyTorch arrays share, plus a ``permute`` function for the cores
(NumPy/JAX ``transpose(axes)`` vs PyTorch ``permute(*dims)``). Each step is one
matrix product followed by one 2-D transpose, except the last, which writes the
result directly as a row-major ``(B, N)`` array: the next layer (a bias, a batch
norm, another TT layer) then reads it without a copy. Right to left, the batch
index sits inside the last state, so that step transposes whichever side is
narrower (the state, then a broadcast ``(1, n_1, m_1 r_1) @ (B, m_1 r_1, .)``
product, or the output); left to right, it multiplies the transposed operands in
place. On the thesis's ``tt-tt`` network this took a torch training step from
588 to 320 ms on our 2-core CPU.

Two directions contract the same product:

- ``"ltr"`` (left to right) eats core 1 first. Step ``k`` costs
  ``2 B r_{k-1} r_k (n_1..n_k) (m_k..m_d)`` FLOPs.
- ``"rtl"`` (right to left) eats core d first. Step ``k`` costs
  ``2 B r_{k-1} r_k (m_1..m_k) (n_k..n_d)`` FLOPs.

Both are linear in the batch size ``B``, so the cheaper direction is a property
of the layer alone (:func:`choose_direction`); ties go to ``"ltr"``.

Merging cores. Every step reads the whole state and writes the next one, and a
step does only ``2 r_{k-1} m_k`` (or ``2 m_k r_k``) FLOPs per element it
writes: with ranks and modes below 10, the product is bound by memory
bandwidth, not by the matmul units. ``groups`` merges runs of adjacent cores
into one core first (``(r, m_k m_{k+1}, n_k n_{k+1}, r')``, a product of two
small cores whose cost does not depend on the batch): fewer steps, fewer passes
over the large states, more FLOPs per byte. :func:`plan_groups` picks the runs
with a cost model (FLOPs + ``flops_per_byte`` x state bytes + a cost per step).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from tt_common.shapes import TTMatrixShape, check_input_features

__all__ = [
    "Direction",
    "choose_direction",
    "contraction_flops",
    "dense_matmul_flops",
    "flop_table",
    "merge_cores",
    "merged_shape",
    "plan_groups",
    "reconstruction_flops",
    "tt_matmul",
]

Direction = Literal["ltr", "rtl"]
Permute = Callable[[Any, tuple[int, ...]], Any]


def contraction_flops(shape: TTMatrixShape, batch_size: int, direction: Direction) -> list[int]:
    """FLOPs (multiply and add counted separately) of each step of the product.

    The list is in execution order: core 1 first for ``"ltr"``, core d first for
    ``"rtl"``.

    >>> shape = TTMatrixShape.create((2, 3), (4, 5), ranks=2)
    >>> contraction_flops(shape, 1, "ltr"), contraction_flops(shape, 1, "rtl")
    ([96, 240], [120, 160])
    """
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    d = shape.d
    if direction == "ltr":
        order = range(d)
        cost = lambda k: math.prod(n[: k + 1]) * math.prod(m[k:])  # noqa: E731
    elif direction == "rtl":
        order = range(d - 1, -1, -1)
        cost = lambda k: math.prod(m[: k + 1]) * math.prod(n[k:])  # noqa: E731
    else:
        raise ValueError(f"direction must be 'ltr' or 'rtl', got {direction!r}")
    return [2 * batch_size * r[k] * r[k + 1] * cost(k) for k in order]


def choose_direction(shape: TTMatrixShape) -> Direction:
    """The direction with fewer FLOPs (independent of the batch size).

    >>> choose_direction(TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4))
    'rtl'
    """
    ltr = sum(contraction_flops(shape, 1, "ltr"))
    rtl = sum(contraction_flops(shape, 1, "rtl"))
    return "ltr" if ltr <= rtl else "rtl"


def dense_matmul_flops(shape: TTMatrixShape, batch_size: int) -> int:
    """FLOPs of ``x @ W`` with the dense ``M x N`` matrix."""
    return 2 * batch_size * shape.in_features * shape.out_features


def reconstruction_flops(shape: TTMatrixShape) -> int:
    """FLOPs to build the dense ``W`` from the cores, left to right."""
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    return sum(
        2 * math.prod(m[:k]) * math.prod(n[:k]) * r[k] * m[k] * n[k] * r[k + 1]
        for k in range(1, shape.d)
    )


def flop_table(shape: TTMatrixShape, batch_size: int) -> dict[str, int]:
    """FLOPs of every way to compute ``x @ W`` for a batch of ``batch_size``.

    >>> flop_table(TTMatrixShape.create((2, 3), (4, 5), ranks=2), 1)
    {'ltr': 336, 'rtl': 280, 'dense_reconstruction': 720, 'dense_matmul': 240}
    """
    return {
        "ltr": sum(contraction_flops(shape, batch_size, "ltr")),
        "rtl": sum(contraction_flops(shape, batch_size, "rtl")),
        "dense_reconstruction": reconstruction_flops(shape) + dense_matmul_flops(shape, batch_size),
        "dense_matmul": dense_matmul_flops(shape, batch_size),
    }


def _numpy_like_permute(array: Any, axes: tuple[int, ...]) -> Any:
    return array.transpose(axes)


def _check_groups(groups: Sequence[int], d: int) -> tuple[int, ...]:
    groups = tuple(int(g) for g in groups)
    if any(g < 1 for g in groups) or sum(groups) != d:
        raise ValueError(f"groups must be positive run lengths summing to d = {d}, got {groups}")
    return groups


def merged_shape(shape: TTMatrixShape, groups: Sequence[int]) -> TTMatrixShape:
    """The shape after merging runs of ``groups`` adjacent cores.

    >>> merged_shape(TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4), (2, 1, 2))
    TTMatrixShape(in_modes=(4, 7, 28), out_modes=(128, 16, 128), ranks=(1, 4, 4, 1))
    """
    groups = _check_groups(groups, shape.d)
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    ins, outs, ranks, i = [], [], [1], 0
    for g in groups:
        ins.append(math.prod(m[i : i + g]))
        outs.append(math.prod(n[i : i + g]))
        i += g
        ranks.append(r[i])
    return TTMatrixShape(tuple(ins), tuple(outs), tuple(ranks))


def merge_cores(
    cores: Sequence[Any],
    groups: Sequence[int],
    *,
    permute: Permute = _numpy_like_permute,
    matmul: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """Merges runs of ``groups`` adjacent cores into single cores (exactly the same matrix ``W``).

    >>> import numpy as np
    >>> from tt_common.reference import tt_to_dense
    >>> shape = TTMatrixShape.create((2, 3, 2), (4, 1, 5), ranks=3)
    >>> cores = [np.random.default_rng(0).standard_normal(s) for s in shape.core_shapes]
    >>> merged = merge_cores(cores, (2, 1))
    >>> [c.shape for c in merged], bool(np.allclose(tt_to_dense(merged), tt_to_dense(cores)))
    ([(1, 6, 4, 3), (3, 2, 5, 1)], True)
    """
    if matmul is None:
        matmul = _matmul_operator
    groups = _check_groups(groups, len(cores))
    out, i = [], 0
    for g in groups:
        core = cores[i]
        for other in cores[i + 1 : i + g]:
            r0, m0, n0, r1 = core.shape
            _, m1, n1, r2 = other.shape
            prod = matmul(core.reshape(r0 * m0 * n0, r1), other.reshape(r1, m1 * n1 * r2))
            core = permute(prod.reshape(r0, m0, n0, m1, n1, r2), (0, 1, 3, 2, 4, 5))
            core = core.reshape(r0, m0 * m1, n0 * n1, r2)
        out.append(core)
        i += g
    return out


def _state_elements(shape: TTMatrixShape, batch_size: int, direction: Direction) -> list[int]:
    m, n, r, d = shape.in_modes, shape.out_modes, shape.ranks, shape.d
    if direction == "ltr":
        after = [r[k + 1] * math.prod(n[: k + 1]) * math.prod(m[k + 1 :]) for k in range(d)]
    else:
        after = [r[k] * math.prod(m[:k]) * math.prod(n[k:]) for k in range(d - 1, -1, -1)]
    return [batch_size * s for s in (shape.in_features, *after)]


def _groupings(d: int):
    for cuts in range(2 ** (d - 1)):
        groups, run = [], 1
        for k in range(d - 1):
            if cuts >> k & 1:
                groups.append(run)
                run = 1
            else:
                run += 1
        yield (*groups, run)


@functools.lru_cache(maxsize=256)
def plan_groups(
    shape: TTMatrixShape,
    batch_size: int,
    *,
    flops_per_byte: float = 10.0,
    step_flops: float = 2e6,
    max_core_size: int = 2**16,
) -> tuple[tuple[int, ...], Direction]:
    """The merge (run lengths) and direction of least modelled cost for a batch of ``batch_size``.

    Cost = FLOPs of the steps and of the merges + ``flops_per_byte`` x the
    float32 bytes each step reads and writes + ``step_flops`` per step (call
    overhead). ``flops_per_byte`` is the machine balance (matmul FLOP/s over
    memory bytes/s: about 10 on a CPU, 15 on an H100). Merged cores stay below
    ``max_core_size`` elements. Cached: eager frameworks call it on every forward pass.

    >>> plan_groups(TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4), 100)
    ((2, 1, 1, 1), 'rtl')
    """
    best = None
    for groups in _groupings(shape.d):
        merged = merged_shape(shape, groups)
        if max(math.prod(s) for s in merged.core_shapes) > max_core_size:
            continue
        merge_flops, i = 0, 0
        for g in groups:
            r0, m0, n0 = shape.ranks[i], 1, 1
            for k in range(i, i + g - 1):
                m0, n0 = m0 * shape.in_modes[k], n0 * shape.out_modes[k]
                r1, (m1, n1, r2) = shape.ranks[k + 1], shape.core_shapes[k + 1][1:]
                merge_flops += 2 * r0 * m0 * n0 * r1 * m1 * n1 * r2
            i += g
        for direction in ("ltr", "rtl"):
            sizes = _state_elements(merged, batch_size, direction)
            traffic = 4 * sum(a + b for a, b in zip(sizes, sizes[1:]))
            flops = sum(contraction_flops(merged, batch_size, direction))
            cost = flops + merge_flops + flops_per_byte * traffic + step_flops * (merged.d + len(shape.in_modes) - len(groups))
            if best is None or cost < best[0]:
                best = (cost, groups, direction)
    assert best is not None  # the grouping of single cores always fits
    return best[1], best[2]


def tt_matmul(
    x: Any,
    cores: Sequence[Any],
    shape: TTMatrixShape,
    direction: Direction | None = None,
    *,
    permute: Permute = _numpy_like_permute,
    matmul: Callable[[Any, Any], Any] | None = None,
    groups: Sequence[int] | Literal["auto"] | None = None,
) -> Any:
    """Computes ``x @ W`` for ``x`` of shape ``(..., M)`` and returns ``(..., N)``.

    ``direction`` defaults to :func:`choose_direction`. ``matmul`` defaults to
    the ``@`` operator; pass e.g. ``functools.partial(jnp.matmul, precision=...)``.
    ``groups`` merges runs of adjacent cores first (:func:`merge_cores`);
    ``"auto"`` asks :func:`plan_groups` for the runs and, unless ``direction``
    is given, the direction; ``None`` contracts core by core.

    >>> import numpy as np
    >>> shape = TTMatrixShape.create((2, 3), (4, 5), ranks=2)
    >>> rng = np.random.default_rng(0)
    >>> cores = [rng.standard_normal(s) for s in shape.core_shapes]
    >>> x = rng.standard_normal((7, 6))
    >>> from tt_common.reference import tt_to_dense
    >>> bool(np.allclose(tt_matmul(x, cores, shape), x @ tt_to_dense(cores)))
    True
    """
    check_input_features(x.shape[-1], shape.in_features, shape.in_modes)
    if matmul is None:
        matmul = _matmul_operator
    batch_shape = tuple(x.shape[:-1])
    batch = math.prod(batch_shape)
    if groups is not None:
        if groups == "auto":
            groups, planned = plan_groups(shape, max(batch, 1))
            direction = planned if direction is None else direction
        if len(groups) < shape.d:
            cores = merge_cores(cores, groups, permute=permute, matmul=matmul)
            shape = merged_shape(shape, groups)
    direction = choose_direction(shape) if direction is None else direction
    flat = x.reshape(batch, shape.in_features)
    if direction == "ltr":
        out = _ltr(flat, cores, shape, batch, permute, matmul)
    elif direction == "rtl":
        out = _rtl(flat, cores, shape, batch, permute, matmul)
    else:
        raise ValueError(f"direction must be 'ltr' or 'rtl', got {direction!r}")
    return out.reshape(*batch_shape, shape.out_features)


def _matmul_operator(a: Any, b: Any) -> Any:
    return a @ b


def _ltr(x, cores, shape: TTMatrixShape, batch: int, permute: Permute, matmul) -> Any:
    # State before step k: (r_{k-1} m_k, [m_{k+1}..m_d, B, n_1..n_{k-1}]).
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    size = batch * shape.in_features  # elements of the state divided by r_{k-1}
    state = x.T
    for k, core in enumerate(cores):
        rows = r[k] * m[k]
        cols = size // m[k]
        left = permute(core, (2, 3, 0, 1)).reshape(n[k] * r[k + 1], rows)
        if k == shape.d - 1:
            # r_d = 1: the transposed product (cols, n_d) = ([B, n_1..n_{d-1}], n_d) is already a
            # row-major (B, N); BLAS reads the transposed operands in place, nothing is copied.
            return matmul(state.reshape(rows, cols).T, left.T).reshape(batch, shape.out_features)
        state = matmul(left, state.reshape(rows, cols))  # (n_k r_k, cols)
        state = state.reshape(n[k], r[k + 1] * cols).T  # (r_k cols, n_k)
        size = cols * n[k]
    raise AssertionError("unreachable: the loop returns at the last core")


def _rtl(x, cores, shape: TTMatrixShape, batch: int, permute: Permute, matmul) -> Any:
    # State before step k: ([n_{k+1}..n_d, B, m_1..m_{k-1}], m_k r_k).
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    size = batch * shape.in_features
    state = x
    for k in range(shape.d - 1, 0, -1):
        cols = m[k] * r[k + 1]
        rows = size // m[k]
        right = permute(cores[k], (1, 3, 0, 2)).reshape(cols, r[k] * n[k])
        state = matmul(state.reshape(rows, cols), right)  # (rows, r_{k-1} n_k)
        state = state.reshape(rows * r[k], n[k]).T  # (n_k, rows r_{k-1})
        size = rows * n[k]
    return _rtl_last(state, cores[0], shape, batch, permute, matmul)


def _rtl_last(state, core, shape: TTMatrixShape, batch: int, permute: Permute, matmul) -> Any:
    """Core 1 (``r_0 = 1``): the state ``([n_2..n_d, B], m_1 r_1)`` becomes a row-major ``(B, N)``.

    The batch index sits inside the state, so one transpose is unavoidable; it
    is made on the narrower side: the state (``m_1 r_1`` columns, then a
    broadcast batched product) or the output (``n_1`` columns). Either way the
    result is row-major, so that what follows (bias, batch norm, another TT
    layer) reads it without a copy.
    """
    m1, n1, r1 = shape.in_modes[0], shape.out_modes[0], shape.ranks[1]
    rest = math.prod(shape.out_modes[1:])
    right = permute(core, (1, 3, 0, 2)).reshape(m1 * r1, n1)
    if m1 * r1 < n1:
        state = permute(state.reshape(rest, batch, m1 * r1), (1, 2, 0))  # (B, m_1 r_1, rest)
        # (1, n_1, m_1 r_1) and not a 2-D left side: torch.matmul would fold a 2-D one into one product
        # whose (B, rest, n_1) result then needs the very transpose we avoid.
        return matmul(right.T[None], state).reshape(batch, shape.out_features)  # (B, n_1, rest)
    out = matmul(state.reshape(rest * batch, m1 * r1), right)  # ([n_2..n_d, B], n_1)
    return out.reshape(rest, batch * n1).T.reshape(batch, shape.out_features)
