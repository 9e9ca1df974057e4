"""``TTConv2d``: a drop-in for ``nn.Conv2d`` (NCHW) whose kernel is held as TT cores; the mirror of
:mod:`tt_jax.conv`.

The layout and the two orders of the forward pass are those of :mod:`tt_common.conv`: channel cores
``(r_{k-1}, c_k, s_k, r_k)``, then a spatial core ``(r_d, kh kw, 1, 1)``; the whole kernel is the TT matrix
``(C_in kh kw) x C_out`` whose rows are ``(c, i, j)``, so ``nn.Conv2d``'s ``(C_out, C_in, kh, kw)`` weight is its
transpose reshaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tt_common.conv import CONV_ORDERS, ConvOrder, TTConvShape, channel_product, choose_order
from tt_common.shapes import check_input_dtype
from tt_torch import functional
from tt_torch.functional import TTMatrix
from tt_torch.initializers import CoresInitializer, lecun_normal
from tt_torch.layer import fill_parameters_

__all__ = ["TTConv2d", "tt_conv2d"]

default_cores_init = lecun_normal()  # as tt_jax: variance 1 / (kh kw C_in) (nn.Conv2d's is a third of it)
default_bias_init = nn.init.zeros_

ArrayLike = torch.Tensor | np.ndarray


def tt_conv2d(
    x: torch.Tensor,
    cores: Sequence[torch.Tensor],
    bias: torch.Tensor | None = None,
    *,
    shape: TTConvShape,
    order: ConvOrder | None = None,
) -> torch.Tensor:
    """The convolution of an NCHW ``x`` ``(B, C_in, H, W)`` with the TT kernel: ``(B, C_out, H', W')``.

    ``order`` defaults to the cheaper by FLOPs for ``x``'s size (:func:`tt_common.conv.choose_order`) of the
    two that never build the kernel; ``"kernel"`` builds it and runs ``F.conv2d`` (see :mod:`tt_common.conv`).

    >>> import torch
    >>> from tt_common.conv import TTConvShape
    >>> shape = TTConvShape.create((2, 2), (3, 1), 3, 2, padding=1)
    >>> cores = [torch.ones(s) for s in shape.matrix.core_shapes]
    >>> tt_conv2d(torch.ones(1, 4, 5, 5), cores, shape=shape).shape
    torch.Size([1, 3, 5, 5])
    """
    batch, height, width = shape.check_input(tuple(x.shape), "NCHW")
    shape.matrix.check_cores([tuple(c.shape) for c in cores])
    if bias is not None:
        shape.matrix.check_bias(tuple(bias.shape))
    order = choose_order(shape, height, width) if order is None else order
    out_h, out_w = shape.output_hw(height, width)
    (kh, kw), rank = shape.kernel_size, shape.link_rank
    spatial = cores[-1].reshape(rank, kh, kw)

    def conv(inputs: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        return F.conv2d(inputs, weight, None, shape.stride, shape.padding, shape.dilation, groups)

    def product(inputs: torch.Tensor, positions: int) -> torch.Tensor:
        return channel_product(inputs, cores[:-1], shape, order, batch=batch, trailing=positions,
                               permute=functional._permute, matmul=functional._matmul)

    if order == "channels_first":
        z = product(x, height * width).reshape(batch, shape.out_channels * rank, height, width)
        # Group s reads channels (s, 0..r_d-1) of z: the same spatial filter for every output channel.
        y = conv(z, spatial.expand(shape.out_channels, rank, kh, kw), shape.out_channels)
    elif order == "spatial_first":
        # Group c turns input channel c into channels (c, 0..r_d-1), the layout the channel product reads.
        weight = spatial.expand(shape.in_channels, rank, kh, kw).reshape(shape.in_channels * rank, 1, kh, kw)
        y = product(conv(x, weight, shape.in_channels), out_h * out_w).reshape(batch, shape.out_channels, out_h, out_w)
    elif order == "kernel":
        kernel = functional.to_dense(TTMatrix(list(cores), shape.matrix))  # (C_in kh kw, C_out), rows (c, i, j)
        y = conv(x, kernel.T.reshape(shape.out_channels, shape.in_channels, kh, kw), 1)
    else:
        raise ValueError(f"order must be one of {CONV_ORDERS}, got {order!r}")
    return y if bias is None else y + bias.to(y.dtype)[:, None, None]


class TTConv2d(nn.Module):
    """A 2-D convolution on NCHW inputs (as ``nn.Conv2d``) with the kernel held as TT cores.

    The mirror of :class:`tt_jax.TTConv2d`: same arguments, cores, orders and initialization. ``to_dense()``
    is the kernel in ``nn.Conv2d.weight``'s layout ``(C_out, C_in, kh, kw)``, and ``layer(x)`` equals
    ``F.conv2d(x, layer.to_dense(), layer.bias, stride, padding, dilation)``; the forward pass never builds it
    unless ``order="kernel"``.
    The cores are ``cores.0`` ... ``cores.{d-1}`` (channels) and ``cores.{d}`` (spatial), then ``bias``.

    Example::

      >>> import torch
      >>> import tt_torch
      >>> layer = tt_torch.TTConv2d((4, 8), (8, 8), 3, ranks=4, padding=1)
      >>> [tuple(c.shape) for c in layer.cores]
      [(1, 4, 8, 4), (4, 8, 8, 4), (4, 9, 1, 1)]
      >>> layer(torch.ones(2, 32, 16, 16)).shape
      torch.Size([2, 64, 16, 16])
      >>> layer.to_dense().shape
      torch.Size([64, 32, 3, 3])

    Args:
      in_modes, out_modes, kernel_size, ranks, stride, padding, dilation, cores_init, order: as
        :class:`tt_jax.TTConv2d` (``padding`` symmetric zero padding: an int or a pair).
      bias, device, dtype: as ``nn.Conv2d``; ``bias_init`` fills the bias in place (default zeros).
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
        bias: bool = True,
        cores_init: CoresInitializer = default_cores_init,
        bias_init: Callable[[torch.Tensor], Any] = default_bias_init,
        order: Literal["auto", "channels_first", "spatial_first", "kernel"] = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = TTConvShape.create(in_modes, out_modes, kernel_size, ranks, stride=stride, padding=padding,
                                        dilation=dilation)
        if order != "auto" and order not in CONV_ORDERS:
            raise ValueError(f"order must be 'auto' or one of {CONV_ORDERS}, got {order!r}")
        self.order = order
        self.cores_init, self.bias_init = cores_init, bias_init
        factory = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(s, **factory)) for s in self.shape.matrix.core_shapes])
        if bias:
            self.bias = nn.Parameter(torch.empty(self.shape.out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def in_modes(self) -> tuple[int, ...]:
        return self.shape.in_modes

    @property
    def out_modes(self) -> tuple[int, ...]:
        return self.shape.out_modes

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.shape.ranks

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draws the cores with ``cores_init`` and fills the bias with ``bias_init``."""
        first = self.cores[0]
        cores = self.cores_init(generator, self.shape.matrix, dtype=first.dtype, device=first.device)
        self.shape.matrix.check_cores([tuple(c.shape) for c in cores])
        with torch.no_grad():
            for param, core in zip(self.cores, cores):
                param.copy_(core)
            if self.bias is not None:
                self.bias_init(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H', W')``; a ``ValueError`` names a wrong rank, channel count, layout or
        dtype (the layer's, as ``nn.Conv2d``, except under ``torch.autocast``)."""
        self.shape.check_input(tuple(input.shape), "NCHW")
        if not torch.is_autocast_enabled(input.device.type):
            check_input_dtype(input.dtype, self.cores[0].dtype)
        return tt_conv2d(input, list(self.cores), self.bias, shape=self.shape,
                         order=None if self.order == "auto" else self.order)

    def extra_repr(self) -> str:
        s = self.shape
        return (f"{s.in_channels}, {s.out_channels}, kernel_size={s.kernel_size}, stride={s.stride}, "
                f"padding={s.padding}, dilation={s.dilation}, in_modes={s.in_modes}, out_modes={s.out_modes}, "
                f"ranks={s.ranks}, bias={self.bias is not None}, order={self.order!r}")

    def tt_matrix(self) -> TTMatrix:
        """All ``d + 1`` cores as the ``(C_in kh kw) x C_out`` TT matrix (the parameters themselves)."""
        return TTMatrix(list(self.cores), self.shape.matrix)

    def to_dense(self) -> torch.Tensor:
        """The kernel in ``nn.Conv2d.weight``'s layout ``(C_out, C_in, kh, kw)``, differentiable."""
        s = self.shape
        return functional.to_dense(self.tt_matrix()).T.reshape(s.out_channels, s.in_channels, *s.kernel_size)

    @classmethod
    def from_dense(
        cls,
        weight: ArrayLike,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        bias: ArrayLike | bool = True,
        **kwargs: Any,
    ) -> TTConv2d:
        """A layer whose cores are the TT-SVD of ``weight`` ``(C_out, C_in, kh, kw)`` (``nn.Conv2d``'s layout).

        ``bias``: a tensor, ``True`` (zeros) or ``False`` (none). The layer takes ``weight``'s device and dtype
        unless ``device`` / ``dtype`` are given; other keywords (``stride``, ``padding``, ...) go to the constructor.

        >>> import torch
        >>> weight = torch.randn(6, 4, 3, 3, dtype=torch.float64)
        >>> layer = TTConv2d.from_dense(weight, (2, 2), (3, 2))
        >>> layer.ranks, torch.allclose(layer.to_dense(), weight)
        ((1, 6, 9, 1), True)
        """
        weight = torch.as_tensor(weight)
        if weight.dim() != 4:
            raise ValueError(f"weight must be 4-D (C_out, C_in, kh, kw), got shape {tuple(weight.shape)}")
        c_out, c_in, kh, kw = weight.shape
        shape = TTConvShape.create(in_modes, out_modes, (kh, kw), 1,
                                   **{k: kwargs[k] for k in ("stride", "padding", "dilation") if k in kwargs})
        if (c_in, c_out) != (shape.in_channels, shape.out_channels):
            raise ValueError(f"weight of shape {tuple(weight.shape)} has C_in = {c_in}, C_out = {c_out}, which "
                             f"in_modes={shape.in_modes} (prod {shape.in_channels}) and out_modes={shape.out_modes} "
                             f"(prod {shape.out_channels}) do not factor")
        if not isinstance(bias, bool):
            shape.matrix.check_bias(tuple(bias.shape))
        kwargs.setdefault("device", weight.device)
        kwargs.setdefault("dtype", weight.dtype)
        matrix = weight.detach().reshape(c_out, c_in * kh * kw).T
        tt = functional.from_dense(matrix, shape.matrix.in_modes, shape.matrix.out_modes, max_rank=max_rank, rtol=rtol)
        return cls._from_tt_matrix(tt, bias, (kh, kw), **kwargs)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        **kwargs: Any,
    ) -> TTConv2d:
        """The TT-SVD of an ``nn.Conv2d``: its weight, bias, stride, padding, dilation, device and dtype.

        Only what this layer computes is taken: ``groups=1``, ``padding_mode='zeros'``, integer padding or
        ``'valid'`` / ``'same'`` where it is symmetric.

        >>> import torch
        >>> dense = torch.nn.Conv2d(4, 6, 3, padding=1, dtype=torch.float64)
        >>> layer = TTConv2d.from_conv(dense, (2, 2), (3, 2), max_rank=3)
        >>> layer.ranks, layer.shape.padding, torch.equal(layer.bias, dense.bias)
        ((1, 3, 3, 1), (1, 1), True)
        """
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("conv must have groups=1 and padding_mode='zeros' to become a TTConv2d")
        padding = conv.padding
        if isinstance(padding, str):
            totals = [d * (k - 1) for k, d in zip(conv.kernel_size, conv.dilation)]
            if padding == "same" and any(t % 2 for t in totals):
                raise ValueError(f"padding 'same' of conv is not symmetric for kernel_size {conv.kernel_size} "
                                 f"and dilation {conv.dilation} (TTConv2d pads p on both sides)")
            padding = (0, 0) if padding == "valid" else (totals[0] // 2, totals[1] // 2)
        settings = dict(stride=conv.stride, padding=padding, dilation=conv.dilation)
        bias = False if conv.bias is None else conv.bias
        return cls.from_dense(conv.weight, in_modes, out_modes, max_rank=max_rank, rtol=rtol, bias=bias,
                              **{**settings, **kwargs})

    @classmethod
    def _from_tt_matrix(cls, tt: TTMatrix, bias: ArrayLike | bool, kernel_size: tuple[int, int],
                        **kwargs: Any) -> TTConv2d:
        """A layer holding ``tt``'s cores and ``bias`` (a tensor, or ``True`` for zeros); nothing is drawn."""
        device = kwargs.pop("device", None)
        device = torch.get_default_device() if device is None else device
        layer = cls(tt.in_modes[:-1], tt.out_modes[:-1], kernel_size, tt.ranks, bias=bias is not False,
                    device="meta", **kwargs).to_empty(device=device)
        return fill_parameters_(layer, tt.cores, bias)
