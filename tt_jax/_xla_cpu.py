"""What ``tt_jax`` does differently on XLA:CPU, and only there (measurements: ``docs/performance.md``).

- The planner's cost per small matrix product of a broadcast step
  (:data:`XLA_CPU_PRODUCT_FLOPS`): XLA:CPU runs a batched dot product by product.
- The bias is broadcast by :func:`broadcast_rows`, whose gradient (the sum of the
  output gradient over the batch) is the matrix product ``ones @ g`` instead of
  XLA:CPU's column-by-column reduction.

Other backends get the plain forms: no cost per product, ``y + bias``.

>>> import jax, jax.numpy as jnp
>>> x = jnp.arange(6, dtype=jnp.float32).reshape(3, 2)
>>> jax.grad(lambda v: (broadcast_rows(v, (3, 2)) * x).sum())(jnp.ones(2, jnp.float32)).tolist()
[6.0, 9.0]
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

__all__ = ["XLA_CPU_PRODUCT_FLOPS", "add_bias", "broadcast_rows", "on_cpu", "product_flops"]

# The planner's cost (in FLOPs, about 1 us on a CPU) of each small matrix product of a broadcast step under
# XLA:CPU, whose batched dot runs them one by one, where torch's bmm hands them to one batched GEMM. Fitted on
# the merge plans measured in docs/performance.md (Findings): values from 3e4 to 1e5 picked plans within
# 3% of the fastest measured JAX training step on the four large benchmark layers.
XLA_CPU_PRODUCT_FLOPS = 1e5

_HIGHEST = jax.lax.Precision.HIGHEST


def on_cpu() -> bool:
    """Whether JAX computes on XLA:CPU (the default backend is the CPU)."""
    return jax.default_backend() == "cpu"


def product_flops() -> float:
    """The planner's cost per small matrix product on this backend: XLA:CPU pays for each, others do not."""
    return XLA_CPU_PRODUCT_FLOPS if on_cpu() else 0.0


def add_bias(y: jax.Array, bias: jax.Array | None) -> jax.Array:
    """``y + bias`` over the last axis; on XLA:CPU through :func:`broadcast_rows`."""
    if bias is None:
        return y
    if on_cpu():
        return y + broadcast_rows(bias, y.shape)
    return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def broadcast_rows(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``jnp.broadcast_to(v, shape)`` for ``v`` of shape ``(N,)``; its gradient is the product ``ones @ g``."""
    return jnp.broadcast_to(v, shape)


@broadcast_rows.defjvp
def _broadcast_rows_jvp(shape, primals, tangents):
    (v,), (dv,) = primals, tangents
    rows = math.prod(shape[:-1])
    # An outer product with ones: linear in dv, and transposed by autodiff into ones @ g.
    ones = jnp.ones((rows, 1), dv.dtype)
    tangent = jnp.matmul(ones, dv.reshape(1, -1), precision=_HIGHEST).reshape(shape)
    return jnp.broadcast_to(v, shape), tangent
