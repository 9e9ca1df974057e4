"""Tolerances, error measures and NumPy float64 references shared by the parity tests.

Two error measures:

- :func:`componentwise_err` for single layers: ``max_i |a_i - ref_i| / scale_i`` where
  ``scale`` is the same computation applied to the absolute values of every input
  (``|x| @ |W| + |b|`` for the output, and so on). A product of matrices computed in any
  order satisfies ``|fl(A_1 ... A_k) - A_1 ... A_k| <= gamma_n |A_1| ... |A_k|`` with
  ``gamma_n ~ n u`` and ``n`` the sum of the inner dimensions (Higham, *Accuracy and
  Stability of Numerical Algorithms*, 2nd ed., section 3.5), so this ratio is bounded
  by ``n u`` whatever cancellation happens (a gradient that cancels to almost zero
  would break an ordinary relative error).
- :func:`normwise_err` for whole models and training: ``max|a - ref| / max|ref|``.

Every comparison is recorded (:func:`record`) and the largest value seen per check is
printed at the end of the test session (``parity_tests/conftest.py``), so the numbers
quoted in the documentation are the ones the tests measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from tt_common.reference import tt_to_dense

# --- Tolerances --------------------------------------------------------------------------
# One layer, componentwise (see above). In the tests d <= 6 and every inner dimension of a
# contraction step is r * m <= 64, so n <= 6 * 64 = 384 for the forward pass; the gradients
# add the batch sum (<= 64 rows) and a second chain: n <= ~900. First-order bounds:
# float64 900 * 1.1e-16 = 1e-13, float32 900 * 6e-8 = 5.4e-5. Observed errors are ~100x
# smaller (rounding errors add up like a random walk).
FLOAT64_RTOL = 1e-12  # 10x the worst-case bound; a real bug gives O(1) errors.
FLOAT32_RTOL = 1e-4  # 2x the worst-case bound.
# Whole models in eval mode, normwise. A convention bug here (batch-norm eps, biased vs
# unbiased variance) shows up as a 1e-4..1e-2 relative difference, so the worst-case bounds
# above are too loose to catch it; these tolerances use the probabilistic bound instead:
# rounding errors of an n-term sum stay below lambda * sqrt(n) * u with high probability
# (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019), i.e. sqrt(384) * 6e-8 = 1.2e-6 per TT
# layer in float32. A batch norm multiplies its input's error by at most
# max(|scale| / sqrt(var + eps)) <= 4 (the statistics drawn in the tests: var >= 0.25,
# |scale| <= 2), ReLU never increases it, the two later layers are small (n <= 12):
# ~4 * 1.2e-6 + 1e-6 = 6e-6, times lambda ~ 3. float64: the same with u = 1.1e-16.
MODEL_FLOAT32_RTOL = 2e-5
MODEL_FLOAT64_RTOL = 1e-13
# Training, k = 5 steps, relative to how far each parameter moved
# (max|p_jax - p_torch| / max|p_torch - p_initial|). Each step's gradients carry about the
# model error above (<= 2e-6 normwise in float32 with lambda = 1); momentum sums at most
# 1 / (1 - 0.9) = 10 steps' worth of them and Adam's m / (sqrt(v) + eps) turns a relative
# gradient error into at most the same relative update error: 5 steps * 10 * 2e-6 = 1e-4.
# float64: the same with u = 1.1e-16 (2e-13), rounded up. A wrong optimizer mapping moves the
# parameters by O(1) of their change (see training_parity_test.test_wrong_mappings_would_be_caught).
TRAIN_FLOAT32_RTOL = 1e-4
TRAIN_FLOAT64_RTOL = 1e-12

MEASURED: dict[str, float] = {}


def componentwise_err(actual: object, reference: object, scale: object) -> float:
    """``max_i |actual_i - reference_i| / scale_i`` in float64 (``scale``: the computation on ``|inputs|``)."""
    actual, reference, scale = (np.asarray(a, dtype=np.float64) for a in (actual, reference, scale))
    if actual.shape != reference.shape:
        raise AssertionError(f"shapes differ: {actual.shape} vs {reference.shape}")
    if actual.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - reference) / np.maximum(scale, np.finfo(np.float64).tiny)))


def normwise_err(actual: object, reference: object) -> float:
    """``max|actual - reference| / max|reference|`` in float64 (the absolute error if the reference is 0)."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        raise AssertionError(f"shapes differ: {actual.shape} vs {reference.shape}")
    if actual.size == 0:
        return 0.0
    diff = float(np.max(np.abs(actual - reference)))
    scale = float(np.max(np.abs(reference)))
    return diff / scale if scale > 0 else diff


def record(check: str, value: float) -> None:
    """Keeps the largest value seen for ``check`` (printed in the session summary)."""
    MEASURED[check] = max(MEASURED.get(check, 0.0), value)


