"""``BatchNorm``: ``nnx.BatchNorm`` whose sums over the batch are matrix products (fast on XLA:CPU).

The thesis puts a batch norm after every TT layer; after ``784 -> 262144`` it
normalizes 262,144 features, and with ``nnx.BatchNorm`` its column sums
(statistics forward, scale/bias/input gradients backward) took about 0.6 s of a
1.1 s training step on our 2-core CPU (see :mod:`tt_jax.rows`). This subclass
has the same constructor, variables (``scale``, ``bias``, ``mean``, ``var``),
running-statistics update and outputs; only the sums are computed differently.
Cases it does not cover (a ``mask``, a feature axis other than the last,
``axis_name``, ``use_fast_variance=False``) go to ``nnx.BatchNorm`` unchanged.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> norm = BatchNorm(3, momentum=0.9, rngs=nnx.Rngs(0))
>>> y = norm(jnp.arange(12, dtype=jnp.float32).reshape(4, 3), use_running_average=False)
>>> [round(float(v), 6) for v in y.mean(0)], [round(float(v), 6) for v in norm.mean[...]]
([0.0, 0.0, 0.0], [0.45, 0.55, 0.65])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from tt_jax.rows import broadcast_rows, mean_rows

__all__ = ["BatchNorm"]


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` with the same arguments and results, its batch sums done as matrix products."""

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None):
        feature_last = self.axis in (-1, x.ndim - 1)
        if mask is not None or self.axis_name is not None or not self.use_fast_variance or not feature_last:
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
