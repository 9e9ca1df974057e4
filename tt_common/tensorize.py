"""Planning the tensorization of a model's dense layers: which layers, which modes, which ranks (NumPy only).

``tt_jax.tensorize`` and ``tt_torch.tensorize`` walk their module trees, describe
each dense layer as a :class:`DenseLayer` and call :func:`plan`; they then build
each planned ``TTLinear`` by TT-SVD (``from_linear`` with the planned ranks as
caps), swap it in, and describe the result with :class:`TensorizeReport`. All
the decisions are taken here, once, so both frameworks take the same ones.

Which layers: every dense layer, or those ``include`` selects (a glob on the
dotted name, a list of globs, or a predicate), at least ``min_size`` weights.
A layer that cannot gain (its TT would hold no fewer parameters than the
dense layer) stays dense, and the report says why.

Modes: given per layer (``modes={"name": (in_modes, out_modes)}``), or chosen
by :func:`tt_common.suggest_shape` for ``d`` cores (the most balanced
factorizations, in the order that needs the fewest FLOPs: :func:`choose_modes`);
``d`` given, or :func:`auto_d`. A size whose most balanced factorization has a
mode above twice the balanced one (:func:`factors_well`; a large prime) makes
the automatic ``d`` try fewer cores; if none works (or ``d`` was given) the
layer stays dense, or with ``pad=True`` its sizes are zero-padded to the next
sizes that factor well (:func:`padded_size`).

Ranks, one of:

- ``max_rank``: every inner rank capped at it;
- ``rtol``: the ranks of the float64 TT-SVD with that relative tolerance
  (:func:`tt_common.reference.tt_svd`), so ``||W - TT||_F <= rtol ||W||_F``;
- a budget, ``max_params`` (cores and biases of the tensorized layers
  together) or ``compression`` (their dense parameters over that), split by
  :func:`allocate_ranks` (``max_rank`` then caps every rank).

The planned ranks are those the TT-SVD will keep (:func:`svd_ranks`), so the
frameworks' layers have exactly them.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tt_common.factorize import factorize, suggest_shape
from tt_common.reference import tt_svd, tt_to_dense
from tt_common.report import _fmt_modes, tt_layer_report
from tt_common.shapes import TTMatrixShape, max_ranks, rank_caps, validate_modes

__all__ = [
    "CORE_SIZE",
    "NOMINAL_RANK",
    "DenseLayer",
    "LayerPlan",
    "TensorizeReport",
    "TensorizedLayer",
    "allocate_ranks",
    "auto_d",
    "check_arguments",
    "choose_modes",
    "default_modes",
    "dense_row",
    "factors_well",
    "padded_size",
    "plan",
    "relative_error",
    "svd_ranks",
    "tt_row",
    "unfolding_spectra",
]

# Auto d aims at cores of about CORE_SIZE = m_k n_k entries per pair of ranks (modes near 8 x 8, the size of the
# thesis's and Novikov et al.'s layers).
CORE_SIZE = 64
# The rank at which modes are chosen (suggest_shape is FLOP-aware at a given rank) when the ranks are not fixed
# before the modes (rtol, a budget).
NOMINAL_RANK = 8
# suggest_shape's candidates: the most balanced factorization of each size only, in ascending or descending order,
# whichever pairing needs the fewest FLOPs. Among more candidates the fewest FLOPs often come with modes of 1 (a
# 1024 -> 256 layer of 3 cores: (1, 16, 64) -> (64, 4, 1)), which waste cores.
CANDIDATES = 1
# A size factors badly into d modes when a mode of its most balanced factorization exceeds BALANCE n^(1/d).
BALANCE = 2.0
# Squared singular values below this fraction of ||W||_F^2 (singular values below 1e-12 ||W||_F, float64 rounding
# of an exactly low-rank matrix) remove no error: the budget is not spent on them.
NEGLIGIBLE = 1e-24

Include = str | Sequence[str] | Callable[[str], bool] | None


@dataclass(frozen=True)
class DenseLayer:
    """A dense layer of a model as the planner sees it (the frameworks describe theirs so).

    ``paths``: every path under which the model holds the layer (more than one: shared); ``refused``: why the
    framework cannot replace it (empty: it can).
    """

    name: str
    in_features: int
    out_features: int
    use_bias: bool
    dtype: str
    floating: bool = True
    paths: tuple[str, ...] = ()
    refused: str = ""

    @property
    def params(self) -> int:
        """Weights and bias."""
        return self.in_features * self.out_features + (self.out_features if self.use_bias else 0)


@dataclass(frozen=True)
class LayerPlan:
    """What becomes of one dense layer: a TT of ``shape`` (modes and the ranks the TT-SVD keeps), or ``None``
    (stays dense). ``note`` says how the ranks were chosen, or why the layer stays dense."""

    layer: DenseLayer
    shape: TTMatrixShape | None
    note: str

    @property
    def padded(self) -> bool:
        """Whether the TT holds a zero-padded kernel (sizes larger than the layer's)."""
        return self.shape is not None and (self.shape.in_features, self.shape.out_features) != (
            self.layer.in_features, self.layer.out_features)

    @property
    def tt_params(self) -> int:
        """Cores and bias (the padded bias, where padded) of the planned TT."""
        assert self.shape is not None
        return self.shape.num_params + (self.shape.out_features if self.layer.use_bias else 0)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def auto_d(in_features: int, out_features: int) -> int:
    """The number of cores for cores of about :data:`CORE_SIZE` entries: ``round(log(M N) / log 64)``, >= 2.

    >>> auto_d(1024, 1024), auto_d(784, 256), auto_d(25088, 4096), auto_d(16, 16)
    (3, 3, 4, 2)
    """
    size = _positive_int(in_features, "in_features") * _positive_int(out_features, "out_features")
    return max(2, round(math.log(size) / math.log(CORE_SIZE)))


def factors_well(n: int, d: int) -> bool:
    """Whether ``n``'s most balanced factorization into ``d`` modes has every mode within :data:`BALANCE` times
    the balanced mode ``n^(1/d)`` (a large prime factor does not).

    >>> factors_well(784, 3), factors_well(1021, 3), factors_well(1024, 3), factors_well(10, 2)
    (True, False, True, True)
    """
    return max(factorize(n, d)) <= BALANCE * n ** (1 / d) * (1 + 1e-12)


def padded_size(n: int, d: int) -> int:
    """The smallest size ``>= n`` that :func:`factors_well` into ``d`` modes.

    >>> padded_size(1021, 3), padded_size(1024, 3)
    (1024, 1024)
    """
    while not factors_well(n, d):
        n += 1
    return n


def choose_modes(
    in_features: int, out_features: int, *, d: int | None = None, rank: int | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Modes for an ``in_features -> out_features`` layer: :func:`tt_common.suggest_shape` at ``rank``
    (default :data:`NOMINAL_RANK`) for ``d`` cores (default :func:`auto_d`). What ``TTLinear.from_linear`` uses
    when no modes are given.

    >>> choose_modes(1024, 256, d=4, rank=4), choose_modes(784, 256)
    (((4, 4, 8, 8), (4, 4, 4, 4)), ((7, 8, 14), (8, 8, 4)))
    """
    d = auto_d(in_features, out_features) if d is None else _positive_int(d, "d")
    rank = NOMINAL_RANK if rank is None else _positive_int(rank, "rank")
    shape = suggest_shape(in_features, out_features, d, rank, candidates=CANDIDATES)
    return shape.in_modes, shape.out_modes


def default_modes(
    in_features: int,
    out_features: int,
    in_modes: Sequence[int] | None,
    out_modes: Sequence[int] | None,
    d: int | None,
    max_rank: object,
) -> tuple[Sequence[int], Sequence[int]]:
    """The modes ``TTLinear.from_linear`` uses (both frameworks): those given, or :func:`choose_modes`'s (at rank
    ``max_rank`` when it is an int) when neither is; ``d`` only goes with chosen modes.

    >>> default_modes(1024, 256, None, None, 4, 4)
    ((4, 4, 8, 8), (4, 4, 4, 4))
    """
    if (in_modes is None) != (out_modes is None):
        raise ValueError("give both in_modes and out_modes, or neither (then they are chosen)")
    if in_modes is not None:
        if d is not None:
            raise ValueError("d chooses the number of cores of chosen modes: give modes or d, not both")
        return in_modes, out_modes
    rank = max_rank if isinstance(max_rank, numbers.Integral) and not isinstance(max_rank, bool) else None
    return choose_modes(in_features, out_features, d=d, rank=rank)


def svd_ranks(caps: Sequence[int], in_modes: Sequence[int], out_modes: Sequence[int]) -> tuple[int, ...]:
    """The ranks the TT-SVD keeps under ``caps`` (one per position ``r_0..r_d``): step ``k`` factors an
    ``(r_{k-1} m_k n_k) x (prod_{j>k} m_j n_j)`` matrix, so ``r_k = min(cap_k, r_{k-1} m_k n_k, prod_{j>k} m_j n_j)``.

    >>> svd_ranks((1, 100, 100, 1), (2, 2, 2), (1, 1, 1))
    (1, 2, 2, 1)
    """
    limits = max_ranks(in_modes, out_modes)
    ranks = [1]
    for k in range(1, len(limits) - 1):
        ranks.append(min(caps[k], limits[k], ranks[-1] * in_modes[k - 1] * out_modes[k - 1]))
    return (*ranks, 1)


def _unfold(kernel: np.ndarray, in_modes: Sequence[int], out_modes: Sequence[int]) -> np.ndarray:
    """The kernel as the tensor ``(m_1 n_1, ..., m_d n_d)`` whose unfoldings the TT-SVD factors."""
    d = len(in_modes)
    tensor = kernel.reshape(tuple(in_modes) + tuple(out_modes))
    tensor = tensor.transpose(tuple(a for k in range(d) for a in (k, d + k)))
    return tensor.reshape([m * n for m, n in zip(in_modes, out_modes)])


def unfolding_spectra(kernel: np.ndarray, in_modes: Sequence[int], out_modes: Sequence[int]) -> list[np.ndarray]:
    """The singular values of the kernel's unfoldings ``k = 1..d-1`` (rows: cores ``1..k``), in float64.

    Truncating the TT-SVD to rank ``r_k`` at position ``k`` costs at least ``sum_{i > r_k} s_{k,i}^2`` (no TT of
    that rank does better) and all truncations together at most ``sum_k sum_{i > r_k} s_{k,i}^2`` (Oseledets
    2011, Thm 2.2; each step's matrix is a projection of the unfolding, whose singular values are smaller).

    >>> s = unfolding_spectra(np.kron(np.eye(2), np.ones((2, 2))), (2, 2), (2, 2))  # a Kronecker product: TT rank 1
    >>> len(s), s[0].shape, bool(s[0][1] < 1e-12)
    (1, (4,), True)
    """
    in_modes, out_modes = validate_modes(in_modes, out_modes)
    tensor = _unfold(np.asarray(kernel, dtype=np.float64), in_modes, out_modes)
    sizes = tensor.shape
    return [np.linalg.svd(tensor.reshape(math.prod(sizes[:k]), -1), compute_uv=False) for k in range(1, len(sizes))]


def _relative_gains(spectra: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Squared singular values over ``||W||_F^2`` (the sum of any unfolding's squared singular values)."""
    squares = [np.square(np.asarray(s, dtype=np.float64)) for s in spectra]
    norm = float(squares[0].sum()) if squares else 0.0
    return [q / norm if norm > 0 else np.zeros_like(q) for q in squares]


def allocate_ranks(
    shapes: Sequence[TTMatrixShape],
    spectra: Sequence[Sequence[np.ndarray]],
    max_params: int,
    *,
    extra_params: Sequence[int] | None = None,
    limits: Sequence[int] | None = None,
    max_rank: int | None = None,
) -> list[tuple[int, ...]]:
    """Splits a parameter budget across layers: the ranks of each, greedily where the singular values say
    parameters remove the most error.

    The rule. Each layer starts at rank 1 everywhere. The error of layer ``l`` is modelled by the TT-SVD bound
    relative to its norm, ``e_l = sum_k sum_{i > r_k} s_{k,i}^2 / ||W_l||_F^2`` (:func:`unfolding_spectra`), so
    that layers of different scales compare. A move raises one rank ``r_k`` of one layer by 1: it removes
    ``s_{k, r_k + 1}^2 / ||W_l||_F^2`` of error and adds ``m_k n_k r_{k-1} + m_{k+1} n_{k+1} r_{k+1}`` parameters.
    Repeatedly, the move with the most error removed per parameter added is taken, among those that keep the
    total within ``max_params``, keep the layer below its dense size (``limits``), stay within ``max_rank`` and
    the ranks the TT-SVD can keep (:func:`svd_ranks`), and remove any error (above :data:`NEGLIGIBLE`); it stops
    when none is left. The result minimises ``sum_l e_l`` as a greedy knapsack does: exactly when every layer's
    gains per parameter decrease, near it otherwise.

    ``shapes`` give the modes (their ranks are ignored); ``extra_params`` (biases) and ``limits`` (the dense
    parameters each layer must stay below) count per layer. Raises a ``ValueError`` if ``max_params`` is below
    the rank-1 total.

    >>> shape = TTMatrixShape.create((4, 4), (4, 4), 1)  # 32 parameters at rank 1, 32 more per rank
    >>> rank_2, flat = [np.array([3.0, 2.0, 0.0, 0.0])], [np.array([1.0, 1.0, 1.0, 1.0])]
    >>> allocate_ranks([shape, shape], [rank_2, flat], 160)  # rank 2 is exact for the first: the rest to the other
    [(1, 2, 1), (1, 3, 1)]
    """
    extra = list(extra_params) if extra_params is not None else [0] * len(shapes)
    limit = list(limits) if limits is not None else [math.inf] * len(shapes)
    ranks = [[1] * (s.d + 1) for s in shapes]
    gains = [_relative_gains(layer_spectra) for layer_spectra in spectra]
    sizes = [[m * n for m, n in zip(s.in_modes, s.out_modes)] for s in shapes]
    caps = [rank_caps(max_rank, s.in_modes, s.out_modes) for s in shapes]

    def params(l: int) -> int:
        r, z = ranks[l], sizes[l]
        return sum(r[k] * z[k] * r[k + 1] for k in range(len(z))) + extra[l]

    used = [params(l) for l in range(len(shapes))]
    total = sum(used)
    if total > max_params:
        raise ValueError(f"max_params={max_params} is below the smallest TT of these layers: {total} parameters "
                         "(every rank 1)")
    while True:
        best, best_ratio = None, 0.0
        for l, shape in enumerate(shapes):
            r, z = ranks[l], sizes[l]
            for k in range(1, shape.d):
                if r[k] >= min(caps[l][k], r[k - 1] * z[k - 1], len(gains[l][k - 1])):
                    continue
                gain = gains[l][k - 1][r[k]]
                cost = z[k - 1] * r[k - 1] + z[k] * r[k + 1]
                if gain <= NEGLIGIBLE or total + cost > max_params or used[l] + cost >= limit[l]:
                    continue
                if gain / cost > best_ratio:
                    best, best_ratio = (l, k, cost), gain / cost
        if best is None:
            return [tuple(r) for r in ranks]
        l, k, cost = best
        ranks[l][k] += 1
        used[l] += cost
        total += cost


def check_arguments(max_rank=None, rtol=None, compression=None, max_params=None, min_size=0, d=None) -> None:
    """Every keyword of :func:`plan` (and of the frameworks' ``tensorize``) checked before any work: a ``ValueError``
    names the argument.

    >>> check_arguments(compression=50, max_params=1000)
    Traceback (most recent call last):
    ...
    ValueError: give compression or max_params, not both (one budget)
    """
    if max_rank is not None:
        _positive_int(max_rank, "max_rank")
    if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, numbers.Real)
                             or not 0.0 <= rtol < math.inf):
        raise ValueError(f"rtol must be a non-negative finite number, got {rtol!r}")
    if compression is not None and (isinstance(compression, bool) or not isinstance(compression, numbers.Real)
                                    or not 1.0 <= compression < math.inf):
        raise ValueError(f"compression must be a finite number >= 1 (dense parameters over TT parameters), "
                         f"got {compression!r}")
    if max_params is not None:
        _positive_int(max_params, "max_params")
    if compression is not None and max_params is not None:
        raise ValueError("give compression or max_params, not both (one budget)")
    if rtol is not None and (compression is not None or max_params is not None):
        raise ValueError("rtol and a budget (compression or max_params) both choose the ranks: give one")
    if max_rank is None and rtol is None and compression is None and max_params is None:
        raise ValueError("give max_rank, rtol, compression or max_params: without a truncation the TT-SVD is "
                         "exact, and an exact TT holds more parameters than the dense layer")
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 0:
        raise ValueError(f"min_size must be a non-negative integer (weights of a layer), got {min_size!r}")
    if d is not None:
        _positive_int(d, "d")


