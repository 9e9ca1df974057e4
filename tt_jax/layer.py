"""``TTLinear``: a dense layer whose weight matrix is stored in the TT format."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn import dtypes, initializers
from jax.custom_derivatives import SymbolicZero

from tt_common.contraction import XLA_CPU_PRODUCT_FLOPS, Direction, choose_direction, layer_plan, tt_matmul
from tt_common.reference import TTDecomposition, tt_round, tt_svd
from tt_common.shapes import TTMatrixShape, TTShapeProperties
from tt_jax.initializers import CoresInitializer, lecun_normal
from tt_jax.rows import broadcast_rows

__all__ = ["TTCore", "TTLinear"]

default_cores_init = lecun_normal()
default_bias_init = initializers.zeros_init()


def _matmul(a: jax.Array, b: jax.Array, precision=None) -> jax.Array:
    """``a @ b``, with a broadcast ``(1, p, q) @ (B, q, s)`` returned as ``(B, p, s)`` in the cheaper of two forms.

    ``jnp.matmul`` drops the size-1 batch axis and contracts ``(p, q)`` with
    ``(B, q, s)`` into ``(p, B, s)``, which XLA:CPU then transposes inside the
    next fusion, reading the large result with strides (slow): the transpose
    that every step of :func:`tt_common.contraction.tt_matmul` is built to avoid.
    Two forms remain:

    - a batched ``dot_general`` over the core broadcast to ``(B, p, q)``, which
      XLA:CPU materializes (``B p q`` floats written and read);
    - one plain matrix product on ``(B s, q)`` rows and a transposed result,
      for which XLA copies the state and the result (``B q s + B p s`` floats).

    The first is the default; :func:`_broadcast_is_cheaper` switches to the
    second where the broadcast core moves at least twice as much memory (the
    extra copies do not fuse with the neighbouring steps, so a smaller margin
    lost: measured in ``benchmarks/proposals/README.md`` section 6).
    """
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] == 1 and b.shape[0] != 1:
        if _broadcast_is_cheaper(*b.shape[1:], a.shape[1]):
            return _broadcast_product(a[0], b, precision)
        kwargs = dict(precision=precision, preferred_element_type=jnp.result_type(a, b))
        out = jax.lax.dot_general(b, a[0], (((1,), (1,)), ((), ())), **kwargs)  # (B, s, p)
        return jnp.swapaxes(out, 1, 2)
    return jnp.matmul(a, b, precision=precision)


_BATCHED = (((2,), (1,)), ((0,), (0,)))  # (B, p, q) x (B, q, s) -> (B, p, s)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _broadcast_product(core: jax.Array, state: jax.Array, precision=None) -> jax.Array:
    """``core @ state[o]`` for every ``o``: a ``(p, q)`` core and a ``(B, q, s)`` state give ``(B, p, s)``.

    One batched ``dot_general`` over the core broadcast to ``(B, p, q)``. Its tangent is written so that
    autodiff's transpose (the gradients) takes the forms XLA:CPU runs fast: for the state, the product with
    the broadcast *transposed* core, kept transposed by an optimization barrier (else XLA contracts the
    broadcast core over its first axis, a form it runs 2.4x slower); for the core, a batched product summed
    over ``B``. Gradient of one step of ``3072 -> 32768`` at batch 100 (``B = 6400, p = 32, q = 16,
    s = 24``): 6.3 instead of 15.7 ms (``benchmarks/proposals/README.md`` section 13). Values are those of
    plain autodiff up to float rounding order; forward mode works as before.
    """
    kwargs = dict(precision=precision, preferred_element_type=jnp.result_type(core, state))
    return jax.lax.dot_general(jnp.broadcast_to(core, (state.shape[0], *core.shape)), state, _BATCHED, **kwargs)


def _broadcast_product_jvp(precision, primals, tangents):
    (core, state), (d_core, d_state) = primals, tangents
    out = _broadcast_product(core, state, precision)
    kwargs = dict(precision=precision, preferred_element_type=out.dtype)
    tangent = None
    if not isinstance(d_core, SymbolicZero):
        tangent = jax.lax.dot_general(jnp.broadcast_to(d_core, (state.shape[0], *core.shape)), state, _BATCHED,
                                      **kwargs)
    if not isinstance(d_state, SymbolicZero):
        core_t = jax.lax.optimization_barrier(core.T)
        broadcast = jnp.swapaxes(jnp.broadcast_to(core_t, (state.shape[0], *core_t.shape)), 1, 2)
        term = jax.lax.dot_general(broadcast, d_state, _BATCHED, **kwargs)
        tangent = term if tangent is None else tangent + term
    return out, jnp.zeros_like(out) if tangent is None else tangent


_broadcast_product.defjvp(_broadcast_product_jvp, symbolic_zeros=True)


def _product_flops() -> float:
    """The planner's cost per small matrix product: XLA:CPU pays for each, XLA:GPU does not."""
    return XLA_CPU_PRODUCT_FLOPS if jax.default_backend() == "cpu" else 0.0


def _broadcast_is_cheaper(contracted: int, inner: int, rows: int) -> bool:
    """Whether to broadcast a ``(rows, contracted)`` core over a ``(B, contracted, inner)`` state.

    Per batch row the broadcast moves ``rows * contracted`` floats, the transposed
    form ``inner * (contracted + rows)``; broadcast unless that is under half.

    >>> _broadcast_is_cheaper(32, 16, 16), _broadcast_is_cheaper(16, 8, 64), _broadcast_is_cheaper(64, 16, 512)
    (True, True, False)
    """
    return rows * contracted < 2 * inner * (contracted + rows)


