"""``tensorize``: a Flax NNX model with its dense layers replaced by TT layers built from their trained weights.

The mirror of :mod:`tt_torch.tensorize`; the decisions (which layers, modes, ranks, budgets) are
:mod:`tt_common.tensorize`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx import graph

from tt_common import tensorize as planner
from tt_common.tensorize import LayerPlan, TensorizeReport, _positive_int
from tt_common.transfer import path_name
from tt_jax.layer import TTLinear, linear_settings

__all__ = ["PaddedTTLinear", "tensorize"]

Path = tuple[Any, ...]


class PaddedTTLinear(nnx.Module):
    """An ``in_features -> out_features`` layer over a TT layer of larger, zero-padded sizes.

    The input is padded with zeros to ``layer.in_features`` and the output cut to ``out_features``: the layer a
    dense layer of badly factoring sizes becomes under ``tensorize(..., pad=True)``. Its only parameters are
    ``layer``'s (transfer keys ``layer.cores.K``, ``layer.bias``, as :class:`tt_torch.tensorize.PaddedTTLinear`).

    >>> padded = PaddedTTLinear(TTLinear((4, 4), (2, 2), 2, rngs=nnx.Rngs(0)), in_features=13, out_features=3)
    >>> padded(jnp.ones((5, 13))).shape
    (5, 3)
    """

    def __init__(self, layer: TTLinear, in_features: int, out_features: int) -> None:
        if not (0 < in_features <= layer.in_features and 0 < out_features <= layer.out_features):
            raise ValueError(f"in_features={in_features} and out_features={out_features} must be positive and at "
                             f"most the TT layer's {layer.in_features} and {layer.out_features}")
        self.layer, self.in_features, self.out_features = layer, in_features, out_features

    def __call__(self, inputs: jax.Array) -> jax.Array:
        if inputs.ndim < 1 or inputs.shape[-1] != self.in_features:
            raise ValueError(f"input's last dimension must be in_features = {self.in_features}, got shape "
                             f"{tuple(inputs.shape)}")
        widths = [(0, 0)] * (inputs.ndim - 1) + [(0, self.layer.in_features - self.in_features)]
        return self.layer(jnp.pad(inputs, widths))[..., : self.out_features]


def _children(node: Any) -> Iterator[tuple[Any, Any]]:
    """The children of a module or container, keyed as ``nnx.iter_graph``'s paths (``nnx.List`` by int)."""
    if isinstance(node, nnx.Module):
        items = graph.get_node_impl(node).node_dict(node).items()
        yield from ((k, v) for k, v in items if not (isinstance(k, str) and k.startswith("_")))
    elif isinstance(node, (list, tuple)):
        yield from enumerate(node)
    elif isinstance(node, dict):
        yield from node.items()


def _linear_paths(model: Any) -> dict[int, tuple[nnx.Linear, list[Path]]]:
    """Every ``nnx.Linear`` (and subclass) by id with every path to it: a shared module (or a shared block holding
    it) is reached once per parent, which ``nnx.iter_graph`` (each node once) would not show."""
    found: dict[int, tuple[nnx.Linear, list[Path]]] = {}

    def walk(node: Any, path: Path, ancestors: frozenset[int]) -> None:
        if isinstance(node, nnx.Linear):
            found.setdefault(id(node), (node, []))[1].append(path)
            return
        if id(node) in ancestors:  # a cycle: its nodes are already on this walk
            return
        for key, child in _children(node):
            if isinstance(child, (nnx.Module, list, tuple, dict)):
                walk(child, (*path, key), ancestors | {id(node)})

    walk(model, (), frozenset())
    return found


def _dense_layers(model: Any) -> dict[str, tuple[nnx.Linear, Path, planner.DenseLayer]]:
    found = {}
    for linear, paths in _linear_paths(model).values():
        name = path_name(paths[0])
        kernel = linear.kernel
        refused = "" if type(linear) is nnx.Linear else \
            f"a subclass of nnx.Linear ({type(linear).__name__}): its owner may read its kernel"
        found[name] = (linear, paths[0], planner.DenseLayer(
            name, linear.in_features, linear.out_features, linear.bias is not None, str(kernel.dtype),
            bool(jnp.issubdtype(kernel.dtype, jnp.floating)), tuple(path_name(p) for p in paths), refused))
    return found


def _kernel(linear: nnx.Linear) -> np.ndarray:
    """The ``(in, out)`` kernel in float64 on the host."""
    return np.asarray(linear.kernel[...]).astype(np.float64)


def _build(linear: nnx.Linear, plan: LayerPlan) -> tuple[nnx.Module, TTLinear]:
    """The TT layer of ``plan`` from ``linear``'s weights (by TT-SVD, the planned ranks as caps), and its TT part."""
    shape = plan.shape
    if not plan.padded:
        layer = TTLinear.from_linear(linear, shape.in_modes, shape.out_modes, max_rank=shape.ranks)
        return layer, layer
    kernel = linear.kernel[...]
    kernel = jnp.pad(kernel, ((0, shape.in_features - kernel.shape[0]), (0, shape.out_features - kernel.shape[1])))
    bias = None if linear.bias is None else jnp.pad(linear.bias[...], (0, shape.out_features - linear.out_features))
    layer = TTLinear.from_dense(kernel, shape.in_modes, shape.out_modes, max_rank=shape.ranks, bias=bias,
                                **linear_settings(linear))
    return PaddedTTLinear(layer, linear.in_features, linear.out_features), layer


def _get(node: Any, key: Any) -> Any:
    return getattr(node, key) if isinstance(node, nnx.Module) and not isinstance(node, (nnx.List, nnx.Dict)) \
        else node[key]


