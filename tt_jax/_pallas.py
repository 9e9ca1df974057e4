"""A fused Pallas kernel of the TT product ``x @ W + b``: every core applied to a block of rows in one kernel.

Private, and off by default: :func:`tt_jax.functional.tt_linear` takes it with ``kernel="pallas"``, and
``kernel="auto"`` only on a GPU and only where :data:`MEASURED_WINS` records that the benchmark measured it
faster than XLA's core-by-core product (none recorded yet: see ``docs/performance.md``, GPU). On a CPU it runs
in Pallas's interpret mode (the tests' oracle check), never by default.

The plan (padded modes and ranks, the split output modes, the block of rows) is :func:`tt_common.fused.
fused_plan`'s. Grid ``(P, blocks)``: program ``(p, i)`` reads rows ``i`` (all ``M`` inputs), applies the cores
left to right with the first ``split`` cores sliced at the output index that ``p`` spells, keeps every state in
the kernel, adds its tile of the bias and writes its ``(block_rows, N / P)`` tile of the output. ``p`` varies
fastest, so the ``P`` programs of one block of rows run together and read its rows from cache.

Each step is one 2-D product ``(outer inner, c) @ (c, a)`` between transposes of the state held in the kernel:
the Pallas Triton lowering (asked for by its ``CompilerParams``: this JAX lowers ``pallas_call`` to Mosaic
GPU by default) takes 2-D ``dot_general`` only, with power-of-two array sizes (hence the padding).

Gradients (``jax.custom_vjp``): the input's is the same kernel on the transposed TT (``W^T``: each core with its
two modes swapped), or XLA's product where that plan does not fit; the cores' come from autodiff of XLA's
core-by-core product (its forward is recomputed); the bias's is the sum of the cotangent over the rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from tt_common.contraction import tt_matmul
from tt_common.fused import DEFAULT_MAX_BLOCK_ELEMENTS, FusedPlan, FusedStep, fused_plan
from tt_common.shapes import TTMatrixShape

__all__ = ["MEASURED_WINS", "fused_tt_linear", "use_pallas"]

# (layer shape, smallest batch, dtype name) where the benchmark (python -m benchmarks.run --device gpu
# --candidates ours pallas) measured the fused kernel's training step faster than XLA's on a GPU. Empty: no GPU
# run of the kernel has been recorded yet, so kernel="auto" keeps XLA everywhere.
MEASURED_WINS: tuple[tuple[TTMatrixShape, int, str], ...] = ()


def use_pallas(kernel: str, shape: TTMatrixShape, batch_size: int, dtype: Any) -> bool:
    """Whether ``tt_linear`` takes the fused kernel: ``"pallas"`` forces it, ``"xla"`` never, ``"auto"`` only on
    a GPU for a case of :data:`MEASURED_WINS`."""
    if kernel not in ("auto", "xla", "pallas"):
        raise ValueError(f"kernel must be 'auto', 'xla' or 'pallas', got {kernel!r}")
    if kernel != "auto":
        return kernel == "pallas"
    if jax.default_backend() != "gpu":
        return False
    name = jnp.dtype(dtype).name
    return any(s == shape and batch_size >= b and d == name for s, b, d in MEASURED_WINS)


def fused_tt_linear(
    x: jax.Array,
    cores: Sequence[jax.Array],
    bias: jax.Array | None,
    shape: TTMatrixShape,
    *,
    precision: jax.lax.PrecisionLike = None,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    interpret: bool | None = None,
) -> jax.Array:
    """``x @ W + bias`` for ``x`` of shape ``(..., M)`` through the fused kernel; ``(..., N)``.

    ``interpret`` defaults to ``True`` off a GPU (Pallas's interpreter: the CPU tests). Raises ``ValueError``
    when the layer's input row does not fit ``max_block_elements`` (:func:`tt_common.fused.fused_plan`).
    """
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    batch_shape = x.shape[:-1]
    rows = math.prod(batch_shape)
    options = _Options(_canonical_precision(precision), max_block_elements, bool(interpret))
    fused_plan(shape, max(rows, 1), max_block_elements=max_block_elements)  # a bad layer fails here, not in a trace
    y = _fused(x.reshape(rows, shape.in_features), tuple(cores), bias, shape, options)
    return y.reshape(*batch_shape, shape.out_features)


@functools.lru_cache(maxsize=64)
def _transposed(shape: TTMatrixShape) -> TTMatrixShape:
    """The shape of ``W^T``: the modes swapped, the same ranks."""
    return TTMatrixShape(shape.out_modes, shape.in_modes, shape.ranks)


def _canonical_precision(precision: jax.lax.PrecisionLike) -> Any:
    """A hashable precision (``custom_vjp``'s static arguments are hashed): strings become ``lax.Precision``."""
    if isinstance(precision, str):
        return jax.lax.Precision(precision)
    if isinstance(precision, list):
        return tuple(precision)
    return precision


class _Options(NamedTuple):
    """The kernel's static settings: hashable, as ``custom_vjp``'s static arguments must be."""

    precision: Any
    max_block_elements: int
    interpret: bool


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused(x: jax.Array, cores: tuple[jax.Array, ...], bias: jax.Array | None, shape: TTMatrixShape,
           options: _Options) -> jax.Array:
    return _forward(x, cores, bias, shape, options)


def _fused_fwd(x, cores, bias, shape, options):
    return _forward(x, cores, bias, shape, options), (x, cores, bias)


def _fused_bwd(shape: TTMatrixShape, options: _Options, residuals, g: jax.Array):
    x, cores, bias = residuals
    precision = options[0]
    swapped = tuple(jnp.transpose(c, (0, 2, 1, 3)) for c in cores)
    try:
        dx = _forward(g, swapped, None, _transposed(shape), options)
    except ValueError:  # W^T's input row (the output width) does not fit a block: XLA's product
        dx = _xla_product(g, swapped, _transposed(shape), precision)
    _, pullback = jax.vjp(lambda cs: _xla_product(x, cs, shape, precision), cores)
    (dcores,) = pullback(g)
    dbias = None if bias is None else jnp.sum(g, axis=0).astype(bias.dtype)
    return dx.astype(x.dtype), tuple(dcores), dbias


_fused.defvjp(_fused_fwd, _fused_bwd)


def _xla_product(x: jax.Array, cores: Sequence[jax.Array], shape: TTMatrixShape, precision: Any) -> jax.Array:
    """XLA's core-by-core ``x @ W`` (the backward's fallback and the cores' gradient)."""
    return tt_matmul(x, list(cores), shape, permute=jnp.transpose,
                     matmul=functools.partial(jnp.matmul, precision=precision))


def _forward(x: jax.Array, cores: Sequence[jax.Array], bias: jax.Array | None, shape: TTMatrixShape,
             options: _Options) -> jax.Array:
    """``(B, M) -> (B, N)``: pads, runs the kernel, crops."""
    precision, max_block_elements, interpret = options
    batch = x.shape[0]
    plan = fused_plan(shape, max(batch, 1), max_block_elements=max_block_elements)
    blocks = plan.num_blocks(batch)
    xp = _pad_rows(_pad_modes(x, shape.in_modes, plan.in_modes), blocks * plan.block_rows)
    operands = [_core_operand(c, plan, step) for c, step in zip(_pad_cores(cores, plan), plan.steps)]
    p_count, tile = plan.programs_per_block, plan.tile
    in_specs = [pl.BlockSpec((plan.block_rows, plan.in_features), lambda p, i: (i, 0))]
    in_specs += [_core_spec(plan, step, op.shape) for step, op in zip(plan.steps, operands)]
    if bias is not None:
        operands.append(_pad_modes(bias[None], shape.out_modes, plan.out_modes).reshape(p_count, tile))
        in_specs.append(pl.BlockSpec((None, tile), lambda p, i: (p, 0)))
    kernel = functools.partial(_kernel, plan=plan, has_bias=bias is not None, precision=precision)
    y = pl.pallas_call(
        kernel,
        grid=(p_count, blocks),  # p fastest: a block's P programs share its rows in cache
        in_specs=in_specs,
        out_specs=pl.BlockSpec((plan.block_rows, None, tile), lambda p, i: (i, p, 0)),
        out_shape=jax.ShapeDtypeStruct((blocks * plan.block_rows, p_count, tile), x.dtype),
        interpret=interpret,
        name="tt_fused_linear",
        compiler_params=pltriton.CompilerParams(num_warps=4),  # the Triton lowering (its default is Mosaic GPU)
    )(xp, *operands)
    y = y.reshape(blocks * plan.block_rows, plan.out_features)[:batch]
    return _crop_modes(y, plan.out_modes, shape.out_modes)


def _pad_modes(x: jax.Array, modes: tuple[int, ...], padded: tuple[int, ...]) -> jax.Array:
    """``(B, prod(modes)) -> (B, prod(padded))`` with zeros in the padded positions of each mode."""
    if modes == padded:
        return x
    t = x.reshape(x.shape[0], *modes)
    t = jnp.pad(t, [(0, 0)] + [(0, p - m) for m, p in zip(modes, padded)])
    return t.reshape(x.shape[0], math.prod(padded))


def _crop_modes(y: jax.Array, padded: tuple[int, ...], modes: tuple[int, ...]) -> jax.Array:
    if modes == padded:
        return y
    t = y.reshape(y.shape[0], *padded)[(slice(None), *(slice(0, m) for m in modes))]
    return t.reshape(y.shape[0], math.prod(modes))


def _pad_rows(x: jax.Array, rows: int) -> jax.Array:
    return x if x.shape[0] == rows else jnp.pad(x, [(0, rows - x.shape[0]), (0, 0)])


def _pad_cores(cores: Sequence[jax.Array], plan: FusedPlan) -> list[jax.Array]:
    """Cores zero-padded to the plan's power-of-two ranks and modes (the same ``W`` in the real positions)."""
    out = []
    for k, core in enumerate(cores):
        target = (plan.ranks[k], plan.in_modes[k], plan.out_modes[k], plan.ranks[k + 1])
        out.append(jnp.pad(core, [(0, t - s) for s, t in zip(core.shape, target)]))
    return out


def _core_operand(core: jax.Array, plan: FusedPlan, step: FusedStep) -> jax.Array:
    """The core as the right factor ``(c, a)`` of its step: ``(r_{k-1} m_k, n_k r_k)``, or for a sliced core the
    stack over ``j_k`` of ``(r_{k-1} m_k, r_k)``: ``(n_k, r_{k-1} m_k, r_k)``."""
    r0, m, n, r1 = core.shape
    if step.sliced:
        return jnp.transpose(core, (2, 0, 1, 3)).reshape(n, r0 * m, r1)
    return core.reshape(r0 * m, n * r1)


def _core_spec(plan: FusedPlan, step: FusedStep, shape: tuple[int, ...]) -> pl.BlockSpec:
    if not step.sliced:
        return pl.BlockSpec(shape, lambda p, i: (0, 0))
    n = plan.out_modes
    stride = math.prod(n[step.core + 1 : plan.split])  # p spells (j_1..j_split) row-major
    return pl.BlockSpec((None, *shape[1:]), lambda p, i: ((p // stride) % n[step.core], 0, 0))


def _kernel(x_ref, *refs, plan: FusedPlan, has_bias: bool, precision: Any) -> None:
    d = len(plan.steps)
    core_refs, o_ref = refs[:d], refs[-1]
    rows = plan.block_rows
    state = x_ref[...]
    for step, ref in zip(plan.steps, core_refs):
        state = _step(state, ref[...], rows * step.outer, step.c, step.inner, precision)
    y = state.reshape(rows, plan.tile)
    if has_bias:
        y = y + refs[d][...][None, :]
    o_ref[...] = y.astype(o_ref.dtype)


def _step(state: jax.Array, core: jax.Array, outer: int, c: int, inner: int, precision: Any) -> jax.Array:
    """``out[o, :, i] = core.T @ state[o, :, i]`` for the state as ``(outer, c, inner)``; returned 2-D."""
    if inner == 1:
        return _dot(state.reshape(outer, c), core, precision)
    t = jnp.transpose(state.reshape(outer, c, inner), (0, 2, 1)).reshape(outer * inner, c)
    u = _dot(t, core, precision).reshape(outer, inner, core.shape[1])
    return jnp.transpose(u, (0, 2, 1)).reshape(outer, core.shape[1] * inner)


def _dot(a: jax.Array, b: jax.Array, precision: Any) -> jax.Array:
    """A 2-D product accumulated in at least float32, returned in ``a``'s dtype (as XLA's steps round)."""
    acc = jnp.promote_types(a.dtype, jnp.float32)
    out = jax.lax.dot_general(a, b.astype(a.dtype), (((1,), (0,)), ((), ())), precision=precision,
                              preferred_element_type=acc)
    return out.astype(a.dtype)
