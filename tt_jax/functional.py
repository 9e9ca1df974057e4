"""The functional core: a TT matrix as a value, and the functions on it (plain JAX, no module needed).

:class:`TTMatrix` holds the cores and their :class:`tt_common.TTMatrixShape`; it
is a registered pytree (the cores are its leaves, the shape static), so it goes
through ``jax.jit``, ``jax.grad``, ``jax.vmap``, optax and equinox as is.

- :func:`tt_linear` ``(x, cores, bias)``: ``x @ W + b``, what ``TTLinear`` computes;
  :func:`matmul` ``(x, tt)``: ``x @ W``. Both contract core by core with the plan of
  :func:`plan` and never build ``W``.
- :func:`to_dense`, :func:`from_dense` (TT-SVD) and :func:`round` (TT rounding):
  the algorithms of :mod:`tt_common.decomposition` on ``jnp.linalg``, in the
  dtype of their input (float16 and bfloat16 are decomposed in float32), under
  ``jax.jit`` whenever the ranks are static: ``max_rank`` alone. ``rtol`` picks
  ranks from the singular values and so needs concrete arrays (outside jit).

>>> import jax, jax.numpy as jnp
>>> from tt_jax import functional as F
>>> kernel = jax.random.normal(jax.random.key(0), (16, 9))
>>> tt = F.from_dense(kernel, (4, 4), (3, 3), max_rank=2)
>>> tt.ranks, F.matmul(jnp.ones((5, 16)), tt).shape
((1, 2, 1), (5, 9))
>>> jax.jit(F.round, static_argnames="max_rank")(tt, max_rank=1).ranks
(1, 1, 1)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from tt_common import decomposition
from tt_common.contraction import Direction, layer_plan, planning_batch, tt_matmul
from tt_common.shapes import TTMatrixShape, TTShapeProperties, check_input_features, check_input_ndim
from tt_jax._xla_cpu import add_bias, on_cpu, product_flops

__all__ = ["TTMatrix", "from_dense", "matmul", "plan", "round", "to_dense", "tt_linear"]

DotGeneral = Callable[..., jax.Array]


@jax.tree_util.register_pytree_node_class
class TTMatrix(TTShapeProperties):
    """An ``M x N`` matrix in TT format: ``cores`` (core ``k`` of shape ``(r_{k-1}, m_k, n_k, r_k)``) and ``shape``.

    The constructor reads the shape off the cores and checks it (against ``shape``, if given).

    >>> import jax.numpy as jnp
    >>> tt = TTMatrix([jnp.ones((1, 2, 3, 2), jnp.float32), jnp.ones((2, 4, 5, 1), jnp.float32)])
    >>> tt
    TTMatrix(in_modes=(2, 4), out_modes=(3, 5), ranks=(1, 2, 1), dtype=float32)
    >>> to_dense(tt).shape, jax.tree.leaves(jax.tree.map(lambda c: 2 * c, tt))[0].shape
    ((8, 15), (1, 2, 3, 2))
    """

    cores: tuple[jax.Array, ...]
    shape: TTMatrixShape

    def __init__(self, cores: Sequence[jax.Array], shape: TTMatrixShape | None = None) -> None:
        cores = tuple(jnp.asarray(c) for c in cores)
        found = TTMatrixShape.of_cores([c.shape for c in cores], shape)
        self.cores, self.shape = cores, found

    @property
    def dtype(self) -> jnp.dtype:
        """The dtype of the cores (that of the first core)."""
        return self.cores[0].dtype

    def tree_flatten(self) -> tuple[tuple[jax.Array, ...], TTMatrixShape]:
        return self.cores, self.shape

    @classmethod
    def tree_unflatten(cls, shape: TTMatrixShape, cores: Sequence[Any]) -> TTMatrix:
        # No checks: jax.vmap and tree utilities put other things than the cores in the leaves.
        tt = object.__new__(cls)
        tt.cores, tt.shape = tuple(cores), shape
        return tt

    def __repr__(self) -> str:
        return (f"TTMatrix(in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"dtype={self.dtype})")


def plan(shape: TTMatrixShape, batch_size: int, direction: Direction | None = None) -> tuple[tuple[int, ...], Direction]:
    """The runs of adjacent cores merged and the direction of the product for a batch of ``batch_size``.

    :func:`tt_common.contraction.layer_plan`, with XLA:CPU's cost per small matrix product on a CPU.

    >>> plan(TTMatrixShape.create((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4), 100)  # on a CPU
    ((2, 1, 2), 'ltr')
    """
    return layer_plan(shape, batch_size, direction, product_flops=product_flops())


Kernel = Literal["auto", "xla", "pallas"]


def _fused_kernel(kernel: str, shape: TTMatrixShape, batch_size: int, dtype: Any, dot_general: DotGeneral,
                  preferred_element_type: Any) -> bool:
    """Whether :func:`tt_linear` takes the fused Pallas kernel (see its ``kernel`` argument).

    ``"auto"`` off a GPU answers ``False`` without loading Pallas: the CPU path is the XLA product, unchanged.
    """
    if kernel not in ("auto", "xla", "pallas"):
        raise ValueError(f"kernel must be 'auto', 'xla' or 'pallas', got {kernel!r}")
    custom = dot_general is not jax.lax.dot_general or preferred_element_type is not None
    if kernel == "pallas":
        if custom:
            raise ValueError("kernel='pallas' takes neither a custom dot_general nor preferred_element_type")
        return True
    if kernel == "xla" or custom or jax.default_backend() != "gpu":
        return False
    from tt_jax import _pallas

    return _pallas.use_pallas(kernel, shape, batch_size, dtype)


def tt_linear(
    x: jax.Array,
    cores: Sequence[jax.Array],
    bias: jax.Array | None = None,
    *,
    shape: TTMatrixShape | None = None,
    direction: Direction | None = None,
    precision: jax.lax.PrecisionLike = None,
    dot_general: DotGeneral = jax.lax.dot_general,
    preferred_element_type: jnp.dtype | None = None,
    plan_batch_size: int = 1,
    kernel: Kernel = "auto",
) -> jax.Array:
    """``x @ W + bias`` for ``x`` of shape ``(..., M)``: ``(..., N)``, contracted core by core.

    ``shape`` (default: read off the cores) is checked against the cores. ``direction`` defaults to the
    cheaper one (:func:`tt_common.choose_direction`). Every product is a ``dot_general`` call (``precision``,
    ``preferred_element_type`` go to it, as in ``nnx.Linear``). Arrays are used in their own dtypes: promote
    them first. A symbolic batch (``jax.export``) is planned for ``plan_batch_size``
    (:func:`tt_common.contraction.planning_batch`).

    ``kernel``: ``"xla"`` is the core-by-core product above; ``"pallas"`` forces the fused Pallas kernel
    (``tt_jax._pallas``: all cores on a block of rows in one kernel, left to right; interpreted off a GPU; it
    takes ``precision`` but neither ``dot_general`` nor ``preferred_element_type``); ``"auto"`` (default) is
    ``"xla"`` on a CPU, and on a GPU ``"pallas"`` only where the benchmark measured it faster (none yet).

    >>> import jax.numpy as jnp
    >>> cores = [jnp.ones((1, 2, 3, 2)), jnp.ones((2, 4, 5, 1))]
    >>> tt_linear(jnp.ones((7, 8)), cores, jnp.zeros(15)).shape
    (7, 15)
    """
    found = TTMatrixShape.of_cores([c.shape for c in cores], shape)
    if bias is not None:
        found.check_bias(bias.shape)
    batch = planning_batch(x.shape[:-1], plan_batch_size)
    if _fused_kernel(kernel, found, batch, x.dtype, dot_general, preferred_element_type):
        from tt_jax import _pallas  # imported only when taken: Pallas stays unloaded on the default path

        check_input_ndim(x.ndim, found.in_features)
        check_input_features(x.shape[-1], found.in_features, found.in_modes)
        with jax.named_scope("tt_linear_pallas"):
            return _pallas.fused_tt_linear(x, list(cores), bias, found, precision=precision)
    groups, direction = plan(found, batch, direction)
    product = functools.partial(_matmul, dot_general=dot_general, precision=precision,
                                preferred_element_type=preferred_element_type)
    with jax.named_scope("tt_linear"):
        y = tt_matmul(x, list(cores), found, direction, permute=jnp.transpose, matmul=product, groups=groups)
        return add_bias(y, bias)


def matmul(x: jax.Array, tt: TTMatrix, **kwargs: Any) -> jax.Array:
    """``x @ W`` for the TT matrix ``tt`` and ``x`` of shape ``(..., M)``; keywords as :func:`tt_linear`."""
    return tt_linear(x, tt.cores, None, shape=tt.shape, **kwargs)


def to_dense(tt: TTMatrix, *, precision: jax.lax.PrecisionLike = None) -> jax.Array:
    """The dense ``(M, N)`` matrix (the kernel layout of ``nnx.Linear``), differentiable; ``precision`` goes to
    every product."""
    eye = jnp.eye(tt.in_features, dtype=tt.dtype)
    return tt_matmul(eye, list(tt.cores), tt.shape, permute=jnp.transpose,
                     matmul=functools.partial(_matmul, precision=precision))


def _to_host(array: jax.Array) -> np.ndarray | None:
    return None if isinstance(array, jax.core.Tracer) else np.asarray(array)


OPS = decomposition.LinalgOps(
    svd=functools.partial(jnp.linalg.svd, full_matrices=False),
    qr=jnp.linalg.qr,
    permute=jnp.transpose,
    to_host=_to_host,
    largest=lambda m: jnp.take_along_axis(m, jnp.abs(m).argmax(axis=0)[None], axis=0)[0],
)


def _working_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """float32 or float64: the dtypes ``jnp.linalg``'s decompositions take."""
    return jnp.promote_types(dtype, jnp.float32)


def from_dense(
    kernel: jax.Array | np.ndarray,
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
) -> TTMatrix:
    """The TT-SVD of a dense ``(M, N)`` kernel (layout ``(in, out)``), cores in the kernel's dtype.

    ``max_rank`` and/or ``rtol`` truncate (:mod:`tt_common.decomposition`; both ``None``: exact).

    >>> import numpy as np
    >>> kernel = np.random.default_rng(0).standard_normal((16, 9)).astype(np.float32)
    >>> tt = from_dense(kernel, (4, 4), (3, 3))
    >>> tt.ranks, tt.dtype, bool(np.allclose(to_dense(tt), kernel, atol=1e-5))
    ((1, 12, 1), dtype('float32'), True)
    """
    kernel = jnp.asarray(kernel)
    found = decomposition.tt_svd(kernel.astype(_working_dtype(kernel.dtype)), in_modes, out_modes,
                                 max_rank=max_rank, rtol=rtol, ops=OPS)
    return TTMatrix([c.astype(kernel.dtype) for c in found.cores])


def round(tt: TTMatrix, *, max_rank: int | Sequence[int] | None = None, rtol: float | None = None) -> TTMatrix:  # noqa: A001
    """The TT matrix with ranks lowered by TT rounding (:mod:`tt_common.decomposition`), in ``tt``'s dtype.

    >>> import jax.numpy as jnp
    >>> tt = TTMatrix([jnp.ones((1, 2, 3, 2)), jnp.ones((2, 4, 5, 1))])
    >>> round(tt, rtol=1e-6).ranks
    (1, 1, 1)
    """
    found = decomposition.tt_round([c.astype(_working_dtype(tt.dtype)) for c in tt.cores],
                                   max_rank=max_rank, rtol=rtol, ops=OPS)
    return TTMatrix([c.astype(tt.dtype) for c in found.cores])


_BATCHED = (((2,), (1,)), ((0,), (0,)))  # (B, p, q) x (B, q, s) -> (B, p, s)


def _matmul(
    a: jax.Array, b: jax.Array, *, dot_general: DotGeneral = jax.lax.dot_general,
    precision: jax.lax.PrecisionLike = None, preferred_element_type: jnp.dtype | None = None,
) -> jax.Array:
    """``a @ b`` for the steps of :func:`tt_common.contraction.tt_matmul`, through ``dot_general``.

    A broadcast ``(1, p, q) @ (B, q, s)`` is returned as ``(B, p, s)`` in the cheaper of two forms
    (``jnp.matmul`` would contract it into ``(p, B, s)``, which the next step reads transposed):

    - a batched product over the core broadcast to ``(B, p, q)``, which XLA materializes
      (``B p q`` floats written and read);
    - one product on ``(B s, q)`` rows and a transposed result, for which XLA copies the state
      and the result (``B q s + B p s`` floats).

    The first, unless on XLA:CPU the broadcast core moves at least twice as much memory
    (:func:`_broadcast_is_cheaper`; measured on a CPU only, so other backends keep the first).
    """
    kwargs: dict[str, Any] = {"precision": precision}
    if preferred_element_type is not None:  # as nnx.Linear: custom dot_generals need not take it
        kwargs["preferred_element_type"] = preferred_element_type
    if a.ndim == 2:
        return dot_general(a, b, (((1,), (0,)), ((), ())), **kwargs)
    core, state = a[0], b
    if not on_cpu() or _broadcast_is_cheaper(*state.shape[1:], core.shape[0]):
        return dot_general(jnp.broadcast_to(core, (state.shape[0], *core.shape)), state, _BATCHED, **kwargs)
    return jnp.swapaxes(dot_general(state, core, (((1,), (1,)), ((), ())), **kwargs), 1, 2)


def _broadcast_is_cheaper(contracted: int, inner: int, rows: int) -> bool:
    """Whether to broadcast a ``(rows, contracted)`` core over a ``(B, contracted, inner)`` state.

    Per batch row the broadcast moves ``rows * contracted`` floats, the transposed
    form ``inner * (contracted + rows)``; broadcast unless that is under half.

    >>> _broadcast_is_cheaper(32, 16, 16), _broadcast_is_cheaper(16, 8, 64), _broadcast_is_cheaper(64, 16, 512)
    (True, True, False)
    """
    return rows * contracted < 2 * inner * (contracted + rows)

