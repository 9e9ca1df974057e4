"""``TTConv2d``: a 2-D convolution (NHWC, as ``nnx.Conv``) whose kernel is held as TT cores.

The layout and the two orders of the forward pass are those of :mod:`tt_common.conv`: channel cores
``(r_{k-1}, c_k, s_k, r_k)``, then a spatial core ``(r_d, kh kw, 1, 1)``; the whole kernel is the TT matrix
``(C_in kh kw) x C_out`` whose rows are ``(c, i, j)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes, initializers

from tt_common.conv import CONV_ORDERS, ConvOrder, TTConvShape, channel_product, choose_order
from tt_jax import _xla_cpu, functional
from tt_jax.functional import TTMatrix
from tt_jax.initializers import CoresInitializer, lecun_normal
from tt_jax.layer import TTCore, fill_parameters

__all__ = ["TTConv2d", "tt_conv2d"]

default_cores_init = lecun_normal()  # nnx.Conv's default: variance 1 / (kh kw C_in)
default_bias_init = initializers.zeros_init()


def tt_conv2d(
    x: jax.Array,
    cores: Sequence[jax.Array],
    bias: jax.Array | None = None,
    *,
    shape: TTConvShape,
    order: ConvOrder | None = None,
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
    """The convolution of an NHWC ``x`` ``(B, H, W, C_in)`` with the TT kernel: ``(B, H', W', C_out)``.

    ``order`` defaults to the cheaper by FLOPs for ``x``'s size (:func:`tt_common.conv.choose_order`) of the
    two that never build the kernel; ``"kernel"`` builds it and runs ``lax.conv_general_dilated`` (see
    :mod:`tt_common.conv`).

    >>> import jax.numpy as jnp
    >>> from tt_common.conv import TTConvShape
    >>> shape = TTConvShape.create((2, 2), (3, 1), 3, 2, padding=1)
    >>> cores = [jnp.ones(s) for s in shape.matrix.core_shapes]
    >>> tt_conv2d(jnp.ones((1, 5, 5, 4)), cores, shape=shape).shape
    (1, 5, 5, 3)
    """
    batch, height, width = shape.check_input(x.shape, "NHWC")
    shape.matrix.check_cores([c.shape for c in cores])
    if bias is not None:
        shape.matrix.check_bias(bias.shape)
    order = choose_order(shape, height, width) if order is None else order
    out_h, out_w = shape.output_hw(height, width)
    (kh, kw), rank = shape.kernel_size, shape.link_rank
    spatial = jnp.transpose(cores[-1].reshape(rank, kh, kw), (1, 2, 0))  # (kh, kw, r_d)
    conv = functools.partial(
        jax.lax.conv_general_dilated, window_strides=shape.stride, padding=[(p, p) for p in shape.padding],
        rhs_dilation=shape.dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)
    product = functools.partial(channel_product, cores=cores[:-1], shape=shape, order=order, trailing=1,
                                permute=jnp.transpose, matmul=functools.partial(functional._matmul, precision=precision))
    with jax.named_scope("tt_conv2d"):
        if order == "channels_first":
            z = product(x, batch=batch * height * width).reshape(batch, height, width, shape.out_channels * rank)
            # Group s reads channels (s, 0..r_d-1) of z: the same spatial filter for every output channel.
            y = _xla_cpu.shared_filter_conv(z, spatial[..., None], shape.out_channels, conv)
        elif order == "spatial_first":
            # Group c turns input channel c into channels (c, 0..r_d-1), the layout the channel product reads.
            u = _xla_cpu.shared_filter_conv(x, spatial[:, :, None, :], shape.in_channels, conv)
            y = product(u, batch=batch * out_h * out_w).reshape(batch, out_h, out_w, shape.out_channels)
        elif order == "kernel":
            kernel = functional.to_dense(TTMatrix(list(cores), shape.matrix), precision=precision)
            y = conv(x, jnp.transpose(kernel.reshape(shape.in_channels, kh, kw, shape.out_channels), (1, 2, 0, 3)))
        else:
            raise ValueError(f"order must be one of {CONV_ORDERS}, got {order!r}")
        return y if bias is None else y + bias


def kernel_to_matrix(kernel: jax.Array | np.ndarray) -> jax.Array:
    """An ``nnx.Conv`` kernel ``(kh, kw, C_in, C_out)`` as the TT layout's ``(C_in kh kw, C_out)`` matrix."""
    kh, kw, c_in, c_out = kernel.shape
    return jnp.transpose(jnp.asarray(kernel), (2, 0, 1, 3)).reshape(c_in * kh * kw, c_out)


