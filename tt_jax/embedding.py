"""``TTEmbedding``: an embedding table (as ``nnx.Embed``) held as a TT matrix, looked up without building it.

The layout and the lookup are those of :mod:`tt_common.embedding`: core ``k`` of shape ``(r_{k-1}, v_k, d_k, r_k)``,
row ``i`` read in the mixed radix of ``vocab_modes`` (first mode slowest).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes

from tt_common.contraction import Direction
from tt_common.embedding import TTEmbeddingShape, check_index_dtype, check_index_range, choose_lookup_direction, lookup
from tt_jax import functional
from tt_jax.functional import TTMatrix
from tt_jax.initializers import CoresInitializer, variance_scaling
from tt_jax.layer import TTCore, fill_parameters

__all__ = ["TTEmbedding", "tt_embedding"]


def tt_embedding(
    ids: jax.Array,
    cores: Sequence[jax.Array],
    *,
    shape: TTEmbeddingShape,
    direction: Direction | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """Rows ``ids`` of the TT table: ``ids.shape + (D,)``, gathered core slice by core slice.

    Indices follow ``jnp.take`` (so ``nnx.Embed``): ``-V <= i < 0`` counts from the end; outside ``[-V, V)`` the
    row is NaN (the ``"fill"`` mode of JAX's gather; :class:`TTEmbedding` refuses such indices when they are
    concrete, and cannot under ``jax.jit``). The padding row (``shape.padding_idx``) is zero.

    >>> import jax.numpy as jnp
    >>> shape = TTEmbeddingShape.create((3, 4), (2, 5), 2)
    >>> cores = [jnp.ones(s) for s in shape.matrix.core_shapes]
    >>> tt_embedding(jnp.array([[0, 11], [5, -1]]), cores, shape=shape).shape
    (2, 2, 10)
    """
    check_index_dtype(jnp.issubdtype(ids.dtype, jnp.integer), ids.dtype)
    shape.matrix.check_cores([c.shape for c in cores])
    direction = choose_lookup_direction(shape) if direction is None else direction
    with jax.named_scope("tt_embedding"):
        rows = lookup(jnp.reshape(ids, -1), list(cores), shape, direction, permute=jnp.transpose,
                      gather=functools.partial(jnp.take, axis=0),
                      matmul=functools.partial(jnp.matmul, precision=precision))
        return rows.reshape(*ids.shape, shape.features)


class TTEmbedding(nnx.Module):
    """An embedding ``ids -> table[ids]`` with the ``V x D`` table held as TT cores (``V = prod(vocab_modes)``,
    ``D = prod(feature_modes)``).

    ``to_dense()`` is the ``(V, D)`` table and ``layer(ids)`` equals ``jnp.take(layer.to_dense(), ids, axis=0)``
    for any integer ``ids`` shape; the lookup gathers one slice of each core per index and contracts them (the
    cheaper direction by FLOPs), never building the table. Indices: ``[-V, V)``, negative ones from the end, as
    ``nnx.Embed``; concrete indices outside raise a ``ValueError``, traced ones (``jax.jit``) give NaN rows,
    JAX's documented ``"fill"`` gather. ``padding_idx`` (not in ``nnx.Embed``; the mirror of ``tt_torch``'s,
    from ``nn.Embedding``): that row is zero and passes no gradient to the cores.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import tt_jax
      >>> layer = tt_jax.TTEmbedding((10, 10, 10), (4, 4, 4), ranks=8, rngs=nnx.Rngs(0))
      >>> layer(jnp.array([[1, 2, 999], [0, 5, -1]])).shape
      (2, 3, 64)
      >>> layer.to_dense().shape, layer.shape.matrix.num_params
      ((1000, 64), 3200)
      >>> layer(jnp.array([1000]))
      Traceback (most recent call last):
      ...
      ValueError: index 1000 is out of range for a vocabulary of V = 1000 (valid: -1000 <= index < 1000)

    Args:
      vocab_modes: factors ``v_1..v_d`` of the vocabulary size ``V``.
      feature_modes: factors ``d_1..d_d`` of the feature size ``D``.
      ranks: an int or the full ``(1, r_1, ..., r_{d-1}, 1)``, clipped as a TT matrix's.
      padding_idx: ``None`` or a row in ``[-V, V)`` whose output is zero.
      dtype, param_dtype, rngs: as ``nnx.Embed``.
      cores_init: a TT initializer; ``None`` gives the table ``nnx.Embed``'s default variance: its
        ``variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)`` on a ``(V, D)`` table takes ``D`` as the fan,
        so ``1 / D`` (``tt_jax.initializers.variance_scaling(1.0, "fan_out")`` of the ``V x D`` TT matrix).
      direction: ``"auto"`` (fewer FLOPs), ``"ltr"`` or ``"rtl"``.
      precision: of the products, see ``jax.lax.Precision``.
    """

    def __init__(
        self,
        vocab_modes: Sequence[int],
        feature_modes: Sequence[int],
        ranks: int | Sequence[int],
        *,
        padding_idx: int | None = None,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        cores_init: CoresInitializer | None = None,
        direction: Literal["auto", "ltr", "rtl"] = "auto",
        precision: jax.lax.PrecisionLike = None,
        rngs: nnx.Rngs,
    ):
        self.shape = TTEmbeddingShape.create(vocab_modes, feature_modes, ranks, padding_idx)
        if direction not in ("auto", "ltr", "rtl"):
            raise ValueError(f"direction must be 'auto', 'ltr' or 'rtl', got {direction!r}")
        self.direction: Direction = choose_lookup_direction(self.shape) if direction == "auto" else direction
        self.dtype, self.param_dtype, self.precision = dtype, param_dtype, precision
        self.cores_init = variance_scaling(1.0, "fan_out") if cores_init is None else cores_init
        cores = self.cores_init(rngs.params(), self.shape.matrix, param_dtype)
        self.shape.matrix.check_cores([c.shape for c in cores])
        self.cores = nnx.List([TTCore(c) for c in cores])

    @property
    def num_embeddings(self) -> int:
        return self.shape.num_embeddings

    @property
    def features(self) -> int:
        return self.shape.features

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.shape.matrix.ranks

    @property
    def padding_idx(self) -> int | None:
        return self.shape.padding_idx

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs`` (integers, any shape) -> ``inputs.shape + (D,)``."""
        inputs = jnp.asarray(inputs)
        check_index_dtype(jnp.issubdtype(inputs.dtype, jnp.integer), inputs.dtype)
        if not isinstance(inputs, jax.core.Tracer) and inputs.size:  # concrete: say which index is wrong
            check_index_range(int(inputs.min()), int(inputs.max()), self.num_embeddings, allow_negative=True)
        cores = dtypes.promote_dtype(tuple(c[...] for c in self.cores), dtype=self.dtype, inexact=False)
        return tt_embedding(inputs, cores, shape=self.shape, direction=self.direction, precision=self.precision)

    def tt_matrix(self) -> TTMatrix:
        """The cores as the ``V x D`` TT matrix (the arrays, not the parameters; the padding row not zeroed)."""
        return TTMatrix([c[...] for c in self.cores], self.shape.matrix)

    def to_dense(self) -> jax.Array:
        """The ``(V, D)`` table (its padding row zero), differentiable (never used in ``__call__``)."""
        table = functional.to_dense(self.tt_matrix())
        return table if self.padding_idx is None else table.at[self.padding_idx].set(0)

    @classmethod
    def from_dense(
        cls,
        table: jax.Array | np.ndarray,
        vocab_modes: Sequence[int],
        feature_modes: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        **kwargs: Any,
    ) -> TTEmbedding:
        """A layer whose cores are the TT-SVD of a trained ``(V, D)`` table; other keywords to the constructor.

        >>> import numpy as np
        >>> table = np.random.default_rng(0).standard_normal((12, 6)).astype(np.float32)
        >>> layer = TTEmbedding.from_dense(table, (3, 4), (2, 3), max_rank=6)
        >>> layer.ranks, bool(np.allclose(layer.to_dense(), table, atol=1e-5))
        ((1, 6, 1), True)
        """
        shape = TTEmbeddingShape.create(vocab_modes, feature_modes, 1)
        shape.matrix.check_kernel(np.shape(table), layout="(V, D)")
        tt = functional.from_dense(table, shape.vocab_modes, shape.feature_modes, max_rank=max_rank, rtol=rtol)
        kwargs.pop("rngs", None)
        layer = nnx.eval_shape(lambda: cls(tt.in_modes, tt.out_modes, tt.ranks, rngs=nnx.Rngs(0), **kwargs))
        return fill_parameters(layer, tt.cores)

    @classmethod
    def from_embed(
        cls, embed: nnx.Embed, vocab_modes: Sequence[int], feature_modes: Sequence[int], **kwargs: Any
    ) -> TTEmbedding:
        """The TT-SVD of an ``nnx.Embed``'s table (its dtypes too); keywords as :meth:`from_dense`.

        >>> from flax import nnx
        >>> layer = TTEmbedding.from_embed(nnx.Embed(12, 6, rngs=nnx.Rngs(0)), (3, 4), (2, 3), max_rank=2)
        >>> layer.ranks
        (1, 2, 1)
        """
        if not isinstance(embed, nnx.Embed):
            raise ValueError(f"embed must be an nnx.Embed, got {type(embed).__name__}")
        settings = dict(dtype=embed.dtype, param_dtype=embed.param_dtype)
        return cls.from_dense(embed.embedding[...], vocab_modes, feature_modes, **{**settings, **kwargs})
