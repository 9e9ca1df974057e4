"""``Dropout``: ``nnx.Dropout`` that draws its mask from 16 random bits per element, two per 32-bit draw.

The thesis's CIFAR-10 networks drop 20% of every hidden layer, 4.3 million
features per batch of 100 after ``3072 -> 32768 -> 8192 -> 1024 -> 1024``. JAX's
default generator (threefry, partitionable since JAX 0.5) hashes once per element
of ``jax.random.bernoulli``: on our 2-core CPU a mask for those 4.3 million
features took 47-54 ms. Drawing ``uint32`` words for half the elements and
splitting each into two ``uint16`` halves hashes half as often: 14-16 ms
(``keep_mask``). The training step of ``cifar-4tt-fc-146k`` took 121 instead of
132 ms (median of 40, interleaved; ``benchmarks/proposals/README.md`` section 13).
The keep probability is rounded to a multiple of 2^-16 (``rate=0.2`` keeps
with probability 0.8000031) and kept values are divided by that rounded
probability, so the expected output still equals the input. Same constructor,
variables, ``deterministic`` handling and edge cases (``rate`` 0 or 1) as
``nnx.Dropout``; a different random stream.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> dropout = Dropout(0.5, rngs=nnx.Rngs(dropout=0))
>>> y = dropout(jnp.ones((4, 1000)))
>>> sorted({float(v) for v in y.ravel()}), abs(float((y == 0).mean()) - 0.5) < 0.05
([0.0, 2.0], True)
>>> bool((dropout(jnp.ones(3), deterministic=True) == 1).all())
True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib

__all__ = ["Dropout", "keep_mask", "keep_threshold"]

_HALF_WORD = 2**16


def keep_threshold(keep_prob: float) -> int:
    """Out of 2^16: an element is kept when its 16 random bits, read as an integer, are below this.

    >>> keep_threshold(0.8), keep_threshold(0.8) / 2**16, keep_threshold(1.0)
    (52429, 0.8000030517578125, 65536)
    """
    if not 0.0 <= keep_prob <= 1.0:
        raise ValueError(f"keep probability must be in [0, 1], got {keep_prob}")
    return round(keep_prob * _HALF_WORD)


def keep_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """A boolean mask of ``shape``, each element ``True`` with probability ``keep_threshold(keep_prob) / 2**16``.

    One ``uint32`` from ``jax.random.bits`` gives two elements (its two 16-bit halves).

    >>> mask = keep_mask(jax.random.key(0), 0.25, (3, 5))
    >>> mask.shape, mask.dtype
    ((3, 5), dtype('bool'))
    """
    threshold = keep_threshold(keep_prob)
    if threshold == _HALF_WORD:
        return jnp.ones(shape, jnp.bool_)
    size = math.prod(shape)
    words = jax.random.bits(key, ((size + 1) // 2,), jnp.uint32)
    halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:size]
    return (halves < jnp.uint16(threshold)).reshape(shape)


class Dropout(nnx.Dropout):
    """``nnx.Dropout`` with the same arguments, masks drawn by :func:`keep_mask` (half the hashes)."""

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise ValueError("Dropout needs deterministic: pass it to the constructor or the call, "
                             "or use model.train() / model.eval()")
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:  # as nnx.Dropout: no division by a zero keep probability (gradient NaNs)
            return jnp.zeros_like(inputs)
        key = self._key(rngs)
        threshold = keep_threshold(1.0 - self.rate)
        if threshold == 0:
            return jnp.zeros_like(inputs)
        mask_shape = tuple(1 if k in self._broadcast_axes(inputs.ndim) else n for k, n in enumerate(inputs.shape))
        mask = jnp.broadcast_to(keep_mask(key, 1.0 - self.rate, mask_shape), inputs.shape)
        kept = inputs / jnp.asarray(threshold / _HALF_WORD, inputs.dtype)
        return jax.lax.select(mask, kept, jnp.zeros_like(inputs))

    def _broadcast_axes(self, ndim: int) -> set[int]:
        return {dim % ndim for dim in self.broadcast_dims}

    def _key(self, rngs: rnglib.Rngs | rnglib.RngStream | jax.Array | None) -> jax.Array:
        rngs = self.rngs if rngs is None else rngs
        if isinstance(rngs, rnglib.Rngs):
            return rngs[self.rng_collection]()
        if isinstance(rngs, rnglib.RngStream):
            return rngs()
        if isinstance(rngs, jax.Array):
            return rngs
        raise ValueError("Dropout is not deterministic but has no rngs: pass rngs to the constructor or the call")
