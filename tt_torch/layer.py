"""``TTLinear``: a drop-in for ``nn.Linear`` whose weight matrix is stored in the TT format, over :mod:`tt_torch.functional`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from tt_common.contraction import (DEFAULT_MAX_DENSE_BYTES, Direction, InferenceChoice, choose_direction,
                                   choose_inference_form)
from tt_common.factorize import suggest_shape
from tt_common.shapes import (TTMatrixShape, TTShapeProperties, check_input_dtype, check_input_features,
                              check_input_ndim)
from tt_common.tensorize import default_modes
from tt_torch import functional
from tt_torch.functional import TTMatrix
from tt_torch.initializers import CoresInitializer, lecun_normal

__all__ = ["TTLinear"]

default_cores_init = lecun_normal()
default_bias_init = nn.init.zeros_

ArrayLike = torch.Tensor | np.ndarray


def fill_parameters_(layer: nn.Module, cores: Sequence[torch.Tensor], bias: ArrayLike | bool = False) -> nn.Module:
    """Copies ``cores`` into ``layer.cores`` and ``bias`` (a tensor, or ``True``/``False`` for zeros) into its bias.

    The one filler of the TT modules built on the meta device and then emptied (``from_dense``, ``round``, ...):
    nothing is drawn. Returns ``layer``.
    """
    with torch.no_grad():
        for param, core in zip(layer.cores, cores):
            param.copy_(core)
        if getattr(layer, "bias", None) is not None:
            if isinstance(bias, bool):
                layer.bias.zero_()
            else:
                layer.bias.copy_(torch.as_tensor(bias))
    return layer


class TTLinear(TTShapeProperties, nn.Module):
    """A linear layer ``y = x W^T + b`` (as ``nn.Linear``) with ``W`` held as TT cores.

    The mirror of :class:`tt_jax.TTLinear`: same arguments, same core layout
    ``(r_{k-1}, m_k, n_k, r_k)``, same contraction (core by core, in the cheaper
    direction, never building ``W``), same initialization rule. With the dense
    kernel ``K = W^T`` of shape ``(M, N)`` (the layout of ``nnx.Linear``)::

        K[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] @ ... @ G_d[:, i_d, j_d, :]

    with row-major multi-indices (the first mode varies slowest). The cores are
    the parameters ``cores.0``, ..., ``cores.{d-1}`` of an ``nn.ParameterList``,
    then ``bias``.

    Example::

      >>> import torch
      >>> import tt_torch
      >>> layer = tt_torch.TTLinear((4, 8, 8, 4), (4, 4, 4, 4), 4)
      >>> layer.extra_repr()
      "in_features=1024, out_features=256, in_modes=(4, 8, 8, 4), out_modes=(4, 4, 4, 4), ranks=(1, 4, 4, 4, 1), bias=True, direction='ltr'"
      >>> [tuple(c.shape) for c in layer.cores][:2]
      [(1, 4, 4, 4), (4, 8, 4, 4)]
      >>> layer(torch.ones(32, 1024)).shape
      torch.Size([32, 256])
      >>> layer.to_dense().shape  # nn.Linear's (out, in) layout
      torch.Size([256, 1024])
      >>> list(layer.state_dict())
      ['bias', 'cores.0', 'cores.1', 'cores.2', 'cores.3']

    Args:
      in_modes: factors ``m_1..m_d`` of the input size ``M``.
      out_modes: factors ``n_1..n_d`` of the output size ``N``.
      ranks: an int (every inner rank) or the full ``(1, r_1, ..., r_{d-1}, 1)``;
        clipped to the largest useful ranks as in JAX (``layer.ranks``).
      bias: whether to add a bias (default: True), as ``nn.Linear``'s keyword.
      cores_init: a TT initializer (see :mod:`tt_torch.initializers`). The
        default, LeCun normal, gives ``W`` the variance ``1 / M`` of Flax's
        default kernel, as :class:`tt_jax.TTLinear` does. This is *not*
        ``nn.Linear``'s default (Kaiming uniform with ``a = sqrt(5)``, variance
        ``1 / (3 M)``); pass ``variance_scaling(1 / 3, "fan_in", "uniform")`` for that.
      bias_init: fills the bias in place, like ``nn.init.zeros_`` (the
        default, as in JAX; ``nn.Linear`` draws its bias at random).
      direction: ``"auto"`` (the cheaper of ``"ltr"`` / ``"rtl"``), ``"ltr"`` or ``"rtl"``.
      kernel: the product's implementation, as :func:`tt_torch.functional.tt_linear`'s: ``"auto"`` (torch's
        product for CPU tensors; the fused Triton kernel only for CUDA tensors where the benchmark measured it
        faster), ``"torch"`` or ``"triton"``.
      device, dtype: of the parameters, as in ``nn.Linear``. (JAX's
        ``param_dtype`` is this ``dtype``; JAX's computation ``dtype`` and
        ``precision`` have no argument here: use ``torch.autocast`` and
        ``torch.set_float32_matmul_precision``.)
    """

    def __init__(
        self,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        ranks: int | Sequence[int],
        *,
        bias: bool = True,
        cores_init: CoresInitializer = default_cores_init,
        bias_init: Callable[[torch.Tensor], Any] = default_bias_init,
        direction: Literal["auto", "ltr", "rtl"] = "auto",
        kernel: Literal["auto", "torch", "triton"] = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = TTMatrixShape.create(in_modes, out_modes, ranks)
        if direction not in ("auto", "ltr", "rtl"):
            raise ValueError(f"direction must be 'auto', 'ltr' or 'rtl', got {direction!r}")
        self.direction: Direction = choose_direction(self.shape) if direction == "auto" else direction
        if kernel not in ("auto", "torch", "triton"):
            raise ValueError(f"kernel must be 'auto', 'torch' or 'triton', got {kernel!r}")
        self.kernel = kernel
        self.cores_init = cores_init
        self.bias_init = bias_init
        factory = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(s, **factory)) for s in self.shape.core_shapes])
        if bias:
            self.bias = nn.Parameter(torch.empty(self.shape.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        # Inference mode (prepare_inference): None is the training form, the cores contracted on every call. The
        # dense kernel is a plain tensor attribute, not a buffer: no state_dict entry, no transfer key.
        self.inference_choice: InferenceChoice | None = None
        self.dense_kernel: torch.Tensor | None = None
        self._dense_key: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draws the cores with ``cores_init`` and fills the bias with ``bias_init``."""
        first = self.cores[0]
        cores = self.cores_init(generator, self.shape, dtype=first.dtype, device=first.device)
        self.shape.check_cores([tuple(c.shape) for c in cores])
        with torch.no_grad():
            for param, core in zip(self.cores, cores):
                param.copy_(core)
            if self.bias is not None:
                self.bias_init(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Applies the layer to the last axis of ``input``: ``(..., M) -> (..., N)``.

        As ``nn.Linear``, the input must have the layer's dtype (a ``ValueError`` names both), except under
        ``torch.autocast``, which casts inside the products.
        """
        if not torch.is_autocast_enabled(input.device.type):
            check_input_dtype(input.dtype, self.cores[0].dtype)
        if self.inference_form == "dense":
            return self._dense_forward(input)
        return functional.tt_linear(input, list(self.cores), self.bias, shape=self.shape, direction=self.direction,
                                    plan_batch_size=self._plan_batch_size(), kernel=self.kernel)

    @property
    def inference_form(self) -> Literal["cores", "dense"]:
        """``"dense"`` when :meth:`prepare_inference` chose the dense form, else ``"cores"`` (the training form)."""
        return "cores" if self.inference_choice is None else self.inference_choice.form

    def prepare_inference(
        self, batch_size: int, form: Literal["auto", "cores", "dense"] = "auto", *,
        max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
    ) -> InferenceChoice:
        """Chooses the layer's inference form for batches of ``batch_size`` and builds the dense kernel if needed.

        ``"auto"`` asks the FLOP/memory model (:func:`tt_common.contraction.choose_inference_form`), ``"cores"``
        and ``"dense"`` force a form. The dense form multiplies by ``dense_kernel`` ``(M, N)``, built here, once,
        from the cores; an eager call whose cores changed since (an optimizer step, ``load_state_dict``,
        ``.to()``: their ``_version``, storage, dtype or device) rebuilds it first. Under ``torch.compile`` and
        ``torch.export`` the kernel is used as it is: call this method again after updating the cores. The dense
        form is for inference: a call in training mode with gradients enabled raises a ``ValueError``.
        ``batch_size`` is also the batch the cores are planned for when the batch is symbolic (``torch.export``).

        >>> import torch
        >>> layer = TTLinear((32, 32), (32, 32), 32).eval()
        >>> layer.prepare_inference(32).form, tuple(layer.dense_kernel.shape)
        ('dense', (1024, 1024))
        >>> x = torch.ones(32, 1024)
        >>> with torch.no_grad():
        ...     torch.allclose(layer(x), x @ layer.to_dense().T + layer.bias, atol=1e-4)
        True
        >>> layer.prepare_inference(1).form, layer.dense_kernel  # at batch 1 the cores are cheaper
        ('cores', None)
        """
        first = self.cores[0]
        choice = choose_inference_form(self.shape, batch_size, form, direction=self.direction,
                                       itemsize=first.element_size(), max_dense_bytes=max_dense_bytes)
        self.inference_choice = choice
        if choice.form == "dense":
            self._build_dense_kernel()
        else:
            self.dense_kernel, self._dense_key = None, None
        return choice

    def reset_inference(self) -> None:
        """Back to the training form: the cores contracted on every call; the dense kernel is dropped."""
        self.inference_choice, self.dense_kernel, self._dense_key = None, None, None

    def _plan_batch_size(self) -> int:
        return 1 if self.inference_choice is None else self.inference_choice.batch_size

    def _cores_key(self) -> tuple:
        # _version counts in-place changes (optimizer steps, copy_); the storage, dtype and device catch a new
        # tensor behind the parameter (param.data = ..., .to()).
        return tuple((c._version, c.data_ptr(), c.dtype, c.device) for c in self.cores)

    def _build_dense_kernel(self) -> None:
        with torch.no_grad():
            self.dense_kernel = functional.to_dense(self.tt_matrix())
        self._dense_key = self._cores_key()

    def _dense_forward(self, input: torch.Tensor) -> torch.Tensor:
        check_input_ndim(input.dim(), self.in_features)
        check_input_features(input.shape[-1], self.in_features, self.in_modes)
        if self.training and torch.is_grad_enabled() and any(c.requires_grad for c in self.cores):
            raise ValueError(
                "TTLinear is in the dense inference form, whose output has no gradient to the cores: call "
                "model.eval() or use torch.no_grad() for inference, or layer.reset_inference() to train"
            )
        if not torch.compiler.is_compiling() and (self.dense_kernel is None or self._dense_key != self._cores_key()):
            self._build_dense_kernel()
        return nn.functional.linear(input, self.dense_kernel.T, self.bias)

    def plan(self, batch_size: int) -> tuple[tuple[int, ...], Direction]:
        """The runs of adjacent cores merged and the direction of the product for a batch of ``batch_size``.

        The forward pass contracts with this plan (:func:`tt_torch.functional.plan`).

        >>> TTLinear((2, 7, 8, 8, 7, 4), (4, 4, 4, 4, 4, 4), 4).plan(100)
        ((2, 1, 1, 2), 'rtl')
        """
        return functional.plan(self.shape, batch_size, self.direction)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, in_modes={self.in_modes}, "
            f"out_modes={self.out_modes}, ranks={self.ranks}, bias={self.bias is not None}, "
            f"direction={self.direction!r}"
        )

    def tt_matrix(self) -> TTMatrix:
        """The cores as a :class:`tt_torch.functional.TTMatrix` value (the parameters themselves, not copies)."""
        return TTMatrix(list(self.cores), self.shape)

    def to_dense(self) -> torch.Tensor:
        """The dense weight in ``nn.Linear``'s ``(out, in)`` layout, differentiable."""
        return functional.to_dense(self.tt_matrix()).T

    @classmethod
    def from_features(
        cls, in_features: int, out_features: int, ranks: int, *, d: int, **kwargs: Any
    ) -> TTLinear:
        """An ``in_features -> out_features`` layer of ``d`` cores, modes from :func:`tt_common.suggest_shape`.

        >>> layer = TTLinear.from_features(1024, 256, 4, d=4)
        >>> layer.in_features, layer.out_features, layer.shape.d
        (1024, 256, 4)
        """
        shape = suggest_shape(in_features, out_features, d, ranks)
        return cls(shape.in_modes, shape.out_modes, shape.ranks, **kwargs)

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
    ) -> TTLinear:
        """A layer whose cores are the TT-SVD (:func:`tt_torch.functional.from_dense`) of ``weight`` ``(N, M)``.

        ``weight`` is in ``nn.Linear``'s ``(out, in)`` layout; the decomposition runs on its device, in its
        dtype. ``max_rank`` and/or ``rtol`` truncate (both ``None``: exact). ``bias``: a tensor (the layer's
        bias), ``True`` (zeros) or ``False`` (no bias). Other keywords (``device``, ``dtype``, ...) go to the
        constructor; by default the layer takes ``weight``'s device and dtype.

        >>> import torch
        >>> weight = torch.randn(9, 16, dtype=torch.float64)
        >>> layer = TTLinear.from_dense(weight, (4, 4), (3, 3))
        >>> layer.ranks, layer.cores[0].dtype, torch.allclose(layer.to_dense(), weight)
        ((1, 12, 1), torch.float64, True)
        """
        shape = TTMatrixShape.create(in_modes, out_modes, 1)
        shape.check_kernel(tuple(weight.shape), layout="(out, in)")
        if not isinstance(bias, bool):
            shape.check_bias(tuple(bias.shape))
        weight = torch.as_tensor(weight)
        kwargs.setdefault("device", weight.device)
        kwargs.setdefault("dtype", weight.dtype)
        tt = functional.from_dense(weight.detach().T, shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol)
        return cls._from_tt_matrix(tt, bias, **kwargs)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        in_modes: Sequence[int] | None = None,
        out_modes: Sequence[int] | None = None,
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        d: int | None = None,
        **kwargs: Any,
    ) -> TTLinear:
        """The TT-SVD of an ``nn.Linear``: its weight, bias, device and dtype.

        Without modes, they are :func:`tt_common.tensorize.choose_modes`'s for ``d`` cores (default: by the
        layer's size), at rank ``max_rank`` when it is an int (as :func:`tt_jax.TTLinear.from_linear`).

        >>> import torch
        >>> dense = torch.nn.Linear(16, 9, dtype=torch.float64)
        >>> layer = TTLinear.from_linear(dense, (4, 4), (3, 3), max_rank=4)
        >>> layer.ranks, layer.bias.dtype, torch.equal(layer.bias, dense.bias)
        ((1, 4, 1), torch.float64, True)
        >>> TTLinear.from_linear(torch.nn.Linear(1024, 256), max_rank=4).in_modes
        (8, 8, 16)
        """
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        in_modes, out_modes = default_modes(linear.in_features, linear.out_features, in_modes, out_modes, d, max_rank)
        bias = False if linear.bias is None else linear.bias
        return cls.from_dense(linear.weight, in_modes, out_modes, max_rank=max_rank, rtol=rtol, bias=bias, **kwargs)

    def round(self, *, max_rank: int | Sequence[int] | None = None, rtol: float | None = None) -> TTLinear:
        """A new layer with lower TT-ranks (:func:`tt_torch.functional.round`), same bias and settings.

        Settings kept: the bias (its values), ``cores_init``, ``bias_init``, ``kernel``, the device and the dtype. The
        direction is chosen again (``"auto"``) for the new ranks.

        >>> import torch
        >>> layer = TTLinear((4, 4), (3, 3), 9, dtype=torch.float64)
        >>> small = layer.round(max_rank=2)
        >>> small.ranks, small.cores[0].dtype
        ((1, 2, 1), torch.float64)
        """
        first = self.cores[0]
        with torch.no_grad():
            tt = functional.round(self.tt_matrix(), max_rank=max_rank, rtol=rtol)
        return self._from_tt_matrix(tt, False if self.bias is None else self.bias,
                                    cores_init=self.cores_init, bias_init=self.bias_init, kernel=self.kernel,
                                    device=first.device, dtype=first.dtype)

    @classmethod
    def _from_tt_matrix(cls, tt: TTMatrix, bias: ArrayLike | bool, **kwargs: Any) -> TTLinear:
        """A layer holding ``tt``'s cores and ``bias`` (a tensor, or ``True`` for zeros); nothing is drawn."""
        device = kwargs.pop("device", None)
        device = torch.get_default_device() if device is None else device
        # Built on the meta device: no random draws, then filled with the decomposition.
        layer = cls(tt.in_modes, tt.out_modes, tt.ranks, bias=bias is not False, device="meta", **kwargs)
        layer = layer.to_empty(device=device)
        return fill_parameters_(layer, tt.cores, bias)
