"""``TTLinear``: a dense layer whose weight matrix is stored in the TT format, over :mod:`tt_jax.functional`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes, initializers

from tt_common.contraction import (DEFAULT_MAX_DENSE_BYTES, Direction, InferenceChoice, choose_direction,
                                   choose_inference_form)
from tt_common.factorize import suggest_shape
from tt_common.shapes import TTMatrixShape, TTShapeProperties, check_input_features, check_input_ndim
from tt_common.tensorize import default_modes
from tt_jax import functional
from tt_jax._xla_cpu import add_bias, product_flops
from tt_jax.functional import DotGeneral, TTMatrix
from tt_jax.initializers import CoresInitializer, lecun_normal

__all__ = ["DenseKernel", "TTCore", "TTLinear"]

default_cores_init = lecun_normal()
default_bias_init = initializers.zeros_init()


def linear_settings(linear: nnx.Linear) -> dict[str, Any]:
    """The constructor keywords of a :class:`TTLinear` that behaves as ``linear`` (bias, dtypes, precision, hooks)."""
    return dict(use_bias=linear.bias is not None, dtype=linear.dtype, param_dtype=linear.param_dtype,
                precision=linear.precision, dot_general=linear.dot_general, promote_dtype=linear.promote_dtype,
                preferred_element_type=linear.preferred_element_type)


class TTCore(nnx.Param):
    """A TT core, shape ``(r_{k-1}, m_k, n_k, r_k)``: an ``nnx.Param`` that filters can select."""


class DenseKernel(nnx.Variable):
    """The dense ``(M, N)`` kernel a ``TTLinear`` in the dense inference form multiplies by: a cache, not a
    parameter (``nnx.Param`` filters, optimizers and :mod:`tt_jax.transfer` leave it out)."""


class _DenseSource:
    """The core arrays a :class:`DenseKernel` was built from, by reference: a static attribute (identity hash)."""

    def __init__(self, cores: tuple[jax.Array, ...]) -> None:
        self.cores = cores


def fill_parameters(layer: nnx.Module, cores: Sequence[Any], bias: Any = None) -> nnx.Module:
    """Sets ``layer.cores`` to ``cores`` and its bias (if it has one) to ``bias`` (zeros if ``None``), each in the
    parameter's dtype.

    The one filler of the TT modules built by ``nnx.eval_shape`` (``from_dense``, ``round``, ...): no initializer
    is called. Returns ``layer``.
    """
    for param, core in zip(layer.cores, cores):
        param.set_value(jnp.asarray(core, param.get_value().dtype))
    if getattr(layer, "bias", None) is not None:
        value = layer.bias.get_value()
        layer.bias.set_value(jnp.zeros(value.shape, value.dtype) if bias is None else jnp.asarray(bias, value.dtype))
    return layer


class TTLinear(TTShapeProperties, nnx.Module):
    """A linear layer ``y = x @ W + b`` with ``W`` (``M x N``) held as TT cores.

    ``W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] @ ... @ G_d[:, i_d, j_d, :]``
    with core ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)``, ``r_0 = r_d = 1``,
    and row-major multi-indices (the first mode varies slowest). The forward
    pass is :func:`tt_jax.functional.tt_linear`: core by core in the cheaper
    direction, never building ``W``.

    Example::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import tt_jax
      >>> layer = tt_jax.TTLinear((4, 8, 8, 4), (4, 4, 4, 4), 4, rngs=nnx.Rngs(0))
      >>> layer.ranks, [c.shape for c in layer.cores][:2]
      ((1, 4, 4, 4, 1), [(1, 4, 4, 4), (4, 8, 4, 4)])
      >>> layer(jnp.ones((32, 1024))).shape
      (32, 256)
      >>> layer.to_dense().shape
      (1024, 256)

    Args:
      in_modes: factors ``m_1..m_d`` of the input size ``M``.
      out_modes: factors ``n_1..n_d`` of the output size ``N``.
      ranks: an int (every inner rank) or the full ``(1, r_1, ..., r_{d-1}, 1)``.
        Ranks above the largest useful rank ``min(prod_{j<=k} m_j n_j,
        prod_{j>k} m_j n_j)`` are clipped to it (no loss of expressiveness);
        ``layer.ranks`` gives the clipped ranks.
      use_bias: whether to add a bias (default: True).
      dtype: the dtype of the computation. The default ``None`` follows ``nnx.Linear``: the input and the
        parameters are promoted to their common dtype (``jnp.promote_types``), so a float64 input to float32
        cores computes in float64 when ``jax_enable_x64`` is on, and in float32 otherwise (JAX then makes every
        array float32). Pass ``dtype`` to compute in that dtype whatever the input's.
      param_dtype: the dtype of the cores and bias (default: float32).
      cores_init: a TT initializer (see :mod:`tt_jax.initializers`); the default
        gives ``W`` the variance of ``nnx.Linear``'s default kernel, ``1 / M``.
      bias_init: initializer of the bias, as in ``nnx.Linear``.
      direction: ``"auto"`` (the cheaper of ``"ltr"`` / ``"rtl"``), ``"ltr"`` or ``"rtl"``.
      precision: matmul precision, see ``jax.lax.Precision``.
      dot_general: the product every contraction step calls (default ``jax.lax.dot_general``), as in
        ``nnx.Linear``.
      promote_dtype: called as ``promote_dtype((inputs, *cores, bias), dtype=dtype)`` to cast the
        arrays to the computation dtype, as ``nnx.Linear``'s hook (default: ``nnx``'s ``promote_dtype``).
      preferred_element_type: passed to ``dot_general`` when given, as in ``nnx.Linear``.
      kernel: the product's implementation, as :func:`tt_jax.functional.tt_linear`'s: ``"auto"`` (XLA on a CPU;
        the fused Pallas kernel only on a GPU where the benchmark measured it faster), ``"xla"`` or ``"pallas"``.
      rngs: rng streams; ``rngs.params()`` draws the cores and the bias.
      cores_metadata, bias_metadata: metadata of every core and of the bias (e.g. ``out_sharding``),
        as ``nnx.Linear``'s ``kernel_metadata`` and ``bias_metadata``.
    """

    def __init__(
        self,
        in_modes: Sequence[int],
        out_modes: Sequence[int],
        ranks: int | Sequence[int],
        *,
        use_bias: bool = True,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        cores_init: CoresInitializer = default_cores_init,
        bias_init: nnx.Initializer = default_bias_init,
        direction: Literal["auto", "ltr", "rtl"] = "auto",
        precision: jax.lax.PrecisionLike = None,
        dot_general: DotGeneral = jax.lax.dot_general,
        promote_dtype: Any = dtypes.promote_dtype,
        preferred_element_type: jnp.dtype | None = None,
        kernel: Literal["auto", "xla", "pallas"] = "auto",
        rngs: nnx.Rngs,
        cores_metadata: Mapping[str, Any] = MappingProxyType({}),
        bias_metadata: Mapping[str, Any] = MappingProxyType({}),
    ):
        self.shape = TTMatrixShape.create(in_modes, out_modes, ranks)
        if direction not in ("auto", "ltr", "rtl"):
            raise ValueError(f"direction must be 'auto', 'ltr' or 'rtl', got {direction!r}")
        self.direction: Direction = choose_direction(self.shape) if direction == "auto" else direction
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.dot_general = dot_general
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type
        if kernel not in ("auto", "xla", "pallas"):
            raise ValueError(f"kernel must be 'auto', 'xla' or 'pallas', got {kernel!r}")
        self.kernel = kernel
        self.cores_init = cores_init
        self.bias_init = bias_init
        self.cores_metadata = dict(cores_metadata)
        self.bias_metadata = dict(bias_metadata)
        cores = cores_init(rngs.params(), self.shape, param_dtype)
        self.shape.check_cores([c.shape for c in cores])
        self.cores = nnx.List([TTCore(c, **cores_metadata) for c in cores])
        self.bias = (nnx.Param(bias_init(rngs.params(), (self.shape.out_features,), param_dtype), **bias_metadata)
                     if use_bias else nnx.data(None))
        # Inference mode (prepare_inference): None is the training form, the cores contracted on every call.
        self.inference_choice: InferenceChoice | None = None
        self.dense_kernel: DenseKernel | None = nnx.data(None)
        self._dense_source: _DenseSource | None = None

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Applies the layer to the last axis of ``inputs``: ``(..., M) -> (..., N)``.

        In the dense inference form (:meth:`prepare_inference`) it multiplies by the cached dense kernel.
        """
        if self.inference_form == "dense":
            return self._dense_call(inputs)
        bias = self.bias[...] if self.bias is not None else None
        inputs, *cores, bias = self.promote_dtype((inputs, *(c[...] for c in self.cores), bias), dtype=self.dtype)
        return functional.tt_linear(
            inputs, cores, bias, shape=self.shape, direction=self.direction, precision=self.precision,
            dot_general=self.dot_general, preferred_element_type=self.preferred_element_type,
            plan_batch_size=self._plan_batch_size(), kernel=self.kernel,
        )

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
        and ``"dense"`` force a form. The dense form multiplies by a :class:`DenseKernel` built here, once, from
        the cores; an eager call whose cores changed since (``nnx.update``, ``set_value``) rebuilds it first.
        Under a transform (``nnx.jit``, ``jax.export``) the kernel is used as it is: call this method again
        after updating the cores. The dense form is for inference: no gradient reaches the cores through it.
        ``batch_size`` is also the batch the cores are planned for when the batch is symbolic (``jax.export``).

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = TTLinear((32, 32), (32, 32), 32, rngs=nnx.Rngs(0))
        >>> layer.prepare_inference(32).form, layer.dense_kernel.shape
        ('dense', (1024, 1024))
        >>> x = jnp.ones((32, 1024))
        >>> bool(jnp.allclose(layer(x), x @ layer.to_dense() + layer.bias[...], atol=1e-4))
        True
        >>> layer.prepare_inference(1).form, layer.dense_kernel  # at batch 1 the cores are cheaper
        ('cores', None)
        """
        itemsize = jnp.dtype(self.cores[0].get_value().dtype).itemsize
        choice = choose_inference_form(self.shape, batch_size, form, direction=self.direction, itemsize=itemsize,
                                       max_dense_bytes=max_dense_bytes, product_flops=product_flops())
        self.inference_choice = choice
        if choice.form == "dense":
            self._build_dense_kernel()
        else:
            self.dense_kernel, self._dense_source = None, None
        return choice

    def reset_inference(self) -> None:
        """Back to the training form: the cores contracted on every call; the dense kernel is dropped."""
        self.inference_choice, self.dense_kernel, self._dense_source = None, None, None

    def _plan_batch_size(self) -> int:
        return 1 if self.inference_choice is None else self.inference_choice.batch_size

    def _build_dense_kernel(self) -> None:
        cores = tuple(c.get_raw_value() for c in self.cores)
        self.dense_kernel = DenseKernel(jax.lax.stop_gradient(functional.to_dense(TTMatrix(cores, self.shape))))
        self._dense_source = _DenseSource(cores)

    def _dense_is_stale(self) -> bool:
        """Whether the cores' values changed since the kernel was built (checked on concrete arrays only)."""
        cores = tuple(c.get_raw_value() for c in self.cores)
        if any(isinstance(c, jax.core.Tracer) for c in cores):
            return False  # inside a transform: the kernel is used as it is (see prepare_inference)
        source = self._dense_source.cores if self._dense_source is not None else ()
        if len(source) == len(cores) and all(a is b for a, b in zip(source, cores)):
            return False
        # New arrays (nnx.update, an nnx.jit call that returned the state) need not be new values.
        same = len(source) == len(cores) and all(
            a.shape == b.shape and a.dtype == b.dtype and bool(jnp.array_equal(a, b)) for a, b in zip(source, cores))
        if same:
            self._dense_source = _DenseSource(cores)
        return not same

    def _dense_call(self, inputs: jax.Array) -> jax.Array:
        check_input_ndim(inputs.ndim, self.in_features)
        check_input_features(inputs.shape[-1], self.in_features, self.in_modes)
        if self.dense_kernel is None or self._dense_is_stale():
            self._build_dense_kernel()
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, self.dense_kernel[...], bias), dtype=self.dtype)
        kwargs: dict[str, Any] = {"precision": self.precision}
        if self.preferred_element_type is not None:
            kwargs["preferred_element_type"] = self.preferred_element_type
        with jax.named_scope("tt_dense"):
            y = self.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), **kwargs)
            return add_bias(y, bias)

    def plan(self, batch_size: int) -> tuple[tuple[int, ...], Direction]:
        """The runs of adjacent cores merged and the direction of the product for a batch of ``batch_size``.

        The forward pass contracts with this plan (:func:`tt_jax.functional.plan`).

        >>> from flax import nnx
        >>> import tt_jax
        >>> layer = tt_jax.TTLinear((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4, rngs=nnx.Rngs(0))
        >>> layer.plan(100)  # on a CPU: cores 1-2 and 4-5 merged, left to right
        ((2, 1, 2), 'ltr')
        """
        return functional.plan(self.shape, batch_size, self.direction)

    def tt_matrix(self) -> TTMatrix:
        """The cores as a :class:`tt_jax.functional.TTMatrix` value (the arrays, not the parameters)."""
        return TTMatrix([c[...] for c in self.cores], self.shape)

    def to_dense(self) -> jax.Array:
        """The dense ``(M, N)`` kernel (the layout of ``nnx.Linear``), differentiable."""
        return functional.to_dense(self.tt_matrix())

    @classmethod
    def from_features(
        cls, in_features: int, out_features: int, ranks: int, *, d: int, **kwargs: Any
    ) -> TTLinear:
        """An ``in_features -> out_features`` layer of ``d`` cores, modes from :func:`tt_common.suggest_shape`.

        >>> from flax import nnx
        >>> layer = TTLinear.from_features(1024, 256, 4, d=4, rngs=nnx.Rngs(0))
        >>> layer.in_features, layer.out_features, layer.shape.d
        (1024, 256, 4)
        """
        shape = suggest_shape(in_features, out_features, d, ranks)
        return cls(shape.in_modes, shape.out_modes, shape.ranks, **kwargs)

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
    ) -> TTLinear:
        """A layer whose cores are the TT-SVD (:func:`tt_jax.functional.from_dense`) of ``kernel`` ``(M, N)``.

        The decomposition runs in the kernel's dtype (float64 kernels need ``jax_enable_x64``); ``max_rank``
        and/or ``rtol`` truncate (both ``None``: exact). ``bias`` (default zeros when ``use_bias``) becomes
        the layer's bias. Other keywords go to the constructor.

        >>> import numpy as np
        >>> kernel = np.random.default_rng(0).standard_normal((16, 9)).astype(np.float32)
        >>> layer = TTLinear.from_dense(kernel, (4, 4), (3, 3))
        >>> bool(np.allclose(layer.to_dense(), kernel, atol=1e-5))
        True
        """
        shape = TTMatrixShape.create(in_modes, out_modes, 1)
        shape.check_kernel(np.shape(kernel))
        shape.check_bias(None if bias is None else np.shape(bias), kwargs.get("use_bias", True))
        tt = functional.from_dense(kernel, shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol)
        return cls._from_tt_matrix(tt, bias, **kwargs)

    @classmethod
    def from_linear(
        cls,
        linear: nnx.Linear,
        in_modes: Sequence[int] | None = None,
        out_modes: Sequence[int] | None = None,
        *,
        max_rank: int | Sequence[int] | None = None,
        rtol: float | None = None,
        d: int | None = None,
        **kwargs: Any,
    ) -> TTLinear:
        """The TT-SVD of an ``nnx.Linear``: its kernel, bias and settings (dtypes, precision, hooks).

        Without modes, they are :func:`tt_common.tensorize.choose_modes`'s for ``d`` cores (default: by the
        layer's size), at rank ``max_rank`` when it is an int (as :func:`tt_torch.TTLinear.from_linear`).

        >>> from flax import nnx
        >>> dense = nnx.Linear(16, 9, rngs=nnx.Rngs(0))
        >>> layer = TTLinear.from_linear(dense, (4, 4), (3, 3), max_rank=4)
        >>> layer.ranks, layer.bias.dtype, bool((layer.bias[...] == dense.bias[...]).all())
        ((1, 4, 1), dtype('float32'), True)
        >>> TTLinear.from_linear(nnx.Linear(1024, 256, rngs=nnx.Rngs(0)), max_rank=4).in_modes
        (8, 8, 16)
        """
        if not isinstance(linear, nnx.Linear):
            raise ValueError(f"linear must be an nnx.Linear, got {type(linear).__name__}")
        in_modes, out_modes = default_modes(linear.in_features, linear.out_features, in_modes, out_modes, d, max_rank)
        bias = None if linear.bias is None else linear.bias[...]
        return cls.from_dense(linear.kernel[...], in_modes, out_modes, max_rank=max_rank, rtol=rtol, bias=bias,
                              **{**linear_settings(linear), **kwargs})

    def round(self, *, max_rank: int | Sequence[int] | None = None, rtol: float | None = None) -> TTLinear:
        """A new layer with lower TT-ranks (:func:`tt_jax.functional.round`), same bias and settings.

        Settings kept: ``use_bias``, ``dtype``, ``param_dtype``, ``precision``, ``dot_general``,
        ``promote_dtype``, ``preferred_element_type``, ``kernel``, ``cores_init``, ``bias_init``, ``cores_metadata`` and
        ``bias_metadata``. The direction is chosen again (``"auto"``) for the new ranks.

        >>> from flax import nnx
        >>> layer = TTLinear((4, 4), (3, 3), 9, rngs=nnx.Rngs(0))
        >>> small = layer.round(max_rank=2)
        >>> small.ranks, small.cores[0].dtype
        ((1, 2, 1), dtype('float32'))
        """
        bias = None if self.bias is None else self.bias[...]
        tt = functional.round(self.tt_matrix(), max_rank=max_rank, rtol=rtol)
        return self._from_tt_matrix(tt, bias, **self._settings())

    def _settings(self) -> dict[str, Any]:
        """The constructor's keywords of this layer (not the shape, the rngs or the direction)."""
        return dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                    precision=self.precision, dot_general=self.dot_general, promote_dtype=self.promote_dtype,
                    preferred_element_type=self.preferred_element_type, kernel=self.kernel, cores_init=self.cores_init,
                    bias_init=self.bias_init, cores_metadata=self.cores_metadata, bias_metadata=self.bias_metadata)

    @classmethod
    def _from_tt_matrix(cls, tt: TTMatrix, bias: jax.Array | np.ndarray | None, **kwargs: Any) -> TTLinear:
        """A layer holding ``tt``'s cores and ``bias`` (zeros if ``None``); the initializers are not called."""
        kwargs.pop("rngs", None)  # nothing is drawn: the shapes are traced, then the values set
        layer = nnx.eval_shape(lambda: cls(tt.in_modes, tt.out_modes, tt.ranks, rngs=nnx.Rngs(0), **kwargs))
        return fill_parameters(layer, tt.cores, bias)