def _selector(include: Include) -> Callable[[str], bool]:
    if include is None:
        return lambda name: True
    if isinstance(include, str):
        return lambda name: fnmatch.fnmatchcase(name, include)
    if callable(include):
        return lambda name: bool(include(name))
    if isinstance(include, Sequence) and all(isinstance(p, str) for p in include):
        patterns = list(include)
        return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)
    raise ValueError(f"include must be None, a glob pattern, a list of them or a predicate, got {include!r}")


def _display(name: str) -> str:
    return name or "model"


def _check_layers(layers: Sequence[DenseLayer], selected: Sequence[bool], include: Include) -> None:
    if not layers:
        raise ValueError("model has no dense layer to tensorize")
    if not any(selected):
        raise ValueError(f"include={include!r} matches no dense layer (the dense layers: "
                         f"{[_display(l.name) for l in layers]})")
    for layer, chosen in zip(layers, selected):
        if not chosen:
            continue
        if len(layer.paths) > 1:
            raise ValueError(f"dense layer {_display(layer.name)!r} is shared: the model holds it at "
                             f"{list(layer.paths)}; tensorizing it would unshare it (exclude it with include, or "
                             "share a TT layer yourself)")
        if not layer.floating:
            raise ValueError(f"dense layer {_display(layer.name)!r} has {layer.dtype} weights; a TT-SVD needs "
                             "floating-point weights (exclude it with include, or cast it)")


