"""Shapes of TT matrices: validation, rank clipping and parameter counts.

This module is the single source of truth for the shape rules of a TT matrix.
Both `tt_jax` and `tt_torch` build a :class:`TTMatrixShape` and never check
modes or ranks themselves.

Convention: a weight matrix ``W`` with ``M = prod(in_modes)`` rows (inputs) and
``N = prod(out_modes)`` columns (outputs) is held as ``d`` cores, core ``k`` of
shape ``(r_{k-1}, m_k, n_k, r_k)`` with ``r_0 = r_d = 1``, so that::

    W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] @ ... @ G_d[:, i_d, j_d, :]

with the multi-indices row-major (C order: the first mode varies slowest).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TTMatrixShape",
    "TTShapeProperties",
    "check_input_dtype",
    "check_input_features",
    "check_input_ndim",
    "max_ranks",
    "normalize_ranks",
    "rank_caps",
    "validate_modes",
]


def _as_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _as_int_tuple(values: object, what: str) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints: any sequence of integers, a 1-D NumPy integer array included."""
    if isinstance(values, np.ndarray):
        # An array is no Sequence; its integer elements are (np.integer is registered as numbers.Integral).
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"{what} must be a sequence of positive integers (a NumPy array must be 1-D of an integer dtype), "
                f"got {values!r}"
            )
        values = list(values)
    elif isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{what} must be a sequence of positive integers, got {values!r}")
    if len(values) == 0:
        raise ValueError(f"{what} must not be empty")
    return tuple(_as_positive_int(v, f"{what}[{i}]") for i, v in enumerate(values))


