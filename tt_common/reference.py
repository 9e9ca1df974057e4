"""NumPy float64 reference of TT matrices: the oracle of the tests.

- :func:`tt_to_dense`: cores -> dense ``(M, N)`` matrix (kernel layout ``(in, out)``).
- :func:`tt_svd`: dense matrix -> cores by the TT-SVD of Oseledets (2011, Alg. 1).
- :func:`tt_round`: cores -> cores of lower rank (Oseledets 2011, Alg. 2).

The last two run :mod:`tt_common.decomposition` (the algorithms, written once for
every array library) on NumPy float64 arrays; that module documents the
truncation rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tt_common import decomposition
from tt_common.decomposition import TTDecomposition
from tt_common.shapes import TTMatrixShape

__all__ = ["TTDecomposition", "tt_matmul_reference", "tt_round", "tt_svd", "tt_to_dense"]


def tt_to_dense(cores: Sequence[np.ndarray]) -> np.ndarray:
    """Multiplies the cores out into the dense ``(M, N)`` matrix, in float64.

    >>> cores = [np.ones((1, 2, 3, 2)), np.ones((2, 4, 5, 1))]
    >>> w = tt_to_dense(cores)
    >>> w.shape, float(w[0, 0])
    ((8, 15), 2.0)
    """
    TTMatrixShape.from_core_shapes([np.shape(c) for c in cores])
    first = np.asarray(cores[0], dtype=np.float64)
    dense = first.reshape(first.shape[1], first.shape[2], first.shape[3])  # (M_<, N_<, r)
    for core in cores[1:]:
        core = np.asarray(core, dtype=np.float64)
        rows, cols, _ = dense.shape
        _, m, n, r_next = core.shape
        dense = np.einsum("abr,rmns->ambns", dense, core).reshape(rows * m, cols * n, r_next)
    return dense[:, :, 0]


def tt_matmul_reference(
    x: np.ndarray, cores: Sequence[np.ndarray], bias: np.ndarray | None = None
) -> np.ndarray:
    """``x @ W + b`` through the dense matrix, in float64: the oracle of the layers."""
    y = np.asarray(x, dtype=np.float64) @ tt_to_dense(cores)
    return y if bias is None else y + np.asarray(bias, dtype=np.float64)


def tt_svd(
    kernel: np.ndarray,
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
) -> TTDecomposition:
    """:func:`tt_common.decomposition.tt_svd` of ``kernel`` ``(M, N)`` in NumPy float64.

    >>> rng = np.random.default_rng(0)
    >>> w = tt_to_dense([rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 4, 5, 1)]])
    >>> tt = tt_svd(w, (2, 4), (3, 5), rtol=1e-12)
    >>> tt.ranks, bool(np.allclose(tt_to_dense(tt.cores), w)), type(tt.error_bound).__name__
    ((1, 2, 1), True, 'float')
    """
    found = decomposition.tt_svd(np.asarray(kernel, dtype=np.float64), in_modes, out_modes,
                                 max_rank=max_rank, rtol=rtol)
    return TTDecomposition(found.cores, float(found.error_bound))


def tt_round(
    cores: Sequence[np.ndarray],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
) -> TTDecomposition:
    """:func:`tt_common.decomposition.tt_round` of ``cores`` in NumPy float64."""
    found = decomposition.tt_round([np.asarray(c, dtype=np.float64) for c in cores], max_rank=max_rank, rtol=rtol)
    return TTDecomposition(found.cores, float(found.error_bound))