def _replace(root: Any, path: Path, new: Any) -> Any:
    """``root`` with the node at ``path`` replaced (the root itself: ``new``); a tuple on the way is rebuilt."""
    if not path:
        return new
    parent = root
    for key in path[:-1]:
        parent = _get(parent, key)
    key = path[-1]
    if isinstance(parent, tuple):
        items = list(parent)
        items[key] = new
        rebuilt = type(parent)._make(items) if hasattr(parent, "_make") else type(parent)(items)
        return _replace(root, path[:-1], rebuilt)
    if isinstance(parent, nnx.Module) and not isinstance(parent, (nnx.List, nnx.Dict)):
        setattr(parent, key, new)
    else:
        parent[key] = new  # nnx.List, nnx.Dict, list, dict
    return root


def _params(model: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def tensorize(
    model: nnx.Module,
    *,
    max_rank: int | None = None,
    rtol: float | None = None,
    compression: float | None = None,
    max_params: int | None = None,
    include: str | Sequence[str] | Callable[[str, nnx.Linear], bool] | None = None,
    min_size: int = 0,
    d: int | None = None,
    modes: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
    pad: bool = False,
    inplace: bool = False,
    batch_size: int = 100,
) -> tuple[nnx.Module, TensorizeReport]:
    """Replaces the model's ``nnx.Linear`` layers by :class:`tt_jax.TTLinear` layers built from their weights.

    Each selected layer becomes the TT-SVD of its kernel (its bias kept, its dtypes, precision and hooks), with
    the modes and ranks :func:`tt_common.tensorize.plan` chooses (read its module docstring for the rules):

    - ranks: ``max_rank`` (every inner rank at most), ``rtol`` (``||W - TT||_F <= rtol ||W||_F``), or a budget
      over the tensorized layers, ``max_params`` (their cores and biases) or ``compression`` (their dense
      parameters over that), split across layers by the singular values
      (:func:`tt_common.tensorize.allocate_ranks`);
    - which layers: ``include`` (a glob on the dotted module path such as ``"encoder.*"`` or ``"layers.0"``, a
      list of globs, or a predicate ``include(name, linear)``), at least ``min_size`` weights; a layer that
      cannot gain stays dense, and the report says why;
    - modes: ``modes={"name": (in_modes, out_modes)}`` per layer, otherwise chosen for ``d`` cores (default: by
      the layer's size); badly factoring sizes (a large prime) stay dense, or with ``pad=True`` are zero-padded
      (the layer becomes a :class:`PaddedTTLinear`).

    Module attributes, ``nnx.List`` / ``nnx.Sequential`` entries, ``nnx.Dict`` and plain list, tuple and dict
    entries are replaced. The input model is left untouched (an ``nnx.clone`` is changed) unless
    ``inplace=True``. Bad input (no ``nnx.Linear``, a filter that matches nothing, a budget below the smallest
    TT, a non-float kernel, a selected layer that the model holds twice) raises a ``ValueError`` before anything
    changes. Returns the new model (an ``nnx.Module`` whose cores are ``nnx.Param``, so ``nnx.Optimizer`` trains
    it as any model) and a :class:`tt_common.tensorize.TensorizeReport` (``print`` it): per layer parameters and
    FLOPs per example before and after, the relative Frobenius error of ``W`` as built, and the layer's direction
    and plan (merged cores) at ``batch_size``.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import tt_jax
    >>> rngs = nnx.Rngs(0)
    >>> model = nnx.Sequential(nnx.Linear(1024, 256, rngs=rngs), nnx.relu, nnx.Linear(256, 10, rngs=rngs))
    >>> small, report = tt_jax.tensorize(model, max_rank=8, min_size=10_000)
    >>> type(small.layers[0]).__name__, small.layers[0].ranks, type(small.layers[2]).__name__
    ('TTLinear', (1, 8, 8, 1), 'Linear')
    >>> report["layers.0"].params_before, report["layers.0"].params_after, report["layers.2"].note
    (262400, 5376, 'below min_size=10,000 weights')
    >>> small(jnp.ones((2, 1024))).shape, type(model.layers[0]).__name__
    ((2, 10), 'Linear')
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be an nnx.Module, got {type(model).__name__}")
    _positive_int(batch_size, "batch_size")
    found = _dense_layers(model)
    if callable(include) and not isinstance(include, str):
        predicate = include
        include = lambda name: predicate(name, found[name][0])  # noqa: E731
    plans = planner.plan([layer for *_, layer in found.values()], lambda name: _kernel(found[name][0]),
                         max_rank=max_rank, rtol=rtol, compression=compression, max_params=max_params,
                         include=include, min_size=min_size, d=d, modes=modes, pad=pad)
    target = model if inplace else nnx.clone(model)
    targets = _dense_layers(target)
    rows, built = [], {}
    for plan in plans:  # every layer built before any is swapped in
        if plan.shape is None:
            rows.append(planner.dense_row(plan))
            continue
        linear, path, _ = targets[plan.layer.name]
        new, tt = _build(linear, plan)
        error = planner.relative_error(_kernel(linear), [np.asarray(c[...]) for c in tt.cores])
        rows.append(planner.tt_row(plan, tt.shape, error=error, direction=tt.direction,
                                   groups=tt.plan(batch_size)[0]))
        built[path] = new
    other = _params(model) - sum(p.layer.params for p in plans)
    for path, new in built.items():
        target = _replace(target, path, new)
    return target, TensorizeReport(tuple(rows), other_params=other, batch_size=batch_size)