def validate_modes(
    in_modes: Sequence[int], out_modes: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Checks that ``in_modes`` and ``out_modes`` are positive and of one length.

    >>> validate_modes([4, 8], (2, 2))
    ((4, 8), (2, 2))
    >>> validate_modes((4, 8), (2,))
    Traceback (most recent call last):
    ...
    ValueError: in_modes and out_modes must have the same length (number of cores d), got in_modes=(4, 8) (d=2) and out_modes=(2,) (d=1)
    """
    in_modes = _as_int_tuple(in_modes, "in_modes")
    out_modes = _as_int_tuple(out_modes, "out_modes")
    if len(in_modes) != len(out_modes):
        raise ValueError(
            "in_modes and out_modes must have the same length (number of cores d), "
            f"got in_modes={in_modes} (d={len(in_modes)}) and out_modes={out_modes} (d={len(out_modes)})"
        )
    return in_modes, out_modes


def max_ranks(in_modes: Sequence[int], out_modes: Sequence[int]) -> tuple[int, ...]:
    """The largest useful TT-rank at each of the ``d + 1`` positions.

    ``r_k <= min(prod_{j<=k} m_j n_j, prod_{j>k} m_j n_j)``: a larger rank
    represents no more matrices than this one.

    >>> max_ranks((2, 2, 2), (3, 3, 3))
    (1, 6, 6, 1)
    """
    in_modes, out_modes = validate_modes(in_modes, out_modes)
    sizes = [m * n for m, n in zip(in_modes, out_modes)]
    d = len(sizes)
    return tuple(min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(d + 1))


def normalize_ranks(
    ranks: int | Sequence[int], in_modes: Sequence[int], out_modes: Sequence[int]
) -> tuple[int, ...]:
    """Expands ``ranks`` to a tuple of length ``d + 1`` and clips it to :func:`max_ranks`.

    ``ranks`` is an int (all ``d - 1`` inner ranks) or a full tuple of length
    ``d + 1`` with ``1`` at both ends. Ranks above the largest useful rank at a
    position are clipped to it: the clipped TT holds exactly the same set of
    matrices with fewer parameters.

    >>> normalize_ranks(4, (2, 2, 2), (3, 3, 3))
    (1, 4, 4, 1)
    >>> normalize_ranks(8, (2, 2, 2), (3, 3, 3))  # clipped to max_ranks
    (1, 6, 6, 1)
    >>> normalize_ranks((1, 2, 3, 1), (2, 2, 2), (3, 3, 3))
    (1, 2, 3, 1)
    """
    in_modes, out_modes = validate_modes(in_modes, out_modes)
    d = len(in_modes)
    if isinstance(ranks, numbers.Integral) and not isinstance(ranks, bool):
        inner = _as_positive_int(ranks, "ranks")
        full = (1,) + (inner,) * (d - 1) + (1,)
    else:
        full = _as_int_tuple(ranks, "ranks")
        if len(full) != d + 1:
            raise ValueError(
                f"ranks must be an int or a sequence of length d + 1 = {d + 1} "
                f"(with 1 at both ends), got {full} of length {len(full)}"
            )
        if full[0] != 1 or full[-1] != 1:
            raise ValueError(f"ranks must start and end with 1 (r_0 = r_d = 1), got {full}")
    return tuple(min(r, cap) for r, cap in zip(full, max_ranks(in_modes, out_modes)))


def rank_caps(
    max_rank: int | Sequence[int] | None, in_modes: Sequence[int], out_modes: Sequence[int]
) -> tuple[int, ...]:
    """The rank cap at each of the ``d + 1`` positions that a truncation (TT-SVD, rounding) may keep.

    ``max_rank`` is ``None`` (no cap: :func:`max_ranks`), a positive int (every
    position) or a sequence of ``d + 1`` positive ints; each cap is clipped to
    :func:`max_ranks`. Floats and bools are refused, not rounded.

    >>> rank_caps(2, (2, 2, 2), (3, 3, 3)), rank_caps(None, (2, 2), (3, 3))
    ((1, 2, 2, 1), (1, 6, 1))
    >>> rank_caps(2.5, (2, 2), (3, 3))
    Traceback (most recent call last):
    ...
    ValueError: max_rank must be None, a positive integer or a sequence of d + 1 = 3 positive integers, got 2.5
    """
    caps = max_ranks(in_modes, out_modes)
    if max_rank is None:
        return caps
    if isinstance(max_rank, numbers.Integral) and not isinstance(max_rank, bool):
        return tuple(min(_as_positive_int(max_rank, "max_rank"), c) for c in caps)
    if isinstance(max_rank, (bool, numbers.Number)):
        raise ValueError(
            f"max_rank must be None, a positive integer or a sequence of d + 1 = {len(caps)} positive integers, "
            f"got {max_rank!r}"
        )
    full = _as_int_tuple(max_rank, "max_rank")
    if len(full) != len(caps):
        raise ValueError(
            f"max_rank must be an int or a sequence of length d + 1 = {len(caps)}, got {full} of length {len(full)}"
        )
    return tuple(min(r, c) for r, c in zip(full, caps))


def check_input_ndim(ndim: int, in_features: int) -> None:
    """Raises a ``ValueError`` unless an input has an axis to contract (``(..., M)``, at least 1-D).

    >>> check_input_ndim(0, 6)
    Traceback (most recent call last):
    ...
    ValueError: input must have at least one axis, the last of size prod(in_modes) = 6; got a 0-d input
    """
    if ndim < 1:
        raise ValueError(
            f"input must have at least one axis, the last of size prod(in_modes) = {in_features}; got a 0-d input"
        )


def check_input_dtype(input_dtype: object, layer_dtype: object) -> None:
    """Raises a ``ValueError`` naming both dtypes unless they are equal: ``nn.Linear``'s rule, for ``tt_torch``.

    Works on any dtype objects that compare (torch's, NumPy's); no cast is made, so that a float64 batch is never
    silently rounded to float32 (or a layer's float32 silently widened).

    >>> check_input_dtype(np.dtype("float64"), np.dtype("float32"))
    Traceback (most recent call last):
    ...
    ValueError: input dtype float64 does not match the layer's dtype float32: cast the input (x.to(float32)) or the layer (layer.to(float64))
    """
    if input_dtype != layer_dtype:
        short = [str(d).removeprefix("torch.") for d in (input_dtype, layer_dtype)]
        raise ValueError(
            f"input dtype {short[0]} does not match the layer's dtype {short[1]}: "
            f"cast the input (x.to({short[1]})) or the layer (layer.to({short[0]}))"
        )


def check_input_features(last_dim: int, in_features: int, in_modes: Sequence[int]) -> None:
    """Raises a ``ValueError`` when an input's last dimension is not ``prod(in_modes)``."""
    if last_dim != in_features:
        raise ValueError(
            f"input's last dimension is {last_dim}, but the TT layer expects "
            f"prod(in_modes) = prod({tuple(in_modes)}) = {in_features}"
        )


@dataclass(frozen=True)
class TTMatrixShape:
    """Validated shape of a TT matrix: ``in_modes``, ``out_modes`` and full ``ranks``.

    Build it with :meth:`create`, which validates and clips; the plain
    constructor expects already-normalized values and re-checks them.

    >>> shape = TTMatrixShape.create((4, 8, 8, 4), (4, 4, 4, 4), ranks=4)
    >>> shape.in_features, shape.out_features, shape.ranks
    (1024, 256, (1, 4, 4, 4, 1))
    >>> shape.core_shapes[1]
    (4, 8, 4, 4)
    >>> shape.num_params, shape.dense_num_params
    (1152, 262144)
    """

    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        if normalize_ranks(self.ranks, self.in_modes, self.out_modes) != tuple(self.ranks):
            raise ValueError(
                f"ranks {self.ranks} are not normalized for in_modes={self.in_modes}, "
                f"out_modes={self.out_modes}; use TTMatrixShape.create"
            )

    @classmethod
    def create(
        cls, in_modes: Sequence[int], out_modes: Sequence[int], ranks: int | Sequence[int]
    ) -> TTMatrixShape:
        in_modes, out_modes = validate_modes(in_modes, out_modes)
        return cls(in_modes, out_modes, normalize_ranks(ranks, in_modes, out_modes))

    @classmethod
    def from_core_shapes(cls, core_shapes: Sequence[Sequence[int]]) -> TTMatrixShape:
        """Reads the shape off a list of core shapes, checking that the ranks chain.

        >>> TTMatrixShape.from_core_shapes([(1, 2, 3, 2), (2, 4, 5, 1)]).ranks
        (1, 2, 1)
        """
        if len(core_shapes) == 0:
            raise ValueError("a TT matrix needs at least one core, got none")
        for k, s in enumerate(core_shapes):
            if len(s) != 4:
                raise ValueError(
                    f"core {k} must have 4 axes (r_{{k-1}}, m_k, n_k, r_k), got shape {tuple(s)}"
                )
            if k > 0 and s[0] != core_shapes[k - 1][3]:
                raise ValueError(
                    f"ranks do not chain: core {k - 1} ends with rank {core_shapes[k - 1][3]} "
                    f"but core {k} starts with rank {s[0]}"
                )
        ranks = (core_shapes[0][0],) + tuple(s[3] for s in core_shapes)
        in_modes, out_modes = validate_modes([s[1] for s in core_shapes], [s[2] for s in core_shapes])
        ranks = _as_int_tuple(ranks, "ranks")
        if ranks[0] != 1 or ranks[-1] != 1:
            raise ValueError(f"ranks must start and end with 1 (r_0 = r_d = 1), got {ranks}")
        return cls(in_modes, out_modes, ranks)

    @property
    def d(self) -> int:
        """Number of cores."""
        return len(self.in_modes)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_modes)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_modes)

    @property
    def core_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        r = self.ranks
        return tuple(
            (r[k], m, n, r[k + 1]) for k, (m, n) in enumerate(zip(self.in_modes, self.out_modes))
        )

    @property
    def num_params(self) -> int:
        """Number of core parameters (the bias is not counted)."""
        return sum(math.prod(s) for s in self.core_shapes)

    @property
    def dense_num_params(self) -> int:
        """Number of weights of the dense ``M x N`` matrix (no bias)."""
        return self.in_features * self.out_features

    @property
    def compression_ratio(self) -> float:
        """``dense_num_params / num_params``."""
        return self.dense_num_params / self.num_params

    def check_cores(self, core_shapes: Sequence[Sequence[int]]) -> None:
        """Raises a ``ValueError`` unless ``core_shapes`` are exactly this shape's cores."""
        TTMatrixShape.of_cores(core_shapes, self)

    @classmethod
    def of_cores(cls, core_shapes: Sequence[Sequence[int]], expected: TTMatrixShape | None = None) -> TTMatrixShape:
        """The shape of cores of ``core_shapes`` (validated), which must be ``expected`` when it is given.

        Cores that are exactly ``expected``'s return it at once: a layer's forward pass checks its cores on every
        call, and a full validation there cost more than the product itself at batch 1.

        >>> shape = TTMatrixShape.create((2, 3), (4, 5), 2)
        >>> TTMatrixShape.of_cores([(1, 2, 4, 2), (2, 3, 5, 1)], shape) is shape
        True
        >>> TTMatrixShape.of_cores([(1, 2, 4, 3), (3, 3, 5, 1)], shape)
        Traceback (most recent call last):
        ...
        ValueError: cores of shapes [(1, 2, 4, 3), (3, 3, 5, 1)] do not match TTMatrixShape(in_modes=(2, 3), out_modes=(4, 5), ranks=(1, 2, 1))
        """
        if expected is not None and tuple(map(tuple, core_shapes)) == expected.core_shapes:
            return expected
        found = cls.from_core_shapes(core_shapes)
        if expected is not None and found != expected:
            raise ValueError(f"cores of shapes {[tuple(s) for s in core_shapes]} do not match {expected}")
        return found

    def check_bias(self, bias_shape: Sequence[int] | None, use_bias: bool = True) -> None:
        """Raises a ``ValueError`` unless a given bias has shape ``(N,)`` and the layer uses one."""
        if bias_shape is None:
            return
        if tuple(bias_shape) != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias_shape)}")
        if not use_bias:
            raise ValueError("a bias was given but use_bias=False")

    def check_kernel(self, kernel_shape: Sequence[int], layout: str = "(in, out)") -> None:
        """Raises a ``ValueError`` unless a dense kernel of ``kernel_shape`` fits the modes."""
        want = (self.in_features, self.out_features)
        if layout == "(out, in)":
            want = want[::-1]
        if tuple(kernel_shape) != want:
            raise ValueError(
                f"dense matrix of shape {tuple(kernel_shape)} does not match in_modes={self.in_modes} "
                f"(prod {self.in_features}) and out_modes={self.out_modes} (prod {self.out_features}): "
                f"expected {layout} shape {want}"
            )


class TTShapeProperties:
    """The shape accessors that ``tt_jax.TTLinear`` and ``tt_torch.TTLinear`` share (from ``self.shape``)."""

    shape: TTMatrixShape

    @property
    def in_modes(self) -> tuple[int, ...]:
        return self.shape.in_modes

    @property
    def out_modes(self) -> tuple[int, ...]:
        return self.shape.out_modes

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.shape.ranks

    @property
    def in_features(self) -> int:
        return self.shape.in_features

    @property
    def out_features(self) -> int:
        return self.shape.out_features
