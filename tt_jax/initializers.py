"""Initializers for TT cores that give the dense matrix a chosen variance.

A TT initializer is called as ``init(key, shape, dtype)`` with a
:class:`tt_common.TTMatrixShape` and returns one array per core. Core entries
are drawn i.i.d. with the per-core std of :func:`tt_common.core_std`, so the
dense matrix ``W`` has exactly the entry variance of the named dense
initializer (``scale / fan``), whichever distribution the cores use.

>>> import jax
>>> from tt_common import TTMatrixShape
>>> cores = lecun_normal()(jax.random.key(0), TTMatrixShape.create((4, 4), (2, 2), 2))
>>> [c.shape for c in cores]
[(1, 4, 2, 2), (2, 4, 2, 1)]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from tt_common.init import (
    TRUNCATED_NORMAL_STD,
    Distribution,
    FanMode,
    check_distribution,
    core_std,
    named_initializer,
    target_variance,
    thesis_bias_bound,
    thesis_core_bounds,
)
from tt_common.shapes import TTMatrixShape

__all__ = [
    "CoresInitializer",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "thesis_bias",
    "thesis_per_core",
    "variance_scaling",
]

CoresInitializer = Callable[..., tuple[jax.Array, ...]]


def _sample(key: jax.Array, shape: tuple[int, ...], std: float, distribution: str, dtype) -> jax.Array:
    if distribution == "normal":
        return std * jax.random.normal(key, shape, dtype)
    if distribution == "truncated_normal":
        return (std / TRUNCATED_NORMAL_STD) * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
    bound = std * 3.0**0.5  # uniform
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def variance_scaling(
    scale: float, mode: FanMode, distribution: Distribution = "normal"
) -> CoresInitializer:
    """Cores whose dense matrix has entry variance ``scale / fan`` (``fan`` by ``mode``)."""
    target_variance(TTMatrixShape.create((1,), (1,), 1), scale, mode)  # validates early
    check_distribution(distribution)

    def init(key: jax.Array, shape: TTMatrixShape, dtype=jnp.float32) -> tuple[jax.Array, ...]:
        std = core_std(shape, target_variance(shape, scale, mode))
        keys = jax.random.split(key, shape.d)
        return tuple(_sample(k, s, std, distribution, dtype) for k, s in zip(keys, shape.core_shapes))

    return init


glorot_normal = named_initializer("glorot_normal", variance_scaling)
glorot_uniform = named_initializer("glorot_uniform", variance_scaling)
he_normal = named_initializer("he_normal", variance_scaling)
he_uniform = named_initializer("he_uniform", variance_scaling)
lecun_normal = named_initializer("lecun_normal", variance_scaling)  # Flax's default kernel variance 1 / M (nn.Linear's is 1 / (3 M))
lecun_uniform = named_initializer("lecun_uniform", variance_scaling)


def thesis_per_core() -> CoresInitializer:
    """The thesis's per-core init: core ``k`` uniform on ``±1 / sqrt(r_{k-1} r_k n_k)``, each core on its own.

    Not a variance-exact rule: it reproduces the thesis's code (``kaiming_uniform_(a=sqrt(5))`` on each core,
    see :func:`tt_common.init.thesis_core_bounds`), which gives ``W`` a tiny scale. Before batch norm that acts
    as a large effective learning rate; use it to reproduce the thesis, not as a default.

    >>> import jax
    >>> from tt_common import TTMatrixShape
    >>> cores = thesis_per_core()(jax.random.key(0), TTMatrixShape.create((2, 2), (4, 4), 2))
    >>> [float(abs(c).max()) <= 8 ** -0.5 for c in cores]
    [True, True]
    """

    def init(key: jax.Array, shape: TTMatrixShape, dtype=jnp.float32) -> tuple[jax.Array, ...]:
        keys = jax.random.split(key, shape.d)
        return tuple(jax.random.uniform(k, s, dtype, -b, b)
                     for k, s, b in zip(keys, shape.core_shapes, thesis_core_bounds(shape)))

    return init


def thesis_bias(shape: TTMatrixShape) -> nnx.Initializer:
    """The thesis's TT bias init for a layer of ``shape``: uniform on ``±1 / sqrt(r_1 n_1)``.

    >>> import jax
    >>> from tt_common import TTMatrixShape
    >>> thesis_bias(TTMatrixShape.create((2, 2), (4, 4), 2))(jax.random.key(0), (16,)).shape
    (16,)
    """
    bound = thesis_bias_bound(shape)

    def init(key: jax.Array, size: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, size, dtype, -bound, bound)

    return init