def check_close(check: str, err: float, rtol: float, where: str = "") -> None:
    """Records ``err`` under ``check`` and asserts ``err <= rtol``."""
    record(check, err)
    assert math.isfinite(err) and err <= rtol, f"{check} {where}: error {err:.3e} > tolerance {rtol:.1e}"


def check_componentwise(
    check: str, actual: Mapping[str, object], reference: Mapping[str, object], scale: Mapping[str, object], rtol: float
) -> None:
    """:func:`componentwise_err` for every key (the key sets must agree)."""
    assert sorted(actual) == sorted(reference), (sorted(actual), sorted(reference))
    for key in reference:
        check_close(check, componentwise_err(actual[key], reference[key], scale[key]), rtol, key)


def check_normwise(check: str, actual: Mapping[str, object], reference: Mapping[str, object], rtol: float) -> None:
    """:func:`normwise_err` for every key (the key sets must agree)."""
    assert sorted(actual) == sorted(reference), (sorted(actual), sorted(reference))
    for key in reference:
        check_close(check, normwise_err(actual[key], reference[key]), rtol, key)


# --- NumPy float64 references ------------------------------------------------------------


def tt_core_grads_reference(cores: Sequence[np.ndarray], dense_grad: np.ndarray) -> list[np.ndarray]:
    """``dL/dG_k`` from ``dL/dW`` (``(M, N)``, kernel layout) by the chain rule, in float64.

    ``W[a i b, c j e] = sum_{p q} L[a, c, p] G_k[p, i, j, q] R[q, b, e]`` with ``L`` the
    product of the cores before ``k`` and ``R`` of those after, so
    ``dG_k[p, i, j, q] = sum dW[a i b, c j e] L[a, c, p] R[q, b, e]``.

    >>> rng = np.random.default_rng(0)
    >>> cores = [rng.standard_normal(s) for s in [(1, 2, 3, 2), (2, 2, 1, 2), (2, 1, 2, 1)]]
    >>> dw = rng.standard_normal((4, 6))
    >>> grads = tt_core_grads_reference(cores, dw)
    >>> bumped = [c.copy() for c in cores]; bumped[1][1, 0, 0, 1] += 1e-6
    >>> numeric = (np.sum(tt_to_dense(bumped) * dw) - np.sum(tt_to_dense(cores) * dw)) / 1e-6
    >>> bool(abs(numeric - grads[1][1, 0, 0, 1]) < 1e-6)
    True
    """
    cores = [np.asarray(c, dtype=np.float64) for c in cores]
    grads = []
    for k, core in enumerate(cores):
        _, m, n, _ = core.shape
        left = _chain(cores[:k])[0]  # (M_<, N_<, r_{k-1})
        right = _chain(cores[k + 1 :])[..., 0]  # (r_k, M_>, N_>)
        a, c, _ = left.shape
        _, b, e = right.shape
        dw = np.asarray(dense_grad, dtype=np.float64).reshape(a, m, b, c, n, e)
        grads.append(np.einsum("aibcje,acp,qbe->pijq", dw, left, right))
    return grads


def _chain(cores: Sequence[np.ndarray]) -> np.ndarray:
    """Consecutive cores multiplied into one core ``(r_first, prod m, prod n, r_last)`` (none: ones)."""
    if not cores:
        return np.ones((1, 1, 1, 1))
    dense = cores[0]
    for core in cores[1:]:
        r, a, b, _ = dense.shape
        _, m, n, t = core.shape
        dense = np.einsum("rabs,smnt->rambnt", dense, core).reshape(r, a * m, b * n, t)
    return dense


def layer_reference(
    x: np.ndarray, cores: Sequence[np.ndarray], bias: np.ndarray | None, cotangent: np.ndarray
) -> dict[str, np.ndarray]:
    """Output and gradients of ``L = sum(layer(x) * cotangent)`` in float64, keyed like the torch layer.

    Keys: ``y``, ``x`` (dL/dx), ``cores.K``, ``bias``.
    """
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(cotangent, dtype=np.float64)
    w = tt_to_dense(cores)  # (M, N)
    y = x @ w + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    flat_x, flat_g = x.reshape(-1, w.shape[0]), g.reshape(-1, w.shape[1])
    out = {"y": y, "x": g @ w.T}
    out.update({f"cores.{k}": d for k, d in enumerate(tt_core_grads_reference(cores, flat_x.T @ flat_g))})
    if bias is not None:
        out["bias"] = flat_g.sum(axis=0)
    return out


def batch_norm_eval(x: np.ndarray, scale, bias, mean, var, eps: float = 1e-5) -> np.ndarray:
    """Batch norm with running statistics, in float64."""
    f64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return (f64(x) - f64(mean)) / np.sqrt(f64(var) + eps) * f64(scale) + f64(bias)