def _given_modes(modes: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None, layers: Sequence[DenseLayer],
                 selected: Sequence[bool], pad: bool) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    if modes is None:
        return {}
    if not isinstance(modes, Mapping):
        raise ValueError(f"modes must map layer names to (in_modes, out_modes), got {modes!r}")
    by_name = {l.name: (l, chosen) for l, chosen in zip(layers, selected)}
    out = {}
    for name, pair in modes.items():
        if name not in by_name:
            raise ValueError(f"modes names {name!r}, which is no dense layer of the model "
                             f"(the dense layers: {list(by_name)})")
        layer, chosen = by_name[name]
        if not chosen:
            raise ValueError(f"modes names {name!r}, which include does not select")
        try:
            in_modes, out_modes = pair
        except (TypeError, ValueError):
            raise ValueError(f"modes[{name!r}] must be a pair (in_modes, out_modes), got {pair!r}") from None
        in_modes, out_modes = validate_modes(in_modes, out_modes)
        sizes, want = (math.prod(in_modes), math.prod(out_modes)), (layer.in_features, layer.out_features)
        if sizes != want and not (pad and sizes[0] >= want[0] and sizes[1] >= want[1]):
            raise ValueError(f"modes[{name!r}] = ({in_modes}, {out_modes}) multiply to {sizes[0]} -> {sizes[1]}, "
                             f"but the layer is {want[0]} -> {want[1]} (larger modes pad, with pad=True)")
        out[name] = (in_modes, out_modes)
    return out