class TTConv2d(nnx.Module):
    """A 2-D convolution ``y = conv(x, K) + b`` on NHWC inputs with the kernel ``K`` held as TT cores.

    Channels factor as ``C_in = prod(in_modes)`` and ``C_out = prod(out_modes)``; the cores are the ``d``
    channel cores ``(r_{k-1}, c_k, s_k, r_k)`` and the spatial core ``(r_d, kh kw, 1, 1)`` (see
    :mod:`tt_common.conv`, which also says why the spatial core is last). ``to_dense()`` is the kernel in
    ``nnx.Conv``'s layout ``(kh, kw, C_in, C_out)``, and ``layer(x)`` equals
    ``lax.conv_general_dilated(x, layer.to_dense(), ...) + bias``. The forward pass never builds it unless
    ``order="kernel"``: it runs the channel cores and a convolution with the spatial core, in the order of fewer
    FLOPs for the input's size.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import tt_jax
      >>> layer = tt_jax.TTConv2d((4, 8), (8, 8), 3, ranks=4, padding=1, rngs=nnx.Rngs(0))
      >>> [c.shape for c in layer.cores]
      [(1, 4, 8, 4), (4, 8, 8, 4), (4, 9, 1, 1)]
      >>> layer(jnp.ones((2, 16, 16, 32))).shape
      (2, 16, 16, 64)
      >>> layer.to_dense().shape
      (3, 3, 32, 64)

    Args:
      in_modes: factors ``c_1..c_d`` of the input channels ``C_in``.
      out_modes: factors ``s_1..s_d`` of the output channels ``C_out``.
      kernel_size: an int or ``(kh, kw)``.
      ranks: an int (every inner rank) or the full ``(1, r_1, ..., r_d, 1)`` (length ``d + 2``; ``r_d`` links
        the channels to the spatial core and is at most ``kh kw``), clipped as a TT matrix's.
      stride, padding, dilation: ints or pairs, as ``nnx.Conv``'s ``strides``, symmetric zero ``padding`` and
        ``kernel_dilation``.
      use_bias, dtype, param_dtype, bias_init, precision, rngs: as ``nnx.Conv``.
      cores_init: a TT initializer (:mod:`tt_jax.initializers`); the default gives the kernel ``nnx.Conv``'s
        variance ``1 / (kh kw C_in)``.
      order: ``"auto"`` (the cheaper by FLOPs for each input size), ``"channels_first"``, ``"spatial_first"``
        or ``"kernel"`` (build the kernel, then the dense convolution: faster on CPUs at moderate channel counts).
    """

    def __init__(
        self,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        kernel_size: int | Sequence[int],
        ranks: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        use_bias: bool = True,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        cores_init: CoresInitializer = default_cores_init,
        bias_init: nnx.Initializer = default_bias_init,
        order: Literal["auto", "channels_first", "spatial_first", "kernel"] = "auto",
        precision: jax.lax.PrecisionLike = None,
        rngs: nnx.Rngs,
    ):
        self.shape = TTConvShape.create(in_modes, out_modes, kernel_size, ranks, stride=stride, padding=padding,
                                        dilation=dilation)
        if order != "auto" and order not in CONV_ORDERS:
            raise ValueError(f"order must be 'auto' or one of {CONV_ORDERS}, got {order!r}")
        self.order = order
        self.use_bias, self.dtype, self.param_dtype, self.precision = use_bias, dtype, param_dtype, precision
        self.cores_init, self.bias_init = cores_init, bias_init
        cores = cores_init(rngs.params(), self.shape.matrix, param_dtype)
        self.shape.matrix.check_cores([c.shape for c in cores])
        self.cores = nnx.List([TTCore(c) for c in cores])
        self.bias = (nnx.Param(bias_init(rngs.params(), (self.shape.out_channels,), param_dtype))
                     if use_bias else nnx.data(None))

    @property
    def in_modes(self) -> tuple[int, ...]:
        return self.shape.in_modes

    @property
    def out_modes(self) -> tuple[int, ...]:
        return self.shape.out_modes

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.shape.ranks

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``(B, H, W, C_in) -> (B, H', W', C_out)``; a ``ValueError`` names a wrong rank, channel count or layout."""
        self.shape.check_input(inputs.shape, "NHWC")
        bias = self.bias[...] if self.bias is not None else None
        inputs, *cores, bias = dtypes.promote_dtype((inputs, *(c[...] for c in self.cores), bias), dtype=self.dtype)
        return tt_conv2d(inputs, cores, bias, shape=self.shape, precision=self.precision,
                         order=None if self.order == "auto" else self.order)

    def tt_matrix(self) -> TTMatrix:
        """All ``d + 1`` cores as the ``(C_in kh kw) x C_out`` TT matrix (the arrays, not the parameters)."""
        return TTMatrix([c[...] for c in self.cores], self.shape.matrix)

    def to_dense(self) -> jax.Array:
        """The kernel in ``nnx.Conv``'s layout ``(kh, kw, C_in, C_out)``, differentiable."""
        (kh, kw), matrix = self.shape.kernel_size, functional.to_dense(self.tt_matrix())
        return jnp.transpose(matrix.reshape(self.shape.in_channels, kh, kw, self.shape.out_channels), (1, 2, 0, 3))

    @classmethod
    def from_dense(
        cls,
        kernel: jax.Array | np.ndarray,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        bias: jax.Array | np.ndarray | None = None,
        **kwargs: Any,
    ) -> TTConv2d:
        """A layer whose cores are the TT-SVD of ``kernel`` ``(kh, kw, C_in, C_out)`` (``nnx.Conv``'s layout).

        ``max_rank`` (an int or ``d + 2`` caps) and/or ``rtol`` truncate (both ``None``: exact). ``bias``
        (default zeros) becomes the layer's bias; other keywords (``stride``, ``padding``, ...) go to the
        constructor.

        >>> import numpy as np
        >>> kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 6)).astype(np.float32)
        >>> layer = TTConv2d.from_dense(kernel, (2, 2), (3, 2))
        >>> layer.ranks, bool(np.allclose(layer.to_dense(), kernel, atol=1e-5))
        ((1, 6, 9, 1), True)
        """
        shape = _kernel_shape(np.shape(kernel), in_modes, out_modes, kwargs)
        shape.matrix.check_bias(None if bias is None else np.shape(bias), kwargs.get("use_bias", True))
        tt = functional.from_dense(kernel_to_matrix(kernel), shape.matrix.in_modes, shape.matrix.out_modes,
                                   max_rank=max_rank, rtol=rtol)
        return cls._from_tt_matrix(tt, bias, shape.kernel_size, **kwargs)

    @classmethod
    def from_conv(
        cls,
        conv: nnx.Conv,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        **kwargs: Any,
    ) -> TTConv2d:
        """The TT-SVD of a 2-D ``nnx.Conv``: its kernel, bias, strides, padding, dilation, dtypes and precision.

        Only what this layer computes is taken: one feature group, no input dilation or mask, padding an int,
        ``'VALID'``, symmetric ``(p, p)`` pairs, or ``'SAME'`` where it is symmetric (stride 1, odd dilated kernel).

        >>> from flax import nnx
        >>> dense = nnx.Conv(4, 6, (3, 3), padding=1, rngs=nnx.Rngs(0))
        >>> layer = TTConv2d.from_conv(dense, (2, 2), (3, 2), max_rank=3)
        >>> layer.ranks, layer.shape.padding
        ((1, 3, 3, 1), (1, 1))
        """
        if not isinstance(conv, nnx.Conv) or len(conv.kernel_size) != 2:
            raise ValueError(f"conv must be a 2-D nnx.Conv, got {type(conv).__name__}")
        if conv.feature_group_count != 1 or conv.mask is not None or _pair_of(conv.input_dilation) != (1, 1):
            raise ValueError("conv must have feature_group_count=1, no mask and no input_dilation to become a TTConv2d")
        stride, dilation = _pair_of(conv.strides), _pair_of(conv.kernel_dilation)
        settings = dict(stride=stride, dilation=dilation, padding=_symmetric_padding(conv.padding, conv.kernel_size,
                                                                                     stride, dilation),
                        use_bias=conv.bias is not None, dtype=conv.dtype, param_dtype=conv.param_dtype,
                        precision=conv.precision)
        bias = None if conv.bias is None else conv.bias[...]
        return cls.from_dense(conv.kernel[...], in_modes, out_modes, max_rank=max_rank, rtol=rtol, bias=bias,
                              **{**settings, **kwargs})

    @classmethod
    def _from_tt_matrix(cls, tt: TTMatrix, bias: Any, kernel_size: tuple[int, int], **kwargs: Any) -> TTConv2d:
        """A layer holding ``tt``'s cores and ``bias`` (zeros if ``None``); the initializers are not called."""
        kwargs.pop("rngs", None)
        layer = nnx.eval_shape(lambda: cls(tt.in_modes[:-1], tt.out_modes[:-1], kernel_size, tt.ranks,
                                           rngs=nnx.Rngs(0), **kwargs))
        return fill_parameters(layer, tt.cores, bias)


