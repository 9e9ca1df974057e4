"""What ``tt_jax`` does differently on XLA:CPU, and only there (measurements: ``docs/performance.md``).

- The planner's cost per small matrix product of a broadcast step
  (:data:`XLA_CPU_PRODUCT_FLOPS`): XLA:CPU runs a batched dot product by product.
- The bias is broadcast by :func:`broadcast_rows`, whose gradient (the sum of the
  output gradient over the batch) is the matrix product ``ones @ g`` instead of
  XLA:CPU's column-by-column reduction.

- A grouped convolution whose groups share one filter (``TTConv2d``'s spatial core) runs as one ordinary
  convolution over the groups folded into the batch (:func:`shared_filter_conv`): XLA:CPU differentiates
  grouped convolutions so slowly that TTConv2d's training step runs 28-50x longer (docs/performance.md).

Other backends get the plain forms: no cost per product, ``y + bias``, ``feature_group_count``.

>>> import jax, jax.numpy as jnp
>>> x = jnp.arange(6, dtype=jnp.float32).reshape(3, 2)
>>> jax.grad(lambda v: (broadcast_rows(v, (3, 2)) * x).sum())(jnp.ones(2, jnp.float32)).tolist()
[6.0, 9.0]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["XLA_CPU_PRODUCT_FLOPS", "add_bias", "broadcast_rows", "on_cpu", "product_flops", "shared_filter_conv"]

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


def shared_filter_conv(x: jax.Array, kernel: jax.Array, groups: int, conv: Callable[..., jax.Array]) -> jax.Array:
    """A grouped convolution of NHWC ``x`` ``(B, H, W, groups I)`` in which every group has the filter ``kernel``
    ``(kh, kw, I, O)``: ``(B, H', W', groups O)``, group ``g``'s outputs at channels ``g O .. g O + O - 1``.

    ``conv(inputs, kernel, feature_group_count=)`` is the convolution (strides, padding, dilation bound). On
    XLA:CPU the groups are folded into the batch and ``conv`` runs once without groups; elsewhere it runs
    grouped with ``kernel`` tiled over the groups.

    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> conv = lambda x, k, feature_group_count=1: lax.conv_general_dilated(
    ...     x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=feature_group_count)
    >>> x, kernel = jnp.ones((1, 4, 4, 6)), jnp.ones((3, 3, 2, 1))
    >>> bool(jnp.allclose(shared_filter_conv(x, kernel, 3, conv), conv(x, jnp.tile(kernel, (1, 1, 1, 3)), 3)))
    True
    """
    if not on_cpu():
        return conv(x, jnp.tile(kernel, (1, 1, 1, groups)), feature_group_count=groups)
    b, h, w, c = x.shape
    folded = jnp.transpose(x.reshape(b, h, w, groups, c // groups), (0, 3, 1, 2, 4)).reshape(b * groups, h, w, -1)
    y = conv(folded, kernel)
    _, out_h, out_w, o = y.shape
    return jnp.transpose(y.reshape(b, groups, out_h, out_w, o), (0, 2, 3, 1, 4)).reshape(b, out_h, out_w, groups * o)