def _auto_shape(layer: DenseLayer, d: int | None, pad: bool, rank: int) -> tuple[TTMatrixShape | None, str]:
    """Modes for ``layer`` (ranks ``rank``, to be replaced), or ``None`` and why not."""
    m, n = layer.in_features, layer.out_features
    tries = [d] if d is not None else list(range(auto_d(m, n), 1, -1))
    for k in tries:
        if factors_well(m, k) and factors_well(n, k):
            return TTMatrixShape.create(*choose_modes(m, n, d=k, rank=rank), rank), ""
    k = tries[0]
    bad = [f"{what} {size} (most balanced: {'x'.join(map(str, factorize(size, k)))})"
           for what, size in (("in_features", m), ("out_features", n)) if not factors_well(size, k)]
    if not pad:
        cores = f"d={k}" if d is not None else f"any d in 2..{k}"
        return None, f"factors badly into {cores}: {', '.join(bad)}; pad=True pads it"
    return TTMatrixShape.create(*choose_modes(padded_size(m, k), padded_size(n, k), d=k, rank=rank), rank), ""


def _with_ranks(shape: TTMatrixShape, caps: Sequence[int]) -> TTMatrixShape:
    return TTMatrixShape.create(shape.in_modes, shape.out_modes, svd_ranks(caps, shape.in_modes, shape.out_modes))


