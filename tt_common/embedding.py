"""Shapes, FLOPs and the lookup of a TT embedding (``TTEmbedding``), written once for every array library.

Layout. A ``V x D`` table with ``V = v_1..v_d`` rows and ``D = d_1..d_d`` features is a TT matrix
(:class:`tt_common.TTMatrixShape` with in-modes ``vocab_modes`` and out-modes ``feature_modes``): core ``k`` of
shape ``(r_{k-1}, v_k, d_k, r_k)``, rows and features row-major (the first mode varies slowest), exactly the
library's convention for TT matrices, so shapes, rank clipping, TT-SVD, rounding and transfer (``P.cores.K``)
apply unchanged.

Lookup. Row ``i`` has the digits ``i_k = (i // (v_{k+1}..v_d)) mod v_k`` in the mixed radix of the vocabulary
modes; its features are ``G_1[:, i_1, :, :] ... G_d[:, i_d, :, :]`` contracted over the ranks. :func:`lookup`
gathers one ``(r_{k-1}, d_k, r_k)`` slice of each core per index and chains the slices as batched matrix
products, left to right or right to left, whichever costs fewer FLOPs (:func:`lookup_flops`): the table is never
built. The first digit is taken without the modulo, so that a negative index ``i >= -V`` gathers the same row
as ``i + V`` (NumPy's and ``jnp.take``'s rule) and an index ``>= V`` gives a first digit out of range, which the
framework's gather handles as it documents.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tt_common.contraction import Direction
from tt_common.shapes import TTMatrixShape

__all__ = ["TTEmbeddingShape", "check_index_dtype", "check_index_range", "choose_lookup_direction", "digits", "lookup",
           "lookup_flops"]


@dataclass(frozen=True)
class TTEmbeddingShape:
    """Validated shape of a TT embedding: the table's TT matrix and the padding row (or ``None``).

    >>> shape = TTEmbeddingShape.create((10, 10, 10), (4, 4, 4), ranks=8, padding_idx=-1)
    >>> shape.num_embeddings, shape.features, shape.matrix.ranks, shape.padding_idx
    (1000, 64, (1, 8, 8, 1), 999)
    >>> shape.matrix.num_params, shape.matrix.dense_num_params
    (3200, 64000)
    """

    matrix: TTMatrixShape
    padding_idx: int | None = None

    @classmethod
    def create(
        cls,
        vocab_modes: Sequence[int],
        feature_modes: Sequence[int],
        ranks: int | Sequence[int],
        padding_idx: int | None = None,
    ) -> TTEmbeddingShape:
        """Validates the modes and ranks (as :meth:`TTMatrixShape.create`) and ``padding_idx``.

        ``padding_idx`` follows ``nn.Embedding``: an int in ``[-V, V)``, a negative one counted from the end.

        >>> TTEmbeddingShape.create((2, 3), (2, 2), 2, padding_idx=6)
        Traceback (most recent call last):
        ...
        ValueError: padding_idx must be an int in [-6, 6) (the vocabulary size V = prod(vocab_modes) = 6), got 6
        """
        matrix = TTMatrixShape.create(vocab_modes, feature_modes, ranks)
        vocab = matrix.in_features
        if padding_idx is not None:
            if (isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral)
                    or not -vocab <= padding_idx < vocab):
                raise ValueError(f"padding_idx must be an int in [{-vocab}, {vocab}) (the vocabulary size "
                                 f"V = prod(vocab_modes) = {vocab}), got {padding_idx!r}")
            padding_idx = int(padding_idx) % vocab
        return cls(matrix, padding_idx)

    @property
    def vocab_modes(self) -> tuple[int, ...]:
        return self.matrix.in_modes

    @property
    def feature_modes(self) -> tuple[int, ...]:
        return self.matrix.out_modes

    @property
    def num_embeddings(self) -> int:
        """``V = prod(vocab_modes)``."""
        return self.matrix.in_features

    @property
    def features(self) -> int:
        """``D = prod(feature_modes)``."""
        return self.matrix.out_features

    @property
    def strides(self) -> tuple[int, ...]:
        """``v_{k+1}..v_d`` per mode: the place value of digit ``k``.

        >>> TTEmbeddingShape.create((10, 4, 5), (2, 2, 2), 2).strides
        (20, 5, 1)
        """
        modes = self.vocab_modes
        return tuple(math.prod(modes[k + 1 :]) for k in range(len(modes)))


def check_index_dtype(is_integer: bool, dtype: object) -> None:
    """Raises a ``ValueError`` naming ``dtype`` unless the indices are integers (bools are not).

    >>> check_index_dtype(False, "float32")
    Traceback (most recent call last):
    ...
    ValueError: indices must be of an integer dtype, got float32
    """
    if not is_integer:
        raise ValueError(f"indices must be of an integer dtype, got {str(dtype).removeprefix('torch.')}")


def check_index_range(smallest: int, largest: int, num_embeddings: int, allow_negative: bool) -> None:
    """Raises a ``ValueError`` naming the offending index unless all lie in ``[0, V)`` (``[-V, V)`` if negative
    indices count from the end).

    >>> check_index_range(0, 7, 6, allow_negative=False)
    Traceback (most recent call last):
    ...
    ValueError: index 7 is out of range for a vocabulary of V = 6 (valid: 0 <= index < 6)
    """
    low = -num_embeddings if allow_negative else 0
    for value in (smallest, largest):
        if not low <= value < num_embeddings:
            raise ValueError(f"index {value} is out of range for a vocabulary of V = {num_embeddings} "
                             f"(valid: {low} <= index < {num_embeddings})")


def lookup_flops(shape: TTEmbeddingShape, num_indices: int, direction: Direction) -> int:
    """FLOPs of chaining the gathered slices for ``num_indices`` indices (the gathers are copies, no FLOPs).

    Left to right, step ``k`` multiplies ``(D_<k, r_{k-1}) @ (r_{k-1}, d_k r_k)``; right to left,
    ``(r_{k-1} d_k, r_k) @ (r_k, D_>k)``.

    >>> shape = TTEmbeddingShape.create((10, 10), (2, 32), 4)
    >>> lookup_flops(shape, 1, "ltr"), lookup_flops(shape, 1, "rtl")
    (512, 512)
    """
    n, r, d = shape.feature_modes, shape.matrix.ranks, shape.matrix.d
    if direction == "ltr":
        per_index = sum(2 * math.prod(n[:k]) * r[k] * n[k] * r[k + 1] for k in range(1, d))
    elif direction == "rtl":
        per_index = sum(2 * r[k] * n[k] * r[k + 1] * math.prod(n[k + 1 :]) for k in range(d - 1))
    else:
        raise ValueError(f"direction must be 'ltr' or 'rtl', got {direction!r}")
    return num_indices * per_index


def choose_lookup_direction(shape: TTEmbeddingShape) -> Direction:
    """The direction of fewer :func:`lookup_flops` (ties: ``"ltr"``).

    >>> choose_lookup_direction(TTEmbeddingShape.create((10, 10, 10), (16, 2, 2), 4))
    'rtl'
    """
    return "ltr" if lookup_flops(shape, 1, "ltr") <= lookup_flops(shape, 1, "rtl") else "rtl"


def digits(ids: Any, shape: TTEmbeddingShape) -> list[Any]:
    """The mixed-radix digits of flat integer indices ``ids``, first (slowest) mode first.

    The first digit keeps the sign and the overflow (``ids // (v_2..v_d)``, no modulo): see the module docstring.

    >>> import numpy as np
    >>> [d.tolist() for d in digits(np.array([0, 23, -1, 60]), TTEmbeddingShape.create((3, 4, 5), (1, 1, 1), 1))]
    [[0, 1, -1, 3], [0, 0, 3, 0], [0, 3, 4, 0]]
    """
    modes, strides = shape.vocab_modes, shape.strides
    return [ids // strides[0]] + [(ids // s) % m for s, m in zip(strides[1:], modes[1:])]


def lookup(
    ids: Any,
    cores: Sequence[Any],
    shape: TTEmbeddingShape,
    direction: Direction,
    *,
    permute: Callable[[Any, tuple[int, ...]], Any],
    gather: Callable[[Any, Any], Any],
    matmul: Callable[[Any, Any], Any],
) -> Any:
    """Rows ``ids`` (1-D integers) of the table, ``(len(ids), D)``, never building it; the padding row is zero.

    ``gather(array, index)`` takes rows ``index`` of ``array`` along its first axis (``jnp.take``, torch's
    indexing); ``matmul`` is a batched ``(B, p, q) @ (B, q, s)``.

    >>> import numpy as np
    >>> from tt_common.reference import tt_to_dense
    >>> shape = TTEmbeddingShape.create((3, 4), (2, 5), 3, padding_idx=1)
    >>> cores = [np.random.default_rng(k).standard_normal(s) for k, s in enumerate(shape.matrix.core_shapes)]
    >>> ids = np.array([5, 0, 11, 1, 5])
    >>> rows = lookup(ids, cores, shape, "rtl", permute=np.transpose, gather=lambda a, i: a[i], matmul=np.matmul)
    >>> table = tt_to_dense(cores); table[1] = 0
    >>> bool(np.allclose(rows, table[ids]))
    True
    """
    batch, ranks, features = ids.shape[0], shape.matrix.ranks, shape.feature_modes
    # (r, v, d, r') -> (v, r, d, r'): a small copy of each core, so that one gather takes whole slices
    slices = [gather(permute(core, (1, 0, 2, 3)), digit) for core, digit in zip(cores, digits(ids, shape))]
    d = len(slices)
    if direction == "ltr":
        state = slices[0].reshape(batch, features[0], ranks[1])
        for k in range(1, d):
            step = matmul(state, slices[k].reshape(batch, ranks[k], features[k] * ranks[k + 1]))
            state = step.reshape(batch, math.prod(features[: k + 1]), ranks[k + 1])  # sizes, not -1: batch may be 0
    else:
        state = slices[-1].reshape(batch, ranks[d - 1], features[d - 1])
        for k in range(d - 2, -1, -1):
            step = matmul(slices[k].reshape(batch, ranks[k] * features[k], ranks[k + 1]), state)
            state = step.reshape(batch, ranks[k], math.prod(features[k:]))
    rows = state.reshape(batch, shape.features)
    if shape.padding_idx is not None:
        # Zero output, hence zero gradient to the cores from these positions (nn.Embedding's padding_idx).
        # ids % V: a negative index that counts from the end is the padding row too.
        rows = rows * (ids % shape.num_embeddings != shape.padding_idx)[:, None]
    return rows