class TTCore(nnx.Param):
    """A TT core, shape ``(r_{k-1}, m_k, n_k, r_k)``: an ``nnx.Param`` that filters can select."""


class TTLinear(TTShapeProperties, nnx.Module):
    """A linear layer ``y = x @ W + b`` with ``W`` (``M x N``) held as TT cores.

    ``W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] @ ... @ G_d[:, i_d, j_d, :]``
    with core ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)``, ``r_0 = r_d = 1``,
    and row-major multi-indices (the first mode varies slowest). The forward
    pass contracts core by core in the cheaper direction and never builds ``W``.

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
      rngs: rng streams; ``rngs.params()`` draws the cores and the bias.
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
        rngs: nnx.Rngs,
    ):
        self.shape = TTMatrixShape.create(in_modes, out_modes, ranks)
        if direction not in ("auto", "ltr", "rtl"):
            raise ValueError(f"direction must be 'auto', 'ltr' or 'rtl', got {direction!r}")
        self.direction: Direction = choose_direction(self.shape) if direction == "auto" else direction
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        cores = cores_init(rngs.params(), self.shape, param_dtype)
        self.shape.check_cores([c.shape for c in cores])
        self.cores = nnx.List([TTCore(c) for c in cores])
        self.bias = nnx.Param(bias_init(rngs.params(), (self.shape.out_features,), param_dtype)) if use_bias else None

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Applies the layer to the last axis of ``inputs``: ``(..., M) -> (..., N)``."""
        cores = [c[...] for c in self.cores]
        bias = self.bias[...] if self.bias is not None else None
        inputs, bias, *cores = dtypes.promote_dtype((inputs, bias, *cores), dtype=self.dtype)
        groups, direction = self.plan(math.prod(inputs.shape[:-1]))
        y = tt_matmul(
            inputs,
            cores,
            self.shape,
            direction,
            permute=jnp.transpose,
            matmul=functools.partial(_matmul, precision=self.precision),
            groups=groups,
        )
        # broadcast_rows: the bias gradient as a matrix product, not XLA:CPU's slow column sum (tt_jax.rows).
        return y if bias is None else y + broadcast_rows(bias, y.shape)

    def plan(self, batch_size: int) -> tuple[tuple[int, ...], Direction]:
        """The runs of adjacent cores merged and the direction of the product for a batch of ``batch_size``.

        The forward pass contracts with this plan. From :func:`tt_common.contraction.layer_plan`, with XLA:CPU's
        cost per small matrix product on a CPU.

        >>> from flax import nnx
        >>> import tt_jax
        >>> layer = tt_jax.TTLinear((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4, rngs=nnx.Rngs(0))
        >>> layer.plan(100)  # cores 1-2 and 4-5 merged, left to right
        ((2, 1, 2), 'ltr')
        """
        return layer_plan(self.shape, batch_size, self.direction, product_flops=_product_flops())

    def to_dense(self) -> jax.Array:
        """The dense ``(M, N)`` kernel (the layout of ``nnx.Linear``), differentiable."""
        cores = [c[...] for c in self.cores]
        eye = jnp.eye(self.in_features, dtype=cores[0].dtype)
        return tt_matmul(eye, cores, self.shape, self.direction, permute=jnp.transpose)

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
        **kwargs,
    ) -> TTLinear:
        """A layer whose cores are the TT-SVD (float64) of ``kernel``, shape ``(M, N)``.

        ``max_rank`` and/or ``rtol`` truncate as in :func:`tt_common.tt_svd`
        (both ``None``: exact). ``bias`` (default zeros when ``use_bias``)
        becomes the layer's bias. Other keywords go to the constructor.

        >>> import numpy as np
        >>> kernel = np.random.default_rng(0).standard_normal((16, 9))
        >>> layer = TTLinear.from_dense(kernel, (4, 4), (3, 3))
        >>> bool(np.allclose(layer.to_dense(), kernel, atol=1e-5))
        True
        """
        decomposition = tt_svd(np.asarray(kernel), in_modes, out_modes, max_rank=max_rank, rtol=rtol)
        return cls._from_decomposition(decomposition, bias, **kwargs)

    def round(self, *, max_rank: int | Sequence[int] | None = None, rtol: float | None = None) -> TTLinear:
        """A new layer with lower TT-ranks (TT rounding in float64), same bias and settings."""
        cores = [np.asarray(c[...], dtype=np.float64) for c in self.cores]
        bias = None if self.bias is None else self.bias[...]
        return self._from_decomposition(
            tt_round(cores, max_rank=max_rank, rtol=rtol),
            bias,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
        )

    @classmethod
    def _from_decomposition(
        cls, decomposition: TTDecomposition, bias: jax.Array | np.ndarray | None, **kwargs
    ) -> TTLinear:
        shape = decomposition.shape
        shape.check_bias(None if bias is None else np.shape(bias), kwargs.get("use_bias", True))

        def cores_init(key, shape, dtype):
            return tuple(jnp.asarray(c, dtype) for c in decomposition.cores)

        def bias_init(key, shape, dtype):
            return jnp.zeros(shape, dtype) if bias is None else jnp.asarray(bias, dtype)

        kwargs.setdefault("rngs", nnx.Rngs(0))
        return cls(shape.in_modes, shape.out_modes, shape.ranks, cores_init=cores_init, bias_init=bias_init, **kwargs)