def _padded_kernel(kernel: np.ndarray, shape: TTMatrixShape) -> np.ndarray:
    out = np.zeros((shape.in_features, shape.out_features))
    out[: kernel.shape[0], : kernel.shape[1]] = kernel
    return out


def _cannot_gain(plan: LayerPlan) -> LayerPlan:
    """The plan, or the layer kept dense where its TT holds no fewer parameters."""
    if plan.shape is None or plan.tt_params < plan.layer.params:
        return plan
    ranks = ",".join(map(str, plan.shape.ranks))
    return LayerPlan(plan.layer, None, f"cannot gain: a TT of ranks {ranks} holds {plan.tt_params:,} parameters, "
                                       f"the dense layer {plan.layer.params:,}")


def plan(
    layers: Sequence[DenseLayer],
    kernel: Callable[[str], np.ndarray],
    *,
    max_rank: int | None = None,
    rtol: float | None = None,
    compression: float | None = None,
    max_params: int | None = None,
    include: Include = None,
    min_size: int = 0,
    d: int | None = None,
    modes: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
    pad: bool = False,
) -> list[LayerPlan]:
    """What to do with each of ``layers`` (module docstring); ``kernel(name)`` gives a layer's ``(in, out)``
    kernel as a NumPy array, read only for ``rtol`` and budgets (their ranks depend on the values).

    Every argument and layer is checked first (a ``ValueError`` names the argument or the layer); a plan that
    tensorizes nothing is valid and warns.

    >>> layers = [DenseLayer("fc1", 1024, 256, True, "float32"), DenseLayer("head", 256, 10, True, "float32")]
    >>> for p in plan(layers, kernel=None, max_rank=4):
    ...     print(p.layer.name, p.shape and p.shape.in_modes, p.shape and p.shape.ranks, p.note[:28])
    fc1 (8, 8, 16) (1, 4, 4, 1) max_rank=4
    head (16, 16) (1, 4, 1) max_rank=4
    """
    check_arguments(max_rank, rtol, compression, max_params, min_size, d)
    chosen = _selector(include)
    selected = [chosen(l.name) for l in layers]
    _check_layers(layers, selected, include)
    given = _given_modes(modes, layers, selected, pad)
    rank = NOMINAL_RANK if max_rank is None else max_rank
    plans = []
    for layer, picked in zip(layers, selected):
        if not picked:
            plans.append(LayerPlan(layer, None, "not selected by include"))
        elif layer.refused:
            plans.append(LayerPlan(layer, None, layer.refused))
        elif layer.in_features * layer.out_features < min_size:
            plans.append(LayerPlan(layer, None, f"below min_size={min_size:,} weights"))
        elif layer.name in given:
            plans.append(LayerPlan(layer, TTMatrixShape.create(*given[layer.name], rank), "modes given"))
        else:
            plans.append(LayerPlan(layer, *_auto_shape(layer, d, pad, rank)))
    if compression is not None or max_params is not None:
        plans = _budget(plans, kernel, max_rank, compression, max_params)
    else:
        plans = [_per_layer(p, kernel, max_rank, rtol) if p.shape is not None else p for p in plans]
    if all(p.shape is None for p in plans):
        warnings.warn("tensorize: no dense layer is replaced (the report says why for each)", stacklevel=3)
    return plans


