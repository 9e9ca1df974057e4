"""``BatchNorm``: ``nnx.BatchNorm`` whose sums over the batch are matrix products, on XLA:CPU only.

The thesis puts a batch norm after every TT layer; after ``784 -> 262144`` it
normalizes 262,144 features, and XLA:CPU sums such an array over the batch one
strided column at a time (statistics forward, scale/bias/input gradients
backward). Here those sums are products with a vector of ones (``mean_rows``,
``tt_jax._xla_cpu.broadcast_rows``): the whole training step of ``tt-tt`` is
several times faster on a CPU (``docs/performance.md``). Same constructor,
variables (``scale``, ``bias``, ``mean``, ``var``), running-statistics update and
outputs as ``nnx.BatchNorm`` (up to float rounding order). Other backends, and
the cases it does not cover (a ``mask``, a feature axis other than the last,
``axis_name``, ``use_fast_variance=False``), go to ``nnx.BatchNorm`` unchanged.
Not part of the library: the experiments' networks use it.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> norm = BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
>>> y = norm(jnp.arange(12, dtype=jnp.float32).reshape(4, 3), use_running_average=False)
>>> [round(float(v), 6) for v in y.mean(0)], [round(float(v), 6) for v in norm.mean[...]]
([0.0, 0.0, 0.0], [0.45, 0.55, 0.65])
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from tt_jax._xla_cpu import broadcast_rows, on_cpu

__all__ = ["BatchNorm", "mean_rows"]

_HIGHEST = jax.lax.Precision.HIGHEST


def mean_rows(x: jax.Array) -> jax.Array:
    """``x.mean(axis=all but the last)`` for ``x`` of shape ``(..., N)``, as a vector-matrix product.

    >>> mean_rows(jnp.arange(6, dtype=jnp.float32).reshape(3, 2)).tolist()
    [2.0, 3.0]
    """
    rows = math.prod(x.shape[:-1])
    return jnp.matmul(jnp.ones((rows,), x.dtype), x.reshape(rows, x.shape[-1]), precision=_HIGHEST) / rows


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` with the same arguments and results, its batch sums done as matrix products on a CPU."""

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None):
        feature_last = self.axis in (-1, x.ndim - 1)
        if not on_cpu() or mask is not None or self.axis_name is not None or not self.use_fast_variance or not feature_last:
            return super().__call__(x, use_running_average, mask=mask)
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average is None:
            raise ValueError("BatchNorm needs use_running_average: pass it to the constructor or the call, "
                             "or use model.train() / model.eval()")
        scale = self.scale[...] if self.scale is not None else None
        bias = self.bias[...] if self.bias is not None else None
        x, mean, var, scale, bias = self.promote_dtype(
            (x, self.mean[...], self.var[...], scale, bias), dtype=self.dtype
        )
        if not use_running_average:
            # As nnx.BatchNorm: statistics in at least float32, var = E[x^2] - E[x]^2 clipped at 0.
            stats = x.astype(jnp.promote_types(self.dtype or x.dtype, jnp.float32))
            mean = mean_rows(stats)
            var = jnp.maximum(0.0, mean_rows(stats * stats) - mean * mean)
            for running, batch in ((self.mean, mean), (self.var, var)):
                new = self.momentum * running[...] + (1 - self.momentum) * batch
                running[...] = jax.lax.stop_gradient(new).astype(running[...].dtype)
        mul = jax.lax.rsqrt(var + self.epsilon)
        args = [x]
        if scale is not None:
            mul = mul * scale
            args.append(scale)
        y = (x - broadcast_rows(mean, x.shape)) * broadcast_rows(mul, x.shape)
        if bias is not None:
            y = y + broadcast_rows(bias, x.shape)
            args.append(bias)
        return jnp.asarray(y, dtypes.canonicalize_dtype(*args, dtype=self.dtype))