def _kernel_shape(kernel_shape: Sequence[int], in_modes: Sequence[int], out_modes: Sequence[int],
                  kwargs: dict[str, Any]) -> TTConvShape:
    """The shape of a layer for a ``(kh, kw, C_in, C_out)`` kernel; a ``ValueError`` if the channels do not factor."""
    if len(kernel_shape) != 4:
        raise ValueError(f"kernel must be 4-D (kh, kw, C_in, C_out), got shape {tuple(kernel_shape)}")
    kh, kw, c_in, c_out = kernel_shape
    shape = TTConvShape.create(in_modes, out_modes, (kh, kw), 1, **{k: kwargs[k] for k in ("stride", "padding",
                                                                                           "dilation") if k in kwargs})
    if (c_in, c_out) != (shape.in_channels, shape.out_channels):
        raise ValueError(f"kernel of shape {tuple(kernel_shape)} has C_in = {c_in}, C_out = {c_out}, which "
                         f"in_modes={shape.in_modes} (prod {shape.in_channels}) and out_modes={shape.out_modes} "
                         f"(prod {shape.out_channels}) do not factor")
    return shape


def _pair_of(value: Any) -> tuple[int, int]:
    """``nnx.Conv``'s ``strides`` / dilations (``None``, an int or a sequence) as a pair."""
    if value is None:
        return 1, 1
    if isinstance(value, int):
        return value, value
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _symmetric_padding(padding: Any, kernel_size: Sequence[int], stride: tuple[int, int],
                       dilation: tuple[int, int]) -> tuple[int, int]:
    """``nnx.Conv``'s ``padding`` as symmetric zero padding per axis, or a ``ValueError`` naming it."""
    if isinstance(padding, str):
        if padding == "VALID":
            return 0, 0
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        if padding == "SAME" and stride == (1, 1) and all(t % 2 == 0 for t in totals):
            return totals[0] // 2, totals[1] // 2
    elif isinstance(padding, int):
        return padding, padding
    else:
        pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
        pads = pads * 2 if len(pads) == 1 else pads
        if len(pads) == 2 and all(lo == hi for lo, hi in pads):
            return pads[0][0], pads[1][0]
    raise ValueError(f"padding {padding!r} is not symmetric zero padding (TTConv2d pads p on both sides)")