def _padded_note(plan: LayerPlan, note: str) -> str:
    if not plan.padded:
        return note
    s = plan.shape
    return f"{note}; zero-padded to {s.in_features} -> {s.out_features}"


def _per_layer(plan: LayerPlan, kernel: Callable[[str], np.ndarray], max_rank: int | None,
               rtol: float | None) -> LayerPlan:
    shape = plan.shape
    caps = rank_caps(max_rank, shape.in_modes, shape.out_modes)
    note = f"max_rank={max_rank}"
    if rtol is not None:
        # The float64 TT-SVD's ranks, which the frameworks then keep as caps: same ranks in both, whatever their
        # dtype, and the rtol guarantee of the float64 algorithm.
        w = _padded_kernel(np.asarray(kernel(plan.layer.name), dtype=np.float64), shape)
        caps = tt_svd(w, shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol).ranks
        note = f"rtol={rtol}" + ("" if max_rank is None else f", max_rank={max_rank}")
    found = LayerPlan(plan.layer, _with_ranks(shape, caps), "")
    return _cannot_gain(LayerPlan(plan.layer, found.shape, _padded_note(found, note)))


def _budget(plans: list[LayerPlan], kernel: Callable[[str], np.ndarray], max_rank: int | None,
            compression: float | None, max_params: int | None) -> list[LayerPlan]:
    plans = [_cannot_gain(LayerPlan(p.layer, _with_ranks(p.shape, [1] * (p.shape.d + 1)), p.note))
             if p.shape is not None else p for p in plans]
    todo = [i for i, p in enumerate(plans) if p.shape is not None]
    if not todo:
        return plans
    what = "max_params"
    if max_params is None:
        what = "compression"
        max_params = math.floor(sum(plans[i].layer.params for i in todo) / compression)
    smallest = sum(plans[i].tt_params for i in todo)
    if max_params < smallest:
        given = f"compression={compression} (max_params={max_params:,})" if what == "compression" else \
            f"max_params={max_params:,}"
        raise ValueError(f"{given} is below the smallest TT of the layers to tensorize: {smallest:,} parameters "
                         f"(every rank 1, biases included)")
    shapes = [plans[i].shape for i in todo]
    spectra = [unfolding_spectra(_padded_kernel(np.asarray(kernel(plans[i].layer.name), dtype=np.float64), s),
                                 s.in_modes, s.out_modes) for i, s in zip(todo, shapes)]
    biases = [s.out_features if plans[i].layer.use_bias else 0 for i, s in zip(todo, shapes)]
    ranks = allocate_ranks(shapes, spectra, max_params, extra_params=biases, max_rank=max_rank,
                           limits=[plans[i].layer.params for i in todo])
    note = f"budget {what}=" + (f"{compression}" if what == "compression" else f"{max_params:,}")
    for i, r in zip(todo, ranks):
        found = LayerPlan(plans[i].layer, _with_ranks(plans[i].shape, r), "")
        plans[i] = LayerPlan(found.layer, found.shape, _padded_note(found, note))
    return plans


