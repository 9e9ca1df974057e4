"""``TTEmbedding``: a drop-in for ``nn.Embedding`` whose table is held as a TT matrix; the mirror of
:mod:`tt_jax.embedding`.

The layout and the lookup are those of :mod:`tt_common.embedding`: core ``k`` of shape ``(r_{k-1}, v_k, d_k, r_k)``,
row ``i`` read in the mixed radix of ``vocab_modes`` (first mode slowest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tt_common.contraction import Direction
from tt_common.embedding import TTEmbeddingShape, check_index_dtype, check_index_range, choose_lookup_direction, lookup
from tt_torch import functional
from tt_torch.functional import TTMatrix
from tt_torch.initializers import CoresInitializer, variance_scaling
from tt_torch.layer import fill_parameters_

__all__ = ["TTEmbedding", "tt_embedding"]

ArrayLike = torch.Tensor | np.ndarray


def _is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _gather(array: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return array[index]


def tt_embedding(
    ids: torch.Tensor,
    cores: Sequence[torch.Tensor],
    *,
    shape: TTEmbeddingShape,
    direction: Direction | None = None,
) -> torch.Tensor:
    """Rows ``ids`` of the TT table: ``ids.shape + (D,)``, gathered core slice by core slice.

    Indices must lie in ``[0, V)`` (:class:`TTEmbedding` checks; here an index ``>= V`` fails in torch's
    indexing, a negative one counts from the end). The padding row (``shape.padding_idx``) is zero.

    >>> import torch
    >>> shape = TTEmbeddingShape.create((3, 4), (2, 5), 2)
    >>> cores = [torch.ones(s) for s in shape.matrix.core_shapes]
    >>> tt_embedding(torch.tensor([[0, 11], [5, 1]]), cores, shape=shape).shape
    torch.Size([2, 2, 10])
    """
    check_index_dtype(_is_integer(ids.dtype), ids.dtype)
    shape.matrix.check_cores([tuple(c.shape) for c in cores])
    direction = choose_lookup_direction(shape) if direction is None else direction
    rows = lookup(ids.reshape(-1).long(), list(cores), shape, direction, permute=functional._permute, gather=_gather,
                  matmul=torch.matmul)
    return rows.reshape(*ids.shape, shape.features)


class TTEmbedding(nn.Module):
    """An embedding ``ids -> table[ids]`` (as ``nn.Embedding``) with the ``V x D`` table held as TT cores.

    The mirror of :class:`tt_jax.TTEmbedding`: same cores, lookup and ``to_dense()`` (the ``(V, D)`` table, the
    layout of ``nn.Embedding.weight``); ``layer(ids)`` equals ``layer.to_dense()[ids]``. Indices outside
    ``[0, V)`` raise a ``ValueError`` naming the index (as ``nn.Embedding``, negative ones are refused; under
    ``torch.compile`` the check is skipped and torch's indexing rules apply). ``padding_idx`` as
    ``nn.Embedding``'s: that row's output is zero and passes no gradient to the cores. Unlike ``nn.Embedding``
    it cannot be set to another value (the row is not a parameter of its own: every core slice is shared with
    other rows).

    Example::

      >>> import torch
      >>> import tt_torch
      >>> layer = tt_torch.TTEmbedding((10, 10, 10), (4, 4, 4), ranks=8, padding_idx=0)
      >>> layer(torch.tensor([[1, 2, 999], [0, 5, 7]])).shape
      torch.Size([2, 3, 64])
      >>> bool(layer(torch.tensor([0])).eq(0).all()), list(layer.state_dict())
      (True, ['cores.0', 'cores.1', 'cores.2'])
      >>> layer(torch.tensor([1.0]))
      Traceback (most recent call last):
      ...
      ValueError: indices must be of an integer dtype, got float32

    Args:
      vocab_modes, feature_modes, ranks, padding_idx, direction: as :class:`tt_jax.TTEmbedding`.
      cores_init: a TT initializer; ``None`` gives the table ``nn.Embedding``'s variance 1 (its ``N(0, 1)``;
        ``tt_jax``'s default is ``nnx.Embed``'s ``1 / D``).
      device, dtype: of the cores, as ``nn.Embedding``.
    """

    def __init__(
        self,
        vocab_modes: Sequence[int],
        feature_modes: Sequence[int],
        ranks: int | Sequence[int],
        *,
        padding_idx: int | None = None,
        cores_init: CoresInitializer | None = None,
        direction: Literal["auto", "ltr", "rtl"] = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = TTEmbeddingShape.create(vocab_modes, feature_modes, ranks, padding_idx)
        if direction not in ("auto", "ltr", "rtl"):
            raise ValueError(f"direction must be 'auto', 'ltr' or 'rtl', got {direction!r}")
        self.direction: Direction = choose_lookup_direction(self.shape) if direction == "auto" else direction
        # scale V over fan_in = V: variance 1, nn.Embedding's N(0, 1)
        self.cores_init = (variance_scaling(float(self.shape.num_embeddings), "fan_in") if cores_init is None
                           else cores_init)
        factory = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(s, **factory)) for s in self.shape.matrix.core_shapes])
        self.reset_parameters()

    @property
    def num_embeddings(self) -> int:
        return self.shape.num_embeddings

    @property
    def embedding_dim(self) -> int:
        """``D`` (``nn.Embedding``'s name; ``features`` too, as ``nnx.Embed``)."""
        return self.shape.features

    @property
    def features(self) -> int:
        return self.shape.features

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.shape.matrix.ranks

    @property
    def padding_idx(self) -> int | None:
        return self.shape.padding_idx

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draws the cores with ``cores_init``."""
        first = self.cores[0]
        cores = self.cores_init(generator, self.shape.matrix, dtype=first.dtype, device=first.device)
        self.shape.matrix.check_cores([tuple(c.shape) for c in cores])
        with torch.no_grad():
            for param, core in zip(self.cores, cores):
                param.copy_(core)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input`` (integers, any shape) -> ``input.shape + (D,)``."""
        check_index_dtype(_is_integer(input.dtype), input.dtype)
        if input.numel() and not torch.compiler.is_compiling():  # one host sync, as nn.Embedding's CPU check
            check_index_range(int(input.min()), int(input.max()), self.num_embeddings, allow_negative=False)
        return tt_embedding(input, list(self.cores), shape=self.shape, direction=self.direction)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.features}, vocab_modes={self.shape.vocab_modes}, "
                f"feature_modes={self.shape.feature_modes}, ranks={self.ranks}, padding_idx={self.padding_idx}, "
                f"direction={self.direction!r}")

    def tt_matrix(self) -> TTMatrix:
        """The cores as the ``V x D`` TT matrix (the parameters themselves; the padding row not zeroed)."""
        return TTMatrix(list(self.cores), self.shape.matrix)

    def to_dense(self) -> torch.Tensor:
        """The ``(V, D)`` table (its padding row zero), differentiable (never used in ``forward``)."""
        table = functional.to_dense(self.tt_matrix())
        if self.padding_idx is None:
            return table
        keep = torch.ones(self.num_embeddings, 1, dtype=table.dtype, device=table.device)
        keep[self.padding_idx] = 0
        return table * keep

    @classmethod
    def from_dense(
        cls,
        table: ArrayLike,
        vocab_modes: Sequence[int],
        feature_modes: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        **kwargs: Any,
    ) -> TTEmbedding:
        """A layer whose cores are the TT-SVD of a trained ``(V, D)`` table, on its device and in its dtype
        unless ``device`` / ``dtype`` are given; other keywords to the constructor.

        >>> import torch
        >>> table = torch.randn(12, 6, dtype=torch.float64)
        >>> layer = TTEmbedding.from_dense(table, (3, 4), (2, 3), max_rank=6)
        >>> layer.ranks, torch.allclose(layer.to_dense(), table)
        ((1, 6, 1), True)
        """
        table = torch.as_tensor(table)
        shape = TTEmbeddingShape.create(vocab_modes, feature_modes, 1)
        shape.matrix.check_kernel(tuple(table.shape), layout="(V, D)")
        device = kwargs.pop("device", table.device)
        kwargs.setdefault("dtype", table.dtype)
        tt = functional.from_dense(table.detach(), shape.vocab_modes, shape.feature_modes, max_rank=max_rank, rtol=rtol)
        layer = cls(tt.in_modes, tt.out_modes, tt.ranks, device="meta", **kwargs).to_empty(device=device)
        return fill_parameters_(layer, tt.cores)

    @classmethod
    def from_embedding(
        cls, embedding: nn.Embedding, vocab_modes: Sequence[int], feature_modes: Sequence[int], **kwargs: Any
    ) -> TTEmbedding:
        """The TT-SVD of an ``nn.Embedding``'s table, with its ``padding_idx``; keywords as :meth:`from_dense`.

        >>> import torch
        >>> layer = TTEmbedding.from_embedding(torch.nn.Embedding(12, 6, padding_idx=2), (3, 4), (2, 3), max_rank=2)
        >>> layer.ranks, layer.padding_idx
        ((1, 2, 1), 2)
        """
        if not isinstance(embedding, nn.Embedding):
            raise ValueError(f"embedding must be an nn.Embedding, got {type(embedding).__name__}")
        if embedding.max_norm is not None:
            raise ValueError("an nn.Embedding with max_norm renormalizes rows in place, which a TT table cannot")
        kwargs.setdefault("padding_idx", embedding.padding_idx)
        return cls.from_dense(embedding.weight, vocab_modes, feature_modes, **kwargs)
