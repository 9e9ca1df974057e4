"""NumPy float64 reference of TT matrices: the oracle of the tests.

- :func:`tt_to_dense`: cores -> dense ``(M, N)`` matrix (kernel layout ``(in, out)``).
- :func:`tt_svd`: dense matrix -> cores by the TT-SVD of Oseledets (2011, Alg. 1).
- :func:`tt_round`: cores -> cores of lower rank (Oseledets 2011, Alg. 2).

Truncation takes ``max_rank`` (an int, or one cap per position ``r_0..r_d``)
and/or ``rtol``. With ``rtol`` alone, each of the ``d - 1`` truncations drops
singular values of norm at most ``rtol * ||W||_F / sqrt(d - 1)``, so that
``||W - TT||_F <= rtol * ||W||_F``. Whatever the caps, the result carries
``error_bound = sqrt(sum of the squared dropped singular values)``, for which
Oseledets' Theorem 2.2 guarantees ``||W - TT||_F <= error_bound``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tt_common.shapes import TTMatrixShape, rank_caps, validate_modes

__all__ = ["TTDecomposition", "tt_matmul_reference", "tt_round", "tt_svd", "tt_to_dense"]


@dataclass(frozen=True)
class TTDecomposition:
    """Cores found by :func:`tt_svd` or :func:`tt_round` and their error bound."""

    cores: tuple[np.ndarray, ...]
    error_bound: float  # absolute Frobenius-norm bound on ||W - TT||_F

    @property
    def shape(self) -> TTMatrixShape:
        return TTMatrixShape.from_core_shapes([c.shape for c in self.cores])

    @property
    def ranks(self) -> tuple[int, ...]:
        return (1,) + tuple(c.shape[3] for c in self.cores)


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


def _check_rtol(rtol: float | None) -> None:
    if rtol is not None and not (0.0 <= rtol < math.inf):
        raise ValueError(f"rtol must be a non-negative finite number, got {rtol}")


def _check_finite(array: np.ndarray, what: str) -> None:
    """The SVD of a matrix with NaN or inf fails deep inside LAPACK ("SVD did not converge"): say so first."""
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{what} has {bad} NaN or infinite entries; a TT decomposition needs finite values")


def _truncation_rank(singular_values: np.ndarray, cap: int, delta: float) -> int:
    """Smallest rank <= cap whose dropped tail has norm <= delta (at least 1)."""
    tail = np.sqrt(np.cumsum((singular_values**2)[::-1])[::-1])  # tail[i] = ||s[i:]||
    tail = np.append(tail, 0.0)
    rank = next(i for i in range(1, len(tail)) if tail[i] <= delta)
    return max(1, min(rank, cap))


def _truncated_svd(matrix: np.ndarray, cap: int, delta: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Returns ``(U_r, S_r V_r^T, dropped squared norm)``."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    rank = _truncation_rank(s, cap, delta)
    return u[:, :rank], s[:rank, None] * vt[:rank], float(np.sum(s[rank:] ** 2))


def tt_svd(
    kernel: np.ndarray,
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
) -> TTDecomposition:
    """Decomposes a dense ``(M, N)`` kernel (layout ``(in, out)``) into TT cores.

    With neither ``max_rank`` nor ``rtol`` the decomposition is exact (up to
    float64 rounding), at the largest useful ranks.

    >>> rng = np.random.default_rng(0)
    >>> cores = [rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 4, 5, 1)]]
    >>> w = tt_to_dense(cores)
    >>> tt = tt_svd(w, (2, 4), (3, 5), rtol=1e-12)
    >>> tt.ranks, bool(np.allclose(tt_to_dense(tt.cores), w))
    ((1, 2, 1), True)
    """
    in_modes, out_modes = validate_modes(in_modes, out_modes)
    _check_rtol(rtol)
    kernel = np.asarray(kernel, dtype=np.float64)
    TTMatrixShape.create(in_modes, out_modes, 1).check_kernel(kernel.shape)
    _check_finite(kernel, "kernel")
    d = len(in_modes)
    caps = rank_caps(max_rank, in_modes, out_modes)
    # (m_1..m_d, n_1..n_d) -> (m_1, n_1, ..., m_d, n_d): core k's mode is (i_k, j_k).
    tensor = kernel.reshape(in_modes + out_modes)
    tensor = tensor.transpose([a for k in range(d) for a in (k, d + k)])
    delta = 0.0 if rtol is None else rtol * np.linalg.norm(kernel) / math.sqrt(max(d - 1, 1))
    cores, dropped, rank = [], 0.0, 1
    rest = tensor.reshape(-1)
    for k in range(d - 1):
        size = in_modes[k] * out_modes[k]
        u, rest, lost = _truncated_svd(rest.reshape(rank * size, -1), caps[k + 1], delta)
        cores.append(u.reshape(rank, in_modes[k], out_modes[k], u.shape[1]))
        rank, dropped = u.shape[1], dropped + lost
    cores.append(rest.reshape(rank, in_modes[-1], out_modes[-1], 1))
    return TTDecomposition(tuple(cores), math.sqrt(dropped))


def tt_round(
    cores: Sequence[np.ndarray],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
) -> TTDecomposition:
    """Lowers the ranks of a TT matrix (orthogonalize right to left, truncate left to right).

    >>> rng = np.random.default_rng(0)
    >>> cores = [rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 4, 5, 1)]]
    >>> doubled = [np.concatenate([cores[0], cores[0]], axis=3),
    ...            np.concatenate([cores[1], cores[1]], axis=0) / 2]
    >>> rounded = tt_round(doubled, rtol=1e-12)
    >>> rounded.ranks, bool(np.allclose(tt_to_dense(rounded.cores), tt_to_dense(cores)))
    ((1, 2, 1), True)
    """
    _check_rtol(rtol)
    cores = [np.asarray(c, dtype=np.float64) for c in cores]
    for k, c in enumerate(cores):
        if c.ndim != 4 or (k > 0 and c.shape[0] != cores[k - 1].shape[3]):
            raise ValueError(f"core {k} of shape {c.shape} does not chain with its neighbours")
        _check_finite(c, f"cores[{k}]")
    in_modes = [c.shape[1] for c in cores]
    out_modes = [c.shape[2] for c in cores]
    d = len(cores)
    caps = rank_caps(max_rank, in_modes, out_modes)
    for k in range(d - 1, 0, -1):  # right-orthogonalize cores 2..d
        r0, m, n, r1 = cores[k].shape
        q, r = np.linalg.qr(cores[k].reshape(r0, m * n * r1).T)
        cores[k] = q.T.reshape(q.shape[1], m, n, r1)
        cores[k - 1] = np.einsum("amnr,sr->amns", cores[k - 1], r)
    norm = np.linalg.norm(cores[0])
    delta = 0.0 if rtol is None else rtol * norm / math.sqrt(max(d - 1, 1))
    dropped = 0.0
    for k in range(d - 1):
        r0, m, n, r1 = cores[k].shape
        u, rest, lost = _truncated_svd(cores[k].reshape(r0 * m * n, r1), caps[k + 1], delta)
        cores[k] = u.reshape(r0, m, n, u.shape[1])
        cores[k + 1] = np.einsum("ar,rmns->amns", rest, cores[k + 1])
        dropped += lost
    return TTDecomposition(tuple(cores), math.sqrt(dropped))