def relative_error(kernel: np.ndarray, cores: Sequence[np.ndarray]) -> float:
    """``||W - TT||_F / ||W||_F`` in float64 for an ``(in, out)`` kernel ``W`` (0 when both vanish); a padded
    TT is compared on ``W``'s block.

    >>> relative_error(np.ones((4, 9)), [np.ones((1, 2, 3, 1)), np.ones((1, 2, 3, 1))])
    0.0
    """
    w = np.asarray(kernel, dtype=np.float64)
    approx = tt_to_dense([np.asarray(c, dtype=np.float64) for c in cores])[: w.shape[0], : w.shape[1]]
    norm = np.linalg.norm(w)
    error = np.linalg.norm(w - approx)
    return float(error / norm) if norm > 0 else float(error > 0) * math.inf


@dataclass(frozen=True)
class TensorizedLayer:
    """One row of a :class:`TensorizeReport`: a dense layer before, and what it became."""

    name: str
    status: str  # "tt" or "dense"
    note: str  # how the ranks were chosen, or why the layer stayed dense
    in_features: int
    out_features: int
    in_modes: tuple[int, ...] | None
    out_modes: tuple[int, ...] | None
    ranks: tuple[int, ...] | None
    params_before: int  # weights + bias
    params_after: int
    flops_before: int  # per example (batch size 1)
    flops_after: int
    error: float  # ||W - TT||_F / ||W||_F, measured (0 for a layer left dense)
    direction: str | None = None
    groups: tuple[int, ...] | None = None  # the runs of merged cores of the layer's plan

    @property
    def ratio(self) -> float:
        """``params_before / params_after``."""
        return self.params_before / self.params_after


