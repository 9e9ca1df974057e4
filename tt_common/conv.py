"""Shapes, FLOPs and the channel product of a TT convolution (``TTConv2d``), written once for every array library.

Layout. A ``kh x kw`` kernel from ``C_in = c_1..c_d`` to ``C_out = s_1..s_d`` channels is held as ``d + 1`` TT
cores: the channel cores ``G_k`` of shape ``(r_{k-1}, c_k, s_k, r_k)`` first, then one spatial core of shape
``(r_d, kh kw, 1, 1)``. Together they are an ordinary TT matrix (:class:`tt_common.TTMatrixShape`) of shape
``(C_in kh kw) x C_out`` with in-modes ``(c_1, ..., c_d, kh kw)``, out-modes ``(s_1, ..., s_d, 1)`` and ranks
``(1, r_1, ..., r_d, 1)``; its rows are ``(c, i, j)`` row-major, so the dense kernel is that matrix reshaped to
``(C_in, kh, kw, C_out)``. Shapes, rank clipping, parameter counts, initializers (the fan-in ``C_in kh kw`` is the
matrix's ``M``), TT-SVD and transfer (``P.cores.0`` ... ``P.cores.d``, ``P.bias``) all apply unchanged.

Why the spatial core last (Garipov et al. 2016 put it first): with it at the end, the rank ``r_d`` that links the
channels to the taps is the fastest index of the channel product's open end, which is exactly the channel order
a grouped convolution reads and writes. Both orders of the forward pass then run without a transpose:

- ``"channels_first"``: the channel cores on the input, left to right, leaving the rank open:
  ``z[b, h, w, (s, t)] = sum_c x[b, h, w, c] T[c, s, t]`` (``C_out r_d`` channels), then a convolution with
  ``C_out`` groups of ``r_d`` input channels whose filter is the spatial core (the same for every group).
- ``"spatial_first"``: a depthwise convolution with ``C_in`` groups that gives each input channel ``r_d``
  outputs ``u[b, h', w', (c, t)]`` (filter: the spatial core), then the channel cores right to left on it.

Neither builds the ``kh kw C_in C_out`` kernel (the convolutions' filters are the spatial core broadcast over
the groups: ``kh kw r_d C_out`` or ``kh kw r_d C_in`` values). :func:`conv_flops` counts both and
:func:`choose_order` takes the cheaper for an input size (ties: ``"spatial_first"``, whose channel product
runs on the smaller, strided output).

A third order, ``"kernel"``, is never chosen by ``"auto"`` and only runs when asked for: it builds the kernel
from the cores (differentiably, :func:`kernel_flops`) and runs the framework's
dense convolution. It costs the dense convolution's FLOPs and the kernel's memory, but on CPUs the thin grouped
convolutions and rank-inflated intermediates of the two orders above run far below the dense convolution's
FLOP rate, so at moderate channel counts it trains several times faster (``benchmarks/conv_embedding.py``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tt_common import contraction
from tt_common.shapes import TTMatrixShape, validate_modes

__all__ = ["CONV_ORDERS", "ConvOrder", "TTConvShape", "channel_product", "choose_order", "conv_flops",
           "dense_conv_flops", "kernel_flops", "per_position_flops"]

ConvOrder = Literal["channels_first", "spatial_first", "kernel"]
CONV_ORDERS: tuple[ConvOrder, ...] = ("channels_first", "spatial_first", "kernel")
Pair = tuple[int, int]


def _pair(value: object, what: str, minimum: int) -> Pair:
    """An int or a pair of ints, each ``>= minimum``, as a pair (bools and floats refused)."""
    items = (value, value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if (isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) != 2
            or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in items)):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{what} must be a {kind} int or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


@dataclass(frozen=True)
class _OpenChain:
    """The channel cores alone, as :mod:`tt_common.contraction` reads a shape: ranks ``(1, r_1, ..., r_d)``.

    Its last rank ``r_d`` is not 1, which a :class:`TTMatrixShape` refuses; the contraction's step sizes only read
    these four fields, so the channel product runs through the same steps as ``tt_matmul``.
    """

    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: tuple[int, ...]

    @property
    def d(self) -> int:
        return len(self.in_modes)


@dataclass(frozen=True)
class TTConvShape:
    """Validated shape of a TT 2-D convolution: channel modes, kernel size, stride, padding, dilation, ranks.

    >>> shape = TTConvShape.create((4, 8), (8, 8), 3, ranks=4, stride=2, padding=1)
    >>> shape.in_channels, shape.out_channels, shape.kernel_size, shape.ranks
    (32, 64, (3, 3), (1, 4, 4, 1))
    >>> shape.matrix.core_shapes
    ((1, 4, 8, 4), (4, 8, 8, 4), (4, 9, 1, 1))
    >>> shape.matrix.num_params, shape.dense_num_params
    (1188, 18432)
    >>> shape.output_hw(32, 32)
    (16, 16)
    """

    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    kernel_size: Pair
    stride: Pair
    padding: Pair
    dilation: Pair
    matrix: TTMatrixShape  # the (C_in kh kw) x C_out TT matrix of all d + 1 cores

    @classmethod
    def create(
        cls,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        kernel_size: int | Sequence[int],
        ranks: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
    ) -> TTConvShape:
        """Validates every argument (a ``ValueError`` names the bad one) and clips the ranks.

        ``ranks`` is an int or the full ``(1, r_1, ..., r_d, 1)`` of length ``d + 2`` (``r_d`` links the last
        channel core to the spatial core, at most ``kh kw``).

        >>> TTConvShape.create((2, 2), (2, 2), 0, 2)
        Traceback (most recent call last):
        ...
        ValueError: kernel_size must be a positive int or a pair of them, got 0
        """
        in_modes, out_modes = validate_modes(in_modes, out_modes)
        kernel = _pair(kernel_size, "kernel_size", 1)
        strides, pads, dilations = _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1)
        if not isinstance(ranks, numbers.Integral) and isinstance(ranks, Sequence) and len(ranks) != len(in_modes) + 2:
            raise ValueError(f"ranks must be an int or a sequence of length d + 2 = {len(in_modes) + 2} "
                             f"(1, r_1, ..., r_d, 1; r_d links the channels to the spatial core), got {tuple(ranks)}")
        matrix = TTMatrixShape.create(in_modes + (kernel[0] * kernel[1],), out_modes + (1,), ranks)
        return cls(in_modes, out_modes, kernel, strides, pads, dilations, matrix)

    @property
    def d(self) -> int:
        """Number of channel cores (the layer has ``d + 1`` cores)."""
        return len(self.in_modes)

    @property
    def in_channels(self) -> int:
        return math.prod(self.in_modes)

    @property
    def out_channels(self) -> int:
        return math.prod(self.out_modes)

    @property
    def ranks(self) -> tuple[int, ...]:
        """``(1, r_1, ..., r_d, 1)``: the ranks of all ``d + 1`` cores, clipped."""
        return self.matrix.ranks

    @property
    def link_rank(self) -> int:
        """``r_d``: the rank between the channel cores and the spatial core."""
        return self.matrix.ranks[-2]

    @property
    def dense_num_params(self) -> int:
        """Weights of the dense kernel ``kh kw C_in C_out`` (no bias)."""
        return self.matrix.dense_num_params

    def chain(self) -> _OpenChain:
        """The channel cores' shape for :func:`channel_product`."""
        return _OpenChain(self.in_modes, self.out_modes, self.matrix.ranks[:-1])

    def output_hw(self, height: int, width: int) -> Pair:
        """The output's spatial size for an input of ``height x width`` (``ValueError`` if the kernel does not fit).

        ``floor((H + 2 p - dil (k - 1) - 1) / stride) + 1`` per axis, as ``nn.Conv2d`` and ``lax.conv_general_dilated``.
        """
        out = []
        for axis, size, k, s, p, dil in zip(("height", "width"), (height, width), self.kernel_size, self.stride,
                                            self.padding, self.dilation):
            span = dil * (k - 1) + 1
            if size + 2 * p < span:
                raise ValueError(f"input {axis} {size} (+ 2 x padding {p}) is smaller than the dilated kernel ({span})")
            out.append((size + 2 * p - span) // s + 1)
        return out[0], out[1]

    def check_input(self, input_shape: Sequence[int], layout: Literal["NHWC", "NCHW"]) -> tuple[int, int, int]:
        """``(B, H, W)`` of a 4-D input in ``layout``; a ``ValueError`` names a wrong rank, channel count or layout.

        >>> shape = TTConvShape.create((2, 3), (2, 2), 3, 2)
        >>> shape.check_input((5, 6, 8, 8), "NCHW")
        (5, 8, 8)
        >>> shape.check_input((5, 8, 8, 6), "NCHW")
        Traceback (most recent call last):
        ...
        ValueError: input of shape (5, 8, 8, 6) has 8 channels on axis 1, the layer expects prod(in_modes) = prod((2, 3)) = 6 in layout NCHW (the input looks NHWC: transpose it)
        """
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 4:
            raise ValueError(f"input must be 4-D {layout}, got shape {shape}")
        axis = 3 if layout == "NHWC" else 1
        if shape[axis] != self.in_channels:
            other, other_axis = ("NCHW", 1) if layout == "NHWC" else ("NHWC", 3)
            hint = f" (the input looks {other}: transpose it)" if shape[other_axis] == self.in_channels else ""
            raise ValueError(
                f"input of shape {shape} has {shape[axis]} channels on axis {axis}, the layer expects "
                f"prod(in_modes) = prod({self.in_modes}) = {self.in_channels} in layout {layout}{hint}")
        height, width = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
        self.output_hw(height, width)
        return shape[0], height, width


def _chain_step_flops(chain: _OpenChain, direction: contraction.Direction) -> int:
    """FLOPs of the channel product at one spatial position."""
    return sum(2 * outer * a * c * inner for _, a, c, outer, inner in contraction._step_sizes(chain, direction))


def conv_flops(shape: TTConvShape, batch_size: int, height: int, width: int, order: ConvOrder) -> int:
    """FLOPs (multiply and add counted separately) of the forward pass in ``order`` for ``batch_size`` images.

    ``"channels_first"``: the channel product at every *input* position, then ``2 kh kw r_d`` per output
    position and channel; ``"spatial_first"``: ``2 kh kw r_d`` per output position and *input* channel, then
    the channel product at every *output* position; ``"kernel"``: building the kernel once, then the dense
    convolution.

    >>> shape = TTConvShape.create((4, 4), (4, 4), 3, 4)
    >>> conv_flops(shape, 1, 8, 8, "channels_first"), conv_flops(shape, 1, 8, 8, "spatial_first")
    (205312, 133632)
    >>> conv_flops(shape, 1, 8, 8, "kernel") - dense_conv_flops(shape, 1, 8, 8)  # the kernel's construction
    534528
    """
    out_h, out_w = shape.output_hw(height, width)
    taps = 2 * shape.kernel_size[0] * shape.kernel_size[1] * shape.link_rank
    if order == "channels_first":
        return batch_size * (height * width * _chain_step_flops(shape.chain(), "ltr")
                             + out_h * out_w * taps * shape.out_channels)
    if order == "spatial_first":
        return batch_size * out_h * out_w * (taps * shape.in_channels + _chain_step_flops(shape.chain(), "rtl"))
    if order == "kernel":
        return kernel_flops(shape) + dense_conv_flops(shape, batch_size, height, width)
    raise ValueError(f"order must be one of {CONV_ORDERS}, got {order!r}")


def kernel_flops(shape: TTConvShape) -> int:
    """FLOPs of building the kernel as both frameworks' ``to_dense`` do: the identity ``(C_in kh kw)`` rows
    through the TT matrix.

    >>> kernel_flops(TTConvShape.create((4, 4), (4, 4), 3, 4))
    534528
    """
    matrix = shape.matrix
    return sum(contraction.contraction_flops(matrix, matrix.in_features, contraction.choose_direction(matrix)))


def dense_conv_flops(shape: TTConvShape, batch_size: int, height: int, width: int) -> int:
    """FLOPs of the dense convolution: ``2 kh kw C_in C_out`` per output position."""
    out_h, out_w = shape.output_hw(height, width)
    return 2 * batch_size * out_h * out_w * shape.dense_num_params


def choose_order(shape: TTConvShape, height: int, width: int) -> ConvOrder:
    """The order with fewer FLOPs for an input of ``height x width`` (the batch size does not matter) of the two
    that never build the kernel; ties go to ``"spatial_first"``.

    >>> shape = TTConvShape.create((4, 4), (4, 4), 3, 4)
    >>> choose_order(shape, 8, 8), choose_order(TTConvShape.create((64,), (2,), 3, 9), 8, 8)
    ('spatial_first', 'channels_first')
    """
    first = conv_flops(shape, 1, height, width, "channels_first")
    return "channels_first" if first < conv_flops(shape, 1, height, width, "spatial_first") else "spatial_first"


def per_position_flops(shape: TTConvShape) -> tuple[int, int]:
    """FLOPs per output position of the cheaper order and of the dense convolution, for large images.

    Away from the borders an output position costs ``stride_h stride_w`` input positions in
    ``"channels_first"``: what a compression report shows (no image size is known there).

    >>> per_position_flops(TTConvShape.create((4, 4), (4, 4), 3, 4))
    (3712, 4608)
    """
    taps = 2 * shape.kernel_size[0] * shape.kernel_size[1] * shape.link_rank
    first = shape.stride[0] * shape.stride[1] * _chain_step_flops(shape.chain(), "ltr") + taps * shape.out_channels
    spatial = taps * shape.in_channels + _chain_step_flops(shape.chain(), "rtl")
    return min(first, spatial), 2 * shape.dense_num_params


def channel_product(
    x: Any,
    cores: Sequence[Any],
    shape: TTConvShape,
    order: ConvOrder,
    *,
    batch: int,
    trailing: int,
    permute: Callable[[Any, tuple[int, ...]], Any],
    matmul: Callable[[Any, Any], Any],
) -> Any:
    """The channel cores on a state of ``batch`` rows, each with ``trailing`` positions after the channels.

    ``"channels_first"``: ``x`` holds ``(batch, C_in, trailing)`` values; returns ``(batch, C_out r_d trailing)``
    with channels ``(s, t)`` (left to right, the rank left open). ``"spatial_first"``: ``x`` holds
    ``(batch, C_in r_d, trailing)`` with channels ``(c, t)``; returns ``(batch, C_out trailing)`` (right to left).
    NHWC frameworks pass ``batch = B H W`` and ``trailing = 1``; NCHW ones ``batch = B`` and ``trailing = H W``.
    The steps are :func:`tt_common.contraction.tt_matmul`'s, with the positions folded into each step's inner axis.

    >>> import numpy as np
    >>> from tt_common.reference import tt_to_dense
    >>> shape = TTConvShape.create((2, 3), (3, 2), 1, 1)  # a 1x1 kernel: a plain TT matrix
    >>> cores = [np.random.default_rng(k).standard_normal(s) for k, s in enumerate(shape.matrix.core_shapes)]
    >>> x = np.random.default_rng(5).standard_normal((4, 6, 1))
    >>> y = channel_product(x, cores[:-1], shape, "channels_first", batch=4, trailing=1,
    ...                     permute=np.transpose, matmul=np.matmul) * cores[-1].reshape(())
    >>> bool(np.allclose(y, x[:, :, 0] @ tt_to_dense(cores)))
    True
    """
    direction = "ltr" if order == "channels_first" else "rtl"
    rank = shape.link_rank
    # Sizes, not -1: the batch may be empty.
    size_in, size_out = (1, rank) if order == "channels_first" else (rank, 1)
    state = x.reshape(batch, shape.in_channels * size_in * trailing)
    for k, _, _, outer, inner in contraction._step_sizes(shape.chain(), direction):
        core = contraction._core_matrix(cores[k], direction, permute)
        state = contraction._step(core, state, batch * outer, inner * trailing, matmul)
    return state.reshape(batch, shape.out_channels * size_out * trailing)
