"""Broadcasts and sums over the leading (batch) axes, written so that XLA:CPU does not reduce column by column.

XLA:CPU sums a ``(B, N)`` array over its leading axis one strided column at a
time: for ``B = 100, N = 262144`` (the thesis's first hidden layer) that took
119 ms on our 2-core CPU, against 3 ms for the same sum as the vector-matrix
product ``ones(B) @ x``. Autodiff turns every broadcast of an ``(N,)`` vector
over the batch (a bias, batch-norm statistics) into exactly such a sum in the
backward pass. Here the sums are matrix products, and :func:`broadcast_rows`
is ``jnp.broadcast_to`` whose tangent is an outer product with a column of
ones, so that its transpose (the gradient) is again a matrix product. Values
and gradients are those of the plain forms (up to float rounding order); GPU
and TPU back ends are unaffected but for ``Precision.HIGHEST`` in those products.

>>> import jax, jax.numpy as jnp
>>> x = jnp.arange(6, dtype=jnp.float32).reshape(3, 2)
>>> sum_rows(x).tolist(), mean_rows(x).tolist()
([6.0, 9.0], [2.0, 3.0])
>>> jax.grad(lambda v: (broadcast_rows(v, (3, 2)) * x).sum())(jnp.ones(2, jnp.float32)).tolist()
[6.0, 9.0]
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

__all__ = ["broadcast_rows", "mean_rows", "sum_rows"]

_HIGHEST = jax.lax.Precision.HIGHEST


def sum_rows(x: jax.Array) -> jax.Array:
    """``x.sum(axis=all but the last)`` for ``x`` of shape ``(..., N)``, as a vector-matrix product."""
    rows = math.prod(x.shape[:-1])
    return jnp.matmul(jnp.ones((rows,), x.dtype), x.reshape(rows, x.shape[-1]), precision=_HIGHEST)


def mean_rows(x: jax.Array) -> jax.Array:
    """``x.mean(axis=all but the last)``, as :func:`sum_rows` divided by the number of rows."""
    return sum_rows(x) / math.prod(x.shape[:-1])


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def broadcast_rows(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``jnp.broadcast_to(v, shape)`` for ``v`` of shape ``(N,)``; its gradient is a :func:`sum_rows`."""
    return jnp.broadcast_to(v, shape)


@broadcast_rows.defjvp
def _broadcast_rows_jvp(shape, primals, tangents):
    (v,), (dv,) = primals, tangents
    rows = math.prod(shape[:-1])
    # An outer product with ones: linear in dv, and transposed by autodiff into ones @ g.
    ones = jnp.ones((rows, 1), dv.dtype)
    tangent = jnp.matmul(ones, dv.reshape(1, -1), precision=_HIGHEST).reshape(shape)
    return jnp.broadcast_to(v, shape), tangent