def dense_row(plan: LayerPlan) -> TensorizedLayer:
    """The row of a layer left dense."""
    layer = plan.layer
    flops = 2 * layer.in_features * layer.out_features
    return TensorizedLayer(layer.name, "dense", plan.note, layer.in_features, layer.out_features, None, None, None,
                           layer.params, layer.params, flops, flops, 0.0)


def tt_row(plan: LayerPlan, shape: TTMatrixShape, *, error: float, direction: str,
           groups: tuple[int, ...]) -> TensorizedLayer:
    """The row of a layer replaced by a TT of ``shape`` (the built layer's), with its measured ``error``."""
    layer = plan.layer
    tt = tt_layer_report(layer.name, shape, layer.use_bias)
    return TensorizedLayer(layer.name, "tt", plan.note, layer.in_features, layer.out_features, shape.in_modes,
                           shape.out_modes, shape.ranks, layer.params, tt.params,
                           2 * layer.in_features * layer.out_features, tt.flops, error, direction, tuple(groups))


@dataclass(frozen=True)
class TensorizeReport:
    """What ``tensorize`` did, per dense layer and in total; ``str(report)`` is a markdown table.

    ``other_params`` counts the model's parameters outside its dense layers (batch norm, TT layers it had
    already); they enter both totals. ``batch_size`` is the batch of the plans shown.

    >>> row = dense_row(LayerPlan(DenseLayer("head", 4, 2, True, "float32"), None, "below min_size=100 weights"))
    >>> print(TensorizeReport((row,), other_params=0, batch_size=100))
    | layer | status | in -> out | in modes | out modes | ranks | params | ratio | rel. error of W | FLOPs/example | direction, plan (batch 100) | note |
    |---|---|---|---|---|---|---|---|---|---|---|---|
    | head | dense | 4 -> 2 | - | - | - | 10 -> 10 | 1.0 | - | 16 -> 16 | - | below min_size=100 weights |
    | total | 0 of 1 layers | | | | | 10 -> 10 | 1.0 | | 16 -> 16 | | |
    """

    layers: tuple[TensorizedLayer, ...]
    other_params: int
    batch_size: int

    def __getitem__(self, name: str) -> TensorizedLayer:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def tensorized(self) -> list[str]:
        """The names of the layers replaced by TT layers."""
        return [r.name for r in self.layers if r.status == "tt"]

    @property
    def params_before(self) -> int:
        return sum(r.params_before for r in self.layers) + self.other_params

    @property
    def params_after(self) -> int:
        return sum(r.params_after for r in self.layers) + self.other_params

    @property
    def ratio(self) -> float:
        return self.params_before / max(self.params_after, 1)

    @property
    def flops_before(self) -> int:
        return sum(r.flops_before for r in self.layers)

    @property
    def flops_after(self) -> int:
        return sum(r.flops_after for r in self.layers)

    def __str__(self) -> str:
        lines = [
            "| layer | status | in -> out | in modes | out modes | ranks | params | ratio | rel. error of W | "
            f"FLOPs/example | direction, plan (batch {self.batch_size}) | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.layers:
            ranks = "-" if r.ranks is None else ",".join(map(str, r.ranks))
            error = "-" if r.status == "dense" else f"{r.error:.3g}"
            plan = "-" if r.direction is None else f"{r.direction}, {'+'.join(map(str, r.groups))}"
            lines.append(
                f"| {_display(r.name)} | {r.status} | {r.in_features} -> {r.out_features} | {_fmt_modes(r.in_modes)} "
                f"| {_fmt_modes(r.out_modes)} | {ranks} | {r.params_before:,} -> {r.params_after:,} | {r.ratio:.1f} "
                f"| {error} | {r.flops_before:,} -> {r.flops_after:,} | {plan} | {r.note} |")
        lines.append(
            f"| total | {len(self.tensorized)} of {len(self.layers)} layers | | | | | {self.params_before:,} -> "
            f"{self.params_after:,} | {self.ratio:.1f} | | {self.flops_before:,} -> {self.flops_after:,} | | |")
        return "\n".join(lines)
