"""The variance rule of TT initializers, shared by both frameworks.

An entry of the dense matrix ``W`` is a sum over ``prod(r_1..r_{d-1})`` rank
paths of products of ``d`` core entries. With all core entries independent,
zero-mean and of variance ``s**2``::

    Var(W_ij) = prod(r_1..r_{d-1}) * s**(2 d)

so the per-core standard deviation ``s = (sigma / sqrt(prod r))**(1/d)`` gives
``W`` exactly the variance ``sigma**2`` of a dense initializer (Glorot, He,
LeCun) for every distribution of the core entries.
"""

from __future__ import annotations

import math
from typing import Literal

from tt_common.shapes import TTMatrixShape

__all__ = ["Distribution", "FanMode", "core_std", "target_variance", "TRUNCATED_NORMAL_STD"]

FanMode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]

# Standard deviation of a standard normal truncated to [-2, 2] (as in jax.nn.initializers).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def target_variance(shape: TTMatrixShape, scale: float, mode: FanMode) -> float:
    """``scale / fan`` with ``fan_in = M``, ``fan_out = N``, ``fan_avg = (M + N) / 2``.

    >>> target_variance(TTMatrixShape.create((4, 4), (2, 2), 2), 1.0, "fan_in")
    0.0625
    """
    fans = {
        "fan_in": shape.in_features,
        "fan_out": shape.out_features,
        "fan_avg": (shape.in_features + shape.out_features) / 2,
    }
    if mode not in fans:
        raise ValueError(f"mode must be one of {sorted(fans)}, got {mode!r}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return scale / fans[mode]


def core_std(shape: TTMatrixShape, variance: float) -> float:
    """Per-core entry std that gives the dense matrix the entry ``variance``.

    >>> shape = TTMatrixShape.create((4, 4), (2, 2), 2)
    >>> s = core_std(shape, 0.0625)
    >>> round(2 * s ** 4, 12)  # prod(inner ranks) * s**(2d)
    0.0625
    """
    inner = math.prod(shape.ranks[1:-1])
    return (variance / inner) ** (1.0 / (2 * shape.d))
