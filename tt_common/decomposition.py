"""TT-SVD and TT rounding, written once for every array library (Oseledets 2011, Alg. 1 and 2).

:func:`tt_svd` decomposes a dense ``(M, N)`` kernel (layout ``(in, out)``) into
TT cores; :func:`tt_round` lowers the ranks of given cores. Both use only what
NumPy, JAX and PyTorch arrays share (``reshape``, ``.T``, slicing, ``@``,
``*``, ``.sum()``) plus the few functions of a :class:`LinalgOps`:
:data:`NUMPY_OPS` here, the framework's own in ``tt_jax.functional`` and
``tt_torch.functional``. :mod:`tt_common.reference` runs them in NumPy float64:
the oracle of the tests.

Truncation takes ``max_rank`` (an int, or one cap per position ``r_0..r_d``)
and/or ``rtol``; every cap is clipped to the largest useful rank
(:func:`tt_common.shapes.max_ranks`) and to what the unfolding allows.

- Without ``rtol`` the ranks are the caps: they depend on the shapes only, so
  the algorithms run under ``jax.jit`` (static shapes).
- With ``rtol``, each of the ``d - 1`` truncations drops singular values of norm
  at most ``rtol * ||W||_F / sqrt(d - 1)``, so that ``||W - TT||_F <= rtol * ||W||_F``.
  The ranks then depend on the values and are chosen on the host
  (``LinalgOps.to_host``); under a trace there are no values, and a
  ``ValueError`` says to pass ``max_rank`` alone.

Sign convention. An SVD is unique only up to the sign of each pair of singular
vectors (for distinct singular values), and LAPACK builds, JAX and torch pick
signs differently. After every SVD (:func:`_truncated_svd`, so in both
algorithms) each kept left singular vector is flipped, with its right
partner, so that its entry of largest magnitude (the first one on ties) is
positive. The matrix is unchanged, and the TT-SVD of the same kernel gives the
same cores in every framework, up to rounding.

Whatever the caps, the result carries ``error_bound = sqrt(sum of the squared
dropped singular values)``, for which Oseledets' Theorem 2.2 guarantees
``||W - TT||_F <= error_bound`` (a float in NumPy, a 0-d array of the
framework otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tt_common.shapes import TTMatrixShape, rank_caps, validate_modes

__all__ = ["NUMPY_OPS", "LinalgOps", "TTDecomposition", "fix_signs", "tt_round", "tt_svd"]


@dataclass(frozen=True)
class LinalgOps:
    """The functions of an array library that :func:`tt_svd` and :func:`tt_round` call.

    ``svd(matrix) -> (u, s, vh)`` and ``qr(matrix) -> (q, r)`` in their reduced forms,
    ``permute(array, axes)``, ``to_host(array)``: the values as a NumPy array, or
    ``None`` where they are not known (a JAX tracer), and ``largest(matrix)``: the entry
    of largest magnitude of each column of a 2-D array (the first one on ties), 1-D,
    for the sign convention (:func:`fix_signs`).
    """

    svd: Callable[[Any], tuple[Any, Any, Any]]
    qr: Callable[[Any], tuple[Any, Any]]
    permute: Callable[[Any, tuple[int, ...]], Any]
    to_host: Callable[[Any], np.ndarray | None]
    largest: Callable[[Any], Any]


def _numpy_largest(matrix: np.ndarray) -> np.ndarray:
    return np.take_along_axis(matrix, np.abs(matrix).argmax(axis=0)[None], axis=0)[0]


NUMPY_OPS = LinalgOps(
    svd=lambda m: np.linalg.svd(m, full_matrices=False),
    qr=np.linalg.qr,
    permute=np.transpose,
    to_host=np.asarray,
    largest=_numpy_largest,
)


@dataclass(frozen=True)
class TTDecomposition:
    """Cores found by :func:`tt_svd` or :func:`tt_round` and their error bound."""

    cores: tuple[Any, ...]
    error_bound: Any  # absolute Frobenius-norm bound on ||W - TT||_F: a float, or a 0-d array

    @property
    def shape(self) -> TTMatrixShape:
        return TTMatrixShape.from_core_shapes([tuple(c.shape) for c in self.cores])

    @property
    def ranks(self) -> tuple[int, ...]:
        return (1,) + tuple(int(c.shape[3]) for c in self.cores)


def _check_rtol(rtol: float | None) -> None:
    if rtol is not None and not (0.0 <= rtol < math.inf):
        raise ValueError(f"rtol must be a non-negative finite number, got {rtol}")


def _check_finite(array: Any, what: str, ops: LinalgOps) -> None:
    """An SVD of NaN or inf fails deep inside LAPACK ("SVD did not converge"), or returns garbage: say so first.

    Skipped where the values are not known (a JAX trace).
    """
    host = ops.to_host(array)
    if host is not None and not np.isfinite(host).all():
        bad = int(np.size(host) - np.count_nonzero(np.isfinite(host)))
        raise ValueError(f"{what} has {bad} NaN or infinite entries; a TT decomposition needs finite values")


def _delta(frobenius_squared: Any, rtol: float | None, d: int, ops: LinalgOps) -> float | None:
    """The norm each truncation may drop (``None``: keep the caps), from ``||W||_F^2``."""
    if rtol is None:
        return None
    host = ops.to_host(frobenius_squared)
    if host is None:
        raise ValueError("rtol chooses the ranks from the values, which a trace (jax.jit) does not have: "
                         "pass max_rank alone (static ranks), or call outside jit")
    return rtol * math.sqrt(float(host)) / math.sqrt(max(d - 1, 1))


def _truncation_rank(singular_values: np.ndarray, cap: int, delta: float) -> int:
    """Smallest rank <= cap whose dropped tail has norm <= delta (at least 1)."""
    tail = np.sqrt(np.cumsum((singular_values.astype(np.float64) ** 2)[::-1])[::-1])  # tail[i] = ||s[i:]||
    tail = np.append(tail, 0.0)
    rank = next(i for i in range(1, len(tail)) if tail[i] <= delta)
    return max(1, min(rank, cap))


def fix_signs(u: Any, vt: Any, ops: LinalgOps = NUMPY_OPS) -> tuple[Any, Any]:
    """The sign convention: ``u``'s columns and ``vt``'s rows flipped in pairs so that each column of ``u`` has
    its entry of largest magnitude (the first one on ties) positive; ``u @ diag(s) @ vt`` is unchanged.

    Written with what NumPy, JAX and torch arrays share (``<``, ``*``, ``-``, slicing) and ``ops.largest``, so
    it runs under ``jax.jit`` too.

    >>> u, vt = fix_signs(np.array([[0.6, -0.8], [-0.8, -0.6]]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> u.tolist(), vt.tolist()
    ([[-0.6, 0.8], [0.8, 0.6]], [[-1.0, -2.0], [-3.0, -4.0]])
    """
    negative = ops.largest(u) < 0  # a bool per column; x - 2 x negates exactly, and bools keep x's dtype
    return u - 2 * (u * negative), vt - 2 * (vt * negative[:, None])


def _truncated_svd(matrix: Any, cap: int, delta: float | None, ops: LinalgOps) -> tuple[Any, Any, Any]:
    """Returns ``(U_r, S_r V_r^T, dropped squared norm)``, ``U_r`` under the sign convention (:func:`fix_signs`)."""
    u, s, vt = ops.svd(matrix)
    rank = min(cap, int(s.shape[0]))
    if delta is not None:
        rank = _truncation_rank(ops.to_host(s), cap, delta)
    u, vt = fix_signs(u[:, :rank], vt[:rank], ops)
    return u, s[:rank, None] * vt, (s[rank:] ** 2).sum()


def tt_svd(
    kernel: Any,
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
    ops: LinalgOps = NUMPY_OPS,
) -> TTDecomposition:
    """Decomposes a dense ``(M, N)`` kernel (layout ``(in, out)``) into TT cores, in the kernel's dtype.

    With neither ``max_rank`` nor ``rtol`` the decomposition is exact (up to
    rounding), at the largest useful ranks.

    >>> rng = np.random.default_rng(0)
    >>> from tt_common.reference import tt_to_dense
    >>> w = tt_to_dense([rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 4, 5, 1)]])
    >>> tt = tt_svd(w, (2, 4), (3, 5), rtol=1e-12)
    >>> tt.ranks, bool(np.allclose(tt_to_dense(tt.cores), w))
    ((1, 2, 1), True)
    """
    in_modes, out_modes = validate_modes(in_modes, out_modes)
    _check_rtol(rtol)
    TTMatrixShape.create(in_modes, out_modes, 1).check_kernel(tuple(kernel.shape))
    _check_finite(kernel, "kernel", ops)
    d = len(in_modes)
    caps = rank_caps(max_rank, in_modes, out_modes)
    delta = _delta((kernel * kernel).sum(), rtol, d, ops)
    # (m_1..m_d, n_1..n_d) -> (m_1, n_1, ..., m_d, n_d): core k's mode is (i_k, j_k).
    tensor = ops.permute(kernel.reshape(in_modes + out_modes), tuple(a for k in range(d) for a in (k, d + k)))
    cores, dropped, rank = [], 0.0, 1
    rest = tensor.reshape(-1)
    for k in range(d - 1):
        size = in_modes[k] * out_modes[k]
        u, rest, lost = _truncated_svd(rest.reshape(rank * size, -1), caps[k + 1], delta, ops)
        cores.append(u.reshape(rank, in_modes[k], out_modes[k], u.shape[1]))
        rank, dropped = int(u.shape[1]), dropped + lost
    cores.append(rest.reshape(rank, in_modes[-1], out_modes[-1], 1))
    return TTDecomposition(tuple(cores), dropped**0.5)


def _check_chain(cores: Sequence[Any]) -> None:
    if len(cores) == 0:
        raise ValueError("a TT matrix needs at least one core, got none")
    for k, c in enumerate(cores):
        if c.ndim != 4 or (k > 0 and c.shape[0] != cores[k - 1].shape[3]):
            raise ValueError(f"core {k} of shape {tuple(c.shape)} does not chain with its neighbours")
    if cores[0].shape[0] != 1 or cores[-1].shape[3] != 1:
        raise ValueError(f"the end ranks must be 1, got {cores[0].shape[0]} and {cores[-1].shape[3]}")


def tt_round(
    cores: Sequence[Any],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
    ops: LinalgOps = NUMPY_OPS,
) -> TTDecomposition:
    """Lowers the ranks of a TT matrix (orthogonalize right to left, truncate left to right).

    The cores may have ranks above the largest useful ones (a sum of TT matrices has).

    >>> rng = np.random.default_rng(0)
    >>> from tt_common.reference import tt_to_dense
    >>> cores = [rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 4, 5, 1)]]
    >>> doubled = [np.concatenate([cores[0], cores[0]], axis=3),
    ...            np.concatenate([cores[1], cores[1]], axis=0) / 2]
    >>> rounded = tt_round(doubled, rtol=1e-12)
    >>> rounded.ranks, bool(np.allclose(tt_to_dense(rounded.cores), tt_to_dense(cores)))
    ((1, 2, 1), True)
    """
    _check_rtol(rtol)
    _check_chain(cores)
    for k, core in enumerate(cores):
        _check_finite(core, f"cores[{k}]", ops)
    cores = list(cores)
    d = len(cores)
    caps = rank_caps(max_rank, [c.shape[1] for c in cores], [c.shape[2] for c in cores])
    for k in range(d - 1, 0, -1):  # right-orthogonalize cores 2..d
        r0, m, n, r1 = cores[k].shape
        q, r = ops.qr(cores[k].reshape(r0, m * n * r1).T)
        cores[k] = q.T.reshape(q.shape[1], m, n, r1)
        a, m0, n0, _ = cores[k - 1].shape
        cores[k - 1] = (cores[k - 1].reshape(-1, r0) @ r.T).reshape(a, m0, n0, r.shape[0])
    # cores 2..d are orthonormal: ||W||_F = ||core 1||_F
    delta = _delta((cores[0] * cores[0]).sum(), rtol, d, ops)
    dropped = 0.0
    for k in range(d - 1):
        r0, m, n, r1 = cores[k].shape
        u, rest, lost = _truncated_svd(cores[k].reshape(r0 * m * n, r1), caps[k + 1], delta, ops)
        cores[k] = u.reshape(r0, m, n, u.shape[1])
        _, m1, n1, r2 = cores[k + 1].shape
        cores[k + 1] = (rest @ cores[k + 1].reshape(r1, -1)).reshape(rest.shape[0], m1, n1, r2)
        dropped = dropped + lost
    return TTDecomposition(tuple(cores), dropped**0.5)
