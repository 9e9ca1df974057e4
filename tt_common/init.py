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
from collections.abc import Callable
from typing import Any, Literal

from tt_common.shapes import TTMatrixShape

__all__ = [
    "DISTRIBUTIONS",
    "NAMED_INITIALIZERS",
    "TRUNCATED_NORMAL_STD",
    "Distribution",
    "FanMode",
    "check_distribution",
    "core_std",
    "named_initializer",
    "target_variance",
    "thesis_bias_bound",
    "thesis_core_bounds",
    "thesis_kernel_variance",
]

FanMode = Literal["fan_in", "fan_out", "fan_avg"]
Distribution = Literal["normal", "truncated_normal", "uniform"]

DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# The dense initializers that both frameworks offer by name: (scale, mode, distribution).
NAMED_INITIALIZERS: dict[str, tuple[float, FanMode, Distribution]] = {
    "glorot_normal": (1.0, "fan_avg", "normal"),  # 2 / (M + N), Glorot & Bengio 2010
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"),  # 2 / M, He et al. 2015, for ReLU networks
    "he_uniform": (2.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),  # 1 / M: Flax's default kernel variance
    "lecun_uniform": (1.0, "fan_in", "uniform"),
}

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


def check_distribution(distribution: str) -> None:
    """Raises a ``ValueError`` unless ``distribution`` is one of :data:`DISTRIBUTIONS`."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def core_std(shape: TTMatrixShape, variance: float) -> float:
    """Per-core entry std that gives the dense matrix the entry ``variance``.

    >>> shape = TTMatrixShape.create((4, 4), (2, 2), 2)
    >>> s = core_std(shape, 0.0625)
    >>> round(2 * s ** 4, 12)  # prod(inner ranks) * s**(2d)
    0.0625
    """
    inner = math.prod(shape.ranks[1:-1])
    return (variance / inner) ** (1.0 / (2 * shape.d))


def named_initializer(name: str, variance_scaling: Callable[..., Any]) -> Callable[[], Any]:
    """The zero-argument factory ``name()`` of a framework, from its ``variance_scaling`` and :data:`NAMED_INITIALIZERS`.

    >>> factory = named_initializer("he_normal", lambda *args: args)
    >>> factory.__name__, factory()
    ('he_normal', (2.0, 'fan_in', 'normal'))
    """
    scale, mode, distribution = NAMED_INITIALIZERS[name]

    def initializer() -> Any:
        return variance_scaling(scale, mode, distribution)

    initializer.__name__ = initializer.__qualname__ = name
    initializer.__doc__ = f"Cores whose dense matrix has the variance of ``{name}``: ``{scale:g} / {mode}``, {distribution} cores."
    return initializer


def thesis_core_bounds(shape: TTMatrixShape) -> tuple[float, ...]:
    """Uniform bounds of the thesis's per-core init: ``1 / sqrt(r_{k-1} r_k n_k)`` for core ``k``.

    The thesis stores core ``k`` as ``(m_k, r_{k-1}, r_k, n_k)`` and draws it with torch's
    ``kaiming_uniform_(a=sqrt(5))``, that is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with torch's fan-in of a
    4-D tensor, ``size(1) * size(2) * size(3) = r_{k-1} r_k n_k``. Unlike :func:`core_std`, this ignores the
    product: ``W`` gets a variance far below ``1 / M`` (thousands of times smaller in std on the thesis's
    ``784 -> 262144`` layer), which batch norm after the layer turns into a large effective learning rate.

    >>> thesis_core_bounds(TTMatrixShape.create((2, 2), (4, 4), 2))
    (0.35355339059327373, 0.35355339059327373)
    """
    r, n = shape.ranks, shape.out_modes
    return tuple(1.0 / math.sqrt(r[k] * r[k + 1] * n[k]) for k in range(shape.d))


def thesis_bias_bound(shape: TTMatrixShape) -> float:
    """Uniform bound of the thesis's TT bias: ``1 / sqrt(fan_in)`` of its first core, ``1 / sqrt(r_1 n_1)``.

    >>> thesis_bias_bound(TTMatrixShape.create((2, 2), (4, 4), 2))
    0.35355339059327373
    """
    return thesis_core_bounds(shape)[0]


def thesis_kernel_variance(shape: TTMatrixShape) -> float:
    """Entry variance of ``W`` under the thesis's per-core init: ``prod(inner ranks) * prod_k b_k**2 / 3``.

    On the thesis's ``784 -> 262144`` layer (rank 4) it is about 6e-11, 4,561x smaller in standard deviation
    than LeCun's ``1 / M``:

    >>> shape = TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)
    >>> f"{thesis_kernel_variance(shape):.2g}", round((1 / shape.in_features / thesis_kernel_variance(shape)) ** 0.5)
    ('6.1e-11', 4561)
    """
    return math.prod(shape.ranks[1:-1]) * math.prod(b * b / 3 for b in thesis_core_bounds(shape))
