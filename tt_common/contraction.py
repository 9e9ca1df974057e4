"""The TT matrix-by-batch product, core by core, written once for every array library.

``tt_matmul`` contracts an input ``x`` of shape ``(..., M)`` with the cores and
returns ``x @ W`` of shape ``(..., N)`` without ever building ``W``. It only
uses ``reshape``, the 2-D transpose ``.T`` and the matrix product, which NumPy,
JAX and PyTorch arrays share, plus a ``permute`` function for the cores
(NumPy/JAX ``transpose(axes)`` vs PyTorch ``permute(*dims)``). Each step is one
matrix product followed by one 2-D transpose.

Two directions contract the same product:

- ``"ltr"`` (left to right) eats core 1 first. Step ``k`` costs
  ``2 B r_{k-1} r_k (n_1..n_k) (m_k..m_d)`` FLOPs.
- ``"rtl"`` (right to left) eats core d first. Step ``k`` costs
  ``2 B r_{k-1} r_k (m_1..m_k) (n_k..n_d)`` FLOPs.

Both are linear in the batch size ``B``, so the cheaper direction is a property
of the layer alone (:func:`choose_direction`); ties go to ``"ltr"``.
"""

from __future__ import annotations

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


def tt_matmul(
    x: Any,
    cores: Sequence[Any],
    shape: TTMatrixShape,
    direction: Direction | None = None,
    *,
    permute: Permute = _numpy_like_permute,
    matmul: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Computes ``x @ W`` for ``x`` of shape ``(..., M)`` and returns ``(..., N)``.

    ``direction`` defaults to :func:`choose_direction`. ``matmul`` defaults to
    the ``@`` operator; pass e.g. ``functools.partial(jnp.matmul, precision=...)``.

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
    direction = choose_direction(shape) if direction is None else direction
    batch_shape = tuple(x.shape[:-1])
    batch = math.prod(batch_shape)
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
        state = matmul(left, state.reshape(rows, cols))  # (n_k r_k, cols)
        state = state.reshape(n[k], r[k + 1] * cols).T  # (r_k cols, n_k)
        size = cols * n[k]
    return state.reshape(batch, shape.out_features)


def _rtl(x, cores, shape: TTMatrixShape, batch: int, permute: Permute, matmul) -> Any:
    # State before step k: ([n_{k+1}..n_d, B, m_1..m_{k-1}], m_k r_k).
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    size = batch * shape.in_features
    state = x
    for k in range(shape.d - 1, -1, -1):
        cols = m[k] * r[k + 1]
        rows = size // m[k]
        right = permute(cores[k], (1, 3, 0, 2)).reshape(cols, r[k] * n[k])
        state = matmul(state.reshape(rows, cols), right)  # (rows, r_{k-1} n_k)
        state = state.reshape(rows * r[k], n[k]).T  # (n_k, rows r_{k-1})
        size = rows * n[k]
    return state.reshape(shape.out_features, batch).T
