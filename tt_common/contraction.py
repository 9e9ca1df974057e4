"""The TT matrix-by-batch product, core by core, written once for every array library.

``tt_matmul`` contracts an input ``x`` of shape ``(..., M)`` with the cores and
returns ``x @ W`` of shape ``(..., N)`` without ever building ``W``. It only
uses ``reshape``, the 2-D transpose ``.T`` of a small core, the matrix product
(2-D, or a broadcast batched ``(1, a, c) @ (L, c, R)``), which NumPy, JAX and
PyTorch arrays share, plus a ``permute`` function for the cores (NumPy/JAX
``transpose(axes)`` vs PyTorch ``permute(*dims)``).

The large state is never transposed. Its memory layout stays fixed from the
input ``(B, m_1..m_d)`` to the output ``(B, n_1..n_d)``: each step views it as
``(L, c, R)`` with the two contracted indices (an input mode and a rank) in
the middle and multiplies every ``(c, R)`` slice by the core, and the product,
read row-major, already is the next state (:func:`_chain`). The output is
row-major ``(B, N)``, so the next layer reads it without a copy, and autodiff's
backward is made of the same broadcast products. Against the earlier form (one
matrix product and one full 2-D transpose of the state per step) this made a
training step of the thesis's CIFAR-10 TT networks 1.3 to 1.65x faster on our
2-core CPU (``python -m experiments.timing --dataset cifar10``).

Two directions contract the same product:

- ``"ltr"`` (left to right) eats core 1 first. Step ``k`` costs
  ``2 B r_{k-1} r_k (n_1..n_k) (m_k..m_d)`` FLOPs.
- ``"rtl"`` (right to left) eats core d first. Step ``k`` costs
  ``2 B r_{k-1} r_k (m_1..m_k) (n_k..n_d)`` FLOPs.

Both are linear in the batch size ``B``, so the cheaper direction is a property
of the layer alone (:func:`choose_direction`). Ties (symmetric modes) go to the
direction whose broadcast steps copy fewer core elements in training
(:func:`broadcast_core_elements`), then to ``"ltr"``.

Merging cores. Every step reads the whole state and writes the next one, and a
step does only ``2 r_{k-1} m_k`` (or ``2 m_k r_k``) FLOPs per element it
writes: with ranks and modes below 10, the product is bound by memory
bandwidth, not by the matmul units. ``groups`` merges runs of adjacent cores
into one core first (``(r, m_k m_{k+1}, n_k n_{k+1}, r')``, a product of two
small cores whose cost does not depend on the batch): fewer steps, fewer passes
over the large states, more FLOPs per byte. :func:`plan_groups` picks the runs
with a cost model (FLOPs + ``flops_per_byte`` x state bytes + a cost per step).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tt_common.shapes import TTMatrixShape, check_input_features, check_input_ndim

__all__ = [
    "DEFAULT_MAX_DENSE_BYTES",
    "Direction",
    "InferenceChoice",
    "InferenceForm",
    "broadcast_core_elements",
    "choose_direction",
    "choose_inference_form",
    "contraction_flops",
    "dense_call_cost",
    "dense_matmul_flops",
    "flop_table",
    "layer_plan",
    "merge_cores",
    "merged_shape",
    "plan_cost",
    "plan_groups",
    "planning_batch",
    "reconstruction_flops",
    "small_products",
    "tt_matmul",
]

Direction = Literal["ltr", "rtl"]
InferenceForm = Literal["cores", "dense"]
Permute = Callable[[Any, tuple[int, ...]], Any]

def contraction_flops(shape: TTMatrixShape, batch_size: int, direction: Direction) -> list[int]:
    """FLOPs (multiply and add counted separately) of each step of the product.

    The list is in execution order: core 1 first for ``"ltr"``, core d first for
    ``"rtl"``.

    >>> shape = TTMatrixShape.create((2, 3), (4, 5), ranks=2)
    >>> contraction_flops(shape, 1, "ltr"), contraction_flops(shape, 1, "rtl")
    ([96, 240], [120, 160])
    """
    # Step k multiplies its (a, c) core matrix into each of B outer (c, inner) slices: 2 a c inner FLOPs each.
    return [2 * batch_size * outer * a * c * inner for _, a, c, outer, inner in _step_sizes(shape, direction)]


def _step_sizes(shape: TTMatrixShape, direction: Direction) -> list[tuple[int, int, int, int, int]]:
    """Per step, in execution order: ``(k, a, c, outer, inner)`` for one example.

    Step ``k`` multiplies the core, viewed as an ``(a, c)`` matrix, into every ``(c, inner)`` slice of the
    state viewed as ``(outer, c, inner)`` (:func:`_step`); with a batch of ``B``, ``outer`` is ``B`` times
    larger. Left to right ``a = n_k r_k``, ``c = r_{k-1} m_k``; right to left ``a = r_{k-1} n_k``,
    ``c = m_k r_k``.

    >>> _step_sizes(TTMatrixShape.create((2, 3), (4, 5), ranks=2), "ltr")
    [(0, 8, 2, 1, 3), (1, 5, 6, 4, 1)]
    """
    m, n, r, d = shape.in_modes, shape.out_modes, shape.ranks, shape.d
    if direction == "ltr":
        return [(k, n[k] * r[k + 1], r[k] * m[k], math.prod(n[:k]), math.prod(m[k + 1 :])) for k in range(d)]
    if direction == "rtl":
        return [(k, r[k] * n[k], m[k] * r[k + 1], math.prod(m[:k]), math.prod(n[k + 1 :]))
                for k in range(d - 1, -1, -1)]
    raise ValueError(f"direction must be 'ltr' or 'rtl', got {direction!r}")


def broadcast_core_elements(shape: TTMatrixShape, direction: Direction) -> int:
    """Elements per example of the cores copied along the batch by the broadcast steps of the product.

    A step with both ``outer`` and ``inner`` axes (:func:`_step_sizes`) is a broadcast product
    ``(1, a, c) @ (outer, c, inner)``; training pays ``outer a c`` elements for it (torch's backward forms
    the core's gradient once per ``outer`` index before summing; XLA:CPU materializes the broadcast core).

    >>> shape = TTMatrixShape.create((7, 16, 7), (64, 64, 64), 4)
    >>> broadcast_core_elements(shape, "ltr"), broadcast_core_elements(shape, "rtl")
    (1050368, 116480)
    """
    return sum(outer * a * c for _, a, c, outer, inner in _step_sizes(shape, direction) if inner > 1)


def choose_direction(shape: TTMatrixShape) -> Direction:
    """The direction with fewer FLOPs (independent of the batch size).

    On a tie (symmetric modes, e.g. ``(7, 16, 7) -> (64, 64, 64)``), the direction that copies fewer core
    elements in its broadcast steps (:func:`broadcast_core_elements`), then ``"ltr"``. For that layer
    (ranks 4, batch 100, torch on our 2-core CPU) ``"rtl"`` takes a training step in 127 ms, ``"ltr"`` in 303 ms.

    >>> choose_direction(TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4))
    'rtl'
    >>> choose_direction(TTMatrixShape.create((7, 16, 7), (64, 64, 64), 4))
    'rtl'
    """
    def cost(direction: Direction) -> tuple[int, int]:
        return sum(contraction_flops(shape, 1, direction)), broadcast_core_elements(shape, direction)

    return "ltr" if cost("ltr") <= cost("rtl") else "rtl"


def dense_matmul_flops(shape: TTMatrixShape, batch_size: int) -> int:
    """FLOPs of ``x @ W`` with the dense ``M x N`` matrix."""
    return 2 * batch_size * shape.in_features * shape.out_features


def reconstruction_flops(shape: TTMatrixShape) -> int:
    """FLOPs to build the dense ``W`` from the cores, left to right."""
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    return sum(
        2 * math.prod(m[:k]) * math.prod(n[:k]) * r[k] * m[k] * n[k] * r[k + 1]
        for k in range(1, shape.d)
    )


# The largest dense matrix "auto" builds for one layer: a TT model is chosen for its small memory, so the
# inference mode trades it for speed only up to a bound; pass max_dense_bytes to move it.
DEFAULT_MAX_DENSE_BYTES = 64 * 2**20


def dense_call_cost(shape: TTMatrixShape, batch_size: int, *, flops_per_byte: float = 10.0,
                    step_flops: float = 2e6) -> float:
    """Modelled cost, in FLOPs, of one call ``x @ W`` with the dense matrix, in :func:`plan_cost`'s units.

    The matmul's FLOPs + ``flops_per_byte`` x the float32 bytes it reads and writes (``x``, ``W``, the
    output) + ``step_flops`` for the call, so that it compares with :func:`plan_cost` of the cores. Building
    ``W`` (:func:`reconstruction_flops`) is paid once, not per call, and is not counted.

    >>> dense_call_cost(TTMatrixShape.create((2, 3), (4, 5), ranks=2), 1, step_flops=0)  # 240 + 10 x 4 x 146
    6080.0
    """
    m, n = shape.in_features, shape.out_features
    traffic = 4 * (batch_size * m + m * n + batch_size * n)
    return float(dense_matmul_flops(shape, batch_size) + flops_per_byte * traffic + step_flops)


@dataclass(frozen=True)
class InferenceChoice:
    """A layer's inference form for a batch size, and why (:func:`choose_inference_form`).

    ``cores_cost`` and ``dense_cost`` are the modelled costs of one call (:func:`plan_cost` of the layer's
    plan, :func:`dense_call_cost`); ``dense_bytes`` the memory of the dense ``W`` in the layer's dtype;
    ``reconstruction_flops`` the one-off cost of building it.
    """

    form: InferenceForm
    batch_size: int
    cores_cost: float
    dense_cost: float
    dense_bytes: int
    reconstruction_flops: int
    reason: str


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def choose_inference_form(
    shape: TTMatrixShape,
    batch_size: int,
    form: Literal["auto", "cores", "dense"] = "auto",
    *,
    direction: Direction | None = None,
    itemsize: int = 4,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
    product_flops: float = 0.0,
) -> InferenceChoice:
    """Whether a layer should contract its cores or multiply by its dense ``W`` (built once) at inference.

    ``"auto"`` takes the dense form when its modelled cost per call (:func:`dense_call_cost`) is below the
    cores' (:func:`plan_cost` of :func:`layer_plan`, the plan the layer contracts with; ``direction`` and
    ``product_flops`` as there) and ``W`` (``itemsize`` bytes per element) fits in ``max_dense_bytes``.
    ``"cores"`` / ``"dense"`` force the form; the costs are reported all the same.

    At batch 1 reading ``W`` costs more than the cores' product; at batch 32 the dense product wins:

    >>> wide = TTMatrixShape.create((32, 32), (32, 32), 32)  # 1024 -> 1024, rank 32
    >>> choose_inference_form(wide, 1).form, choose_inference_form(wide, 32).form
    ('cores', 'dense')
    >>> choose_inference_form(wide, 32).dense_bytes, choose_inference_form(wide, 32, max_dense_bytes=2**20).form
    (4194304, 'cores')
    >>> choose_inference_form(wide, 32, "cores").reason
    "forced by the user (form='cores')"
    """
    _check_batch_size(batch_size)
    if form not in ("auto", "cores", "dense"):
        raise ValueError(f"form must be 'auto', 'cores' or 'dense', got {form!r}")
    if isinstance(itemsize, bool) or not isinstance(itemsize, int) or itemsize < 1:
        raise ValueError(f"itemsize must be a positive integer, got {itemsize!r}")
    if isinstance(max_dense_bytes, bool) or not isinstance(max_dense_bytes, int) or max_dense_bytes < 0:
        raise ValueError(f"max_dense_bytes must be a non-negative integer, got {max_dense_bytes!r}")
    plan = layer_plan(shape, batch_size, direction, product_flops=product_flops)
    cores = plan_cost(shape, batch_size, *plan, product_flops=product_flops)
    dense = dense_call_cost(shape, batch_size)
    nbytes = shape.in_features * shape.out_features * itemsize
    costs = f"modelled cost per call at batch {batch_size}: cores {cores:.3g}, dense {dense:.3g} FLOPs"
    if form != "auto":
        chosen, reason = form, f"forced by the user (form={form!r})"
    elif nbytes > max_dense_bytes:
        chosen, reason = "cores", f"the dense W would take {_mib(nbytes)} > max_dense_bytes {_mib(max_dense_bytes)}"
    elif dense < cores:
        chosen, reason = "dense", f"dense is cheaper ({costs}); W takes {_mib(nbytes)}"
    else:
        chosen, reason = "cores", f"cores are cheaper ({costs})"
    return InferenceChoice(chosen, batch_size, cores, dense, nbytes, reconstruction_flops(shape), reason)


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def planning_batch(batch_shape: Sequence[Any], symbolic: int = 1) -> int:
    """The batch size to plan the contraction for: the product of ``batch_shape``, or ``symbolic``.

    Under ``jax.export`` / ``torch.export`` a batch dimension is a symbol (``jax.export.symbolic_shape``,
    a ``torch.SymInt``); the planner compares costs, which a symbol cannot do (JAX raises, torch would
    specialize the dimension), so the layers plan for ``symbolic``: their prepared inference batch size.

    >>> planning_batch((4, 8)), planning_batch(())
    (32, 1)
    """
    if all(type(d) is int for d in batch_shape):  # exactly int: a SymInt or a JAX symbolic dim is not
        return math.prod(batch_shape)
    return symbolic


def flop_table(shape: TTMatrixShape, batch_size: int) -> dict[str, int]:
    """FLOPs of every way to compute ``x @ W`` for a batch of ``batch_size``.

    >>> flop_table(TTMatrixShape.create((2, 3), (4, 5), ranks=2), 1)
    {'ltr': 336, 'rtl': 280, 'dense_reconstruction': 720, 'dense_matmul': 240}
    """
    return {
        "ltr": sum(contraction_flops(shape, batch_size, "ltr")),
        "rtl": sum(contraction_flops(shape, batch_size, "rtl")),
        "dense_reconstruction": reconstruction_flops(shape) + dense_matmul_flops(shape, batch_size),
        "dense_matmul": dense_matmul_flops(shape, batch_size),
    }


def _numpy_like_permute(array: Any, axes: tuple[int, ...]) -> Any:
    return array.transpose(axes)


def _check_groups(groups: Sequence[int], d: int) -> tuple[int, ...]:
    groups = tuple(int(g) for g in groups)
    if any(g < 1 for g in groups) or sum(groups) != d:
        raise ValueError(f"groups must be positive run lengths summing to d = {d}, got {groups}")
    return groups


def merged_shape(shape: TTMatrixShape, groups: Sequence[int]) -> TTMatrixShape:
    """The shape after merging runs of ``groups`` adjacent cores.

    >>> merged_shape(TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4), (2, 1, 2))
    TTMatrixShape(in_modes=(4, 7, 28), out_modes=(128, 16, 128), ranks=(1, 4, 4, 1))
    """
    return _merged_shape(shape, _check_groups(groups, shape.d))


@functools.lru_cache(maxsize=1024)  # on every forward call: building a TTMatrixShape validates it, which is slow
def _merged_shape(shape: TTMatrixShape, groups: tuple[int, ...]) -> TTMatrixShape:
    m, n, r = shape.in_modes, shape.out_modes, shape.ranks
    ins, outs, ranks, i = [], [], [1], 0
    for g in groups:
        ins.append(math.prod(m[i : i + g]))
        outs.append(math.prod(n[i : i + g]))
        i += g
        ranks.append(r[i])
    return TTMatrixShape(tuple(ins), tuple(outs), tuple(ranks))


def merge_cores(
    cores: Sequence[Any],
    groups: Sequence[int],
    *,
    permute: Permute = _numpy_like_permute,
    matmul: Callable[[Any, Any], Any] | None = None,
) -> list[Any]:
    """Merges runs of ``groups`` adjacent cores into single cores (exactly the same matrix ``W``).

    >>> import numpy as np
    >>> from tt_common.reference import tt_to_dense
    >>> shape = TTMatrixShape.create((2, 3, 2), (4, 1, 5), ranks=3)
    >>> cores = [np.random.default_rng(0).standard_normal(s) for s in shape.core_shapes]
    >>> merged = merge_cores(cores, (2, 1))
    >>> [c.shape for c in merged], bool(np.allclose(tt_to_dense(merged), tt_to_dense(cores)))
    ([(1, 6, 4, 3), (3, 2, 5, 1)], True)
    """
    if matmul is None:
        matmul = _matmul_operator
    groups = _check_groups(groups, len(cores))
    out, i = [], 0
    for g in groups:
        core = cores[i]
        for other in cores[i + 1 : i + g]:
            r0, m0, n0, r1 = core.shape
            _, m1, n1, r2 = other.shape
            prod = matmul(core.reshape(r0 * m0 * n0, r1), other.reshape(r1, m1 * n1 * r2))
            core = permute(prod.reshape(r0, m0, n0, m1, n1, r2), (0, 1, 3, 2, 4, 5))
            core = core.reshape(r0, m0 * m1, n0 * n1, r2)
        out.append(core)
        i += g
    return out


def _state_elements(shape: TTMatrixShape, batch_size: int, direction: Direction) -> list[int]:
    """Elements of the state before the first step and after each step (:func:`_step_sizes`), in order.

    >>> _state_elements(TTMatrixShape.create((2, 3), (4, 5), ranks=2), 1, "ltr")
    [6, 24, 20]
    """
    after = [outer * a * inner for _, a, _, outer, inner in _step_sizes(shape, direction)]
    return [batch_size * s for s in (shape.in_features, *after)]


def _groupings(d: int):
    for cuts in range(2 ** (d - 1)):
        groups, run = [], 1
        for k in range(d - 1):
            if cuts >> k & 1:
                groups.append(run)
                run = 1
            else:
                run += 1
        yield (*groups, run)


@functools.lru_cache(maxsize=256)
def plan_groups(
    shape: TTMatrixShape,
    batch_size: int,
    direction: Direction | None = None,
    *,
    flops_per_byte: float = 10.0,
    step_flops: float = 2e6,
    product_flops: float = 0.0,
    max_core_size: int = 2**16,
) -> tuple[tuple[int, ...], Direction]:
    """The merge (run lengths) and direction of least :func:`plan_cost` for a batch of ``batch_size``.

    ``direction`` keeps the plans that contract in that direction (the layers fix theirs with
    :func:`choose_direction`); ``None`` lets the cost model pick it too. Merged cores stay at or below
    ``max_core_size`` elements (the layer's own cores may be larger). Cached: eager frameworks call it on
    every forward pass.

    >>> shape = TTMatrixShape.create((2, 2, 7, 7, 2, 2), (8, 8, 8, 8, 8, 8), 4)
    >>> plan_groups(shape, 100), plan_groups(shape, 100, "rtl")
    (((3, 1, 2), 'ltr'), ((2, 1, 3), 'rtl'))
    """
    if direction not in (None, "ltr", "rtl"):
        raise ValueError(f"direction must be 'ltr' or 'rtl', got {direction!r}")
    # A plain loop, not min(..., key=...): torch.compile(fullgraph=True) traces this function and cannot do that.
    best: tuple[float, tuple[tuple[int, ...], Direction]] | None = None
    for plan in _plans(shape, max_core_size):
        if direction is not None and plan[1] != direction:
            continue
        cost = plan_cost(shape, batch_size, *plan, flops_per_byte=flops_per_byte, step_flops=step_flops,
                         product_flops=product_flops)
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    return best[1]


def layer_plan(
    shape: TTMatrixShape,
    batch_size: int,
    direction: Direction | None = None,
    *,
    product_flops: float = 0.0,
) -> tuple[tuple[int, ...], Direction]:
    """The plan a TT layer contracts with for a batch of ``batch_size``: its merge of cores and its direction.

    The layer's direction (``direction``, or :func:`choose_direction` when ``None``: the layers' ``"auto"``) is
    fixed first, then :func:`plan_groups` finds the merge of least cost in it. One rule for ``tt_jax``,
    ``tt_torch`` and the experiments' record of what a run contracted with; ``product_flops`` is
    each backend's own cost per small product (``tt_jax`` sets it on XLA:CPU only; ``tt_torch`` 0).

    >>> shape = TTMatrixShape.create((2, 2, 7, 7, 2, 2), (8, 8, 8, 8, 8, 8), 4)
    >>> layer_plan(shape, 100), layer_plan(shape, 0, "ltr")
    (((2, 1, 3), 'rtl'), ((3, 1, 2), 'ltr'))
    """
    direction = choose_direction(shape) if direction is None else direction
    return plan_groups(shape, max(batch_size, 1), direction, product_flops=product_flops)


def _plans(shape: TTMatrixShape, max_core_size: int) -> list[tuple[tuple[int, ...], Direction]]:
    """Every merge (run lengths) whose merged cores have at most ``max_core_size`` elements, with each direction.

    A core left unmerged may be larger: the grouping of single cores is always among them.

    >>> list(_plans(TTMatrixShape.create((2, 3), (4, 5), ranks=2), 2**16))
    [((2,), 'ltr'), ((2,), 'rtl'), ((1, 1), 'ltr'), ((1, 1), 'rtl')]
    """
    plans = []
    for groups in _groupings(shape.d):
        merged_sizes = [math.prod(s) for s in merged_shape(shape, groups).core_shapes]
        if all(g == 1 or size <= max_core_size for g, size in zip(groups, merged_sizes)):
            plans += [(groups, "ltr"), (groups, "rtl")]
    return plans


def plan_cost(
    shape: TTMatrixShape,
    batch_size: int,
    groups: Sequence[int],
    direction: Direction,
    *,
    flops_per_byte: float = 10.0,
    step_flops: float = 2e6,
    product_flops: float = 0.0,
) -> float:
    """Modelled cost, in FLOPs, of merging runs ``groups`` of adjacent cores, then contracting in ``direction``.

    Cost = FLOPs of the steps and of the merges + ``flops_per_byte`` x the float32 bytes each step reads and
    writes + ``step_flops`` per step and per merge (call overhead) + ``product_flops`` per small matrix product
    of the broadcast steps (:func:`small_products`). ``flops_per_byte`` is the machine balance (matmul FLOP/s
    over memory bytes/s: about 10 on a CPU, 15 on an H100). ``product_flops`` is 0 for libraries that hand the
    broadcast steps to one batched GEMM call (torch's ``bmm``); XLA:CPU pays per product
    (``tt_jax._xla_cpu.XLA_CPU_PRODUCT_FLOPS``, which only ``tt_jax`` on a CPU passes).

    >>> shape = TTMatrixShape.create((2, 3), (4, 5), ranks=2)
    >>> plan_cost(shape, 1, (1, 1), "ltr", step_flops=0)  # 336 FLOPs + 10 x 4 x (6 + 24 + 24 + 20) bytes
    3296.0
    """
    groups = _check_groups(groups, shape.d)
    merge_flops, i = 0, 0
    for g in groups:
        r0, m0, n0 = shape.ranks[i], 1, 1
        for k in range(i, i + g - 1):
            m0, n0 = m0 * shape.in_modes[k], n0 * shape.out_modes[k]
            r1, (m1, n1, r2) = shape.ranks[k + 1], shape.core_shapes[k + 1][1:]
            merge_flops += 2 * r0 * m0 * n0 * r1 * m1 * n1 * r2
        i += g
    merged = merged_shape(shape, groups)
    sizes = _state_elements(merged, batch_size, direction)
    traffic = 4 * sum(a + b for a, b in zip(sizes, sizes[1:]))
    flops = sum(contraction_flops(merged, batch_size, direction))
    steps = merged.d + shape.d - len(groups)
    products = small_products(merged, batch_size, direction)
    return flops + merge_flops + flops_per_byte * traffic + step_flops * steps + product_flops * products


def small_products(shape: TTMatrixShape, batch_size: int, direction: Direction) -> int:
    """Matrix products of the broadcast steps: one per ``(c, inner)`` slice of the state (:func:`_step`).

    Steps with ``outer`` or ``inner`` 1 are one plain matrix product each and are not counted.

    >>> shape = TTMatrixShape.create((2, 3, 4), (4, 5, 6), ranks=2)
    >>> [(outer, inner) for _, _, _, outer, inner in _step_sizes(shape, "ltr")]
    [(1, 12), (4, 4), (20, 1)]
    >>> small_products(shape, 10, "ltr"), small_products(shape, 1, "ltr")
    (50, 4)
    """
    return sum(batch_size * outer for _, _, _, outer, inner in _step_sizes(shape, direction)
               if inner > 1 and batch_size * outer > 1)


def tt_matmul(
    x: Any,
    cores: Sequence[Any],
    shape: TTMatrixShape,
    direction: Direction | None = None,
    *,
    permute: Permute = _numpy_like_permute,
    matmul: Callable[[Any, Any], Any] | None = None,
    groups: Sequence[int] | Literal["auto"] | None = None,
) -> Any:
    """Computes ``x @ W`` for ``x`` of shape ``(..., M)`` and returns ``(..., N)``.

    ``direction`` defaults to :func:`choose_direction`. ``matmul`` defaults to
    the ``@`` operator; pass e.g. ``functools.partial(jnp.matmul, precision=...)``.
    ``groups`` merges runs of adjacent cores first (:func:`merge_cores`);
    ``"auto"`` asks :func:`plan_groups` for the runs of least cost in
    ``direction`` (or, if it is ``None``, in either direction, and takes that
    direction); ``None`` contracts core by core. The layers pass their own
    ``plan(batch_size)``'s runs and direction.

    >>> import numpy as np
    >>> shape = TTMatrixShape.create((2, 3), (4, 5), ranks=2)
    >>> rng = np.random.default_rng(0)
    >>> cores = [rng.standard_normal(s) for s in shape.core_shapes]
    >>> x = rng.standard_normal((7, 6))
    >>> from tt_common.reference import tt_to_dense
    >>> bool(np.allclose(tt_matmul(x, cores, shape), x @ tt_to_dense(cores)))
    True
    """
    check_input_ndim(len(x.shape), shape.in_features)
    check_input_features(x.shape[-1], shape.in_features, shape.in_modes)
    if direction not in (None, "ltr", "rtl"):
        raise ValueError(f"direction must be 'ltr' or 'rtl', got {direction!r}")
    if matmul is None:
        matmul = _matmul_operator
    batch_shape = tuple(x.shape[:-1])
    batch = math.prod(batch_shape)
    if groups is not None:
        if groups == "auto":
            groups, direction = plan_groups(shape, max(batch, 1), direction)
        if len(groups) < shape.d:
            cores = merge_cores(cores, groups, permute=permute, matmul=matmul)
            shape = merged_shape(shape, groups)
    direction = choose_direction(shape) if direction is None else direction
    out = _chain(x.reshape(batch, shape.in_features), cores, shape, batch, direction, permute, matmul)
    return out.reshape(*batch_shape, shape.out_features)


def _matmul_operator(a: Any, b: Any) -> Any:
    return a @ b


def _chain(x, cores, shape: TTMatrixShape, batch: int, direction: Direction, permute: Permute, matmul) -> Any:
    """The product core by core on a state whose memory layout never changes: no transposes at all.

    Right to left, the state before core ``k`` is ``(B m_1..m_{k-1}, m_k r_k, n_{k+1}..n_d)``; left to
    right, ``(B n_1..n_{k-1}, r_{k-1} m_k, m_{k+1}..m_d)``. The two contracted indices sit together in the
    middle and :func:`_step` replaces them with ``r_{k-1} n_k`` (``n_k r_k``): read row-major, its product
    already is the next state, and after the last core it is the row-major ``(B, N)`` result.
    """
    state = x
    for k, _, _, outer, inner in _step_sizes(shape, direction):
        state = _step(_core_matrix(cores[k], direction, permute), state, batch * outer, inner, matmul)
    return state


def _core_matrix(core, direction: Direction, permute: Permute) -> Any:
    """The core ``(r_{k-1}, m_k, n_k, r_k)`` as the ``(a, c)`` matrix of its step (:func:`_step_sizes`).

    Left to right ``(n_k r_k, r_{k-1} m_k)``, right to left ``(r_{k-1} n_k, m_k r_k)``.
    """
    r0, m, n, r1 = core.shape
    if direction == "ltr":
        return permute(core, (2, 3, 0, 1)).reshape(n * r1, r0 * m)
    return permute(core, (0, 2, 1, 3)).reshape(r0 * n, m * r1)


def _step(core, state, outer: int, inner: int, matmul) -> Any:
    """``out[o, :, i] = core @ state[o, :, i]`` for the state viewed as ``(outer, contracted, inner)``.

    One plain matrix product where ``outer`` or ``inner`` is 1 (``core.T`` is read in place), otherwise a
    broadcast batched product ``(1, a, c) @ (outer, c, inner)``: the torch layer's ``matmul`` makes it one
    ``bmm`` over a stride-0 expanded view of the core, the JAX layer's one ``dot_general`` with a batch
    dimension (XLA:CPU materializes the broadcast core; where that copy would be large, ``tt_jax`` takes a
    plain dot and a transposed result instead). The state itself is never copied (except in that JAX case).
    """
    a, contracted = core.shape
    if inner == 1:
        return matmul(state.reshape(outer, contracted), core.T)  # (outer, a)
    if outer == 1:
        return matmul(core, state.reshape(contracted, inner))  # (a, inner)
    return matmul(core[None], state.reshape(outer, contracted, inner))  # (outer, a, inner)
