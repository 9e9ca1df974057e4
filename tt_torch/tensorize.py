"""``tensorize``: a PyTorch model with its dense layers replaced by TT layers built from their trained weights.

The mirror of :mod:`tt_jax.tensorize`; the decisions (which layers, modes, ranks, budgets) are
:mod:`tt_common.tensorize`'s.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from tt_common import tensorize as planner
from tt_common.tensorize import LayerPlan, TensorizeReport, _positive_int
from tt_torch.layer import TTLinear

__all__ = ["PaddedTTLinear", "tensorize"]


class PaddedTTLinear(nn.Module):
    """An ``in_features -> out_features`` layer over a TT layer of larger, zero-padded sizes.

    The input is padded with zeros to ``layer.in_features`` and the output cut to ``out_features``: the layer a
    dense layer of badly factoring sizes becomes under ``tensorize(..., pad=True)``. Its only parameters are
    ``layer``'s (``state_dict`` keys ``layer.cores.K``, ``layer.bias``, as :class:`tt_jax.tensorize.PaddedTTLinear`).

    >>> padded = PaddedTTLinear(TTLinear((4, 4), (2, 2), 2), in_features=13, out_features=3)
    >>> padded(torch.ones(5, 13)).shape
    torch.Size([5, 3])
    """

    def __init__(self, layer: TTLinear, in_features: int, out_features: int) -> None:
        super().__init__()
        if not (0 < in_features <= layer.in_features and 0 < out_features <= layer.out_features):
            raise ValueError(f"in_features={in_features} and out_features={out_features} must be positive and at "
                             f"most the TT layer's {layer.in_features} and {layer.out_features}")
        self.layer, self.in_features, self.out_features = layer, in_features, out_features

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() < 1 or input.shape[-1] != self.in_features:
            raise ValueError(f"input's last dimension must be in_features = {self.in_features}, got shape "
                             f"{tuple(input.shape)}")
        padded = nn.functional.pad(input, (0, self.layer.in_features - self.in_features))
        return self.layer(padded)[..., : self.out_features]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _dense_layers(model: nn.Module) -> dict[str, tuple[nn.Linear, planner.DenseLayer]]:
    """Every ``nn.Linear`` (and subclass) of ``model`` by its first path, described for the planner."""
    paths: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):  # shared modules under every path
        if isinstance(module, nn.Linear):
            paths.setdefault(id(module), []).append(name)
            modules[id(module)] = module
    found = {}
    for key, names in paths.items():
        linear = modules[key]
        refused = ""
        if type(linear) is not nn.Linear:  # e.g. MultiheadAttention's out_proj, whose parent reads its weight
            refused = f"a subclass of nn.Linear ({type(linear).__name__}): its owner may read its weight"
        elif isinstance(linear.weight, nn.parameter.UninitializedParameter):
            refused = "an uninitialized lazy layer"
        found[names[0]] = (linear, planner.DenseLayer(
            names[0], linear.in_features, linear.out_features, linear.bias is not None,
            str(linear.weight.dtype).removeprefix("torch."), linear.weight.dtype.is_floating_point,
            tuple(names), refused))
    return found


def _kernel(linear: nn.Linear) -> np.ndarray:
    """The ``(in, out)`` kernel in float64 on the host."""
    return linear.weight.detach().to("cpu", torch.float64).numpy().T


def _build(linear: nn.Linear, plan: LayerPlan) -> tuple[nn.Module, TTLinear]:
    """The TT layer of ``plan`` from ``linear``'s weights (by TT-SVD, the planned ranks as caps), and its TT part."""
    shape = plan.shape
    if not plan.padded:
        layer = TTLinear.from_linear(linear, shape.in_modes, shape.out_modes, max_rank=shape.ranks)
        return layer, layer
    weight = linear.weight.detach()
    padded = weight.new_zeros(shape.out_features, shape.in_features)
    padded[: linear.out_features, : linear.in_features] = weight
    bias = False
    if linear.bias is not None:
        bias = linear.bias.detach().new_zeros(shape.out_features)
        bias[: linear.out_features] = linear.bias.detach()
    layer = TTLinear.from_dense(padded, shape.in_modes, shape.out_modes, max_rank=shape.ranks, bias=bias)
    return PaddedTTLinear(layer, linear.in_features, linear.out_features), layer


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """``model`` with the submodule at ``name`` replaced (the root: ``new`` itself)."""
    if not name:
        return new
    parent, _, last = name.rpartition(".")
    setattr(model.get_submodule(parent), last, new)  # Sequential, ModuleList and ModuleDict keep names as keys
    return model


def tensorize(
    model: nn.Module,
    *,
    max_rank: int | None = None,
    rtol: float | None = None,
    compression: float | None = None,
    max_params: int | None = None,
    include: str | Sequence[str] | Callable[[str, nn.Linear], bool] | None = None,
    min_size: int = 0,
    d: int | None = None,
    modes: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
    pad: bool = False,
    inplace: bool = False,
    batch_size: int = 100,
) -> tuple[nn.Module, TensorizeReport]:
    """Replaces the model's ``nn.Linear`` layers by :class:`tt_torch.TTLinear` layers built from their weights.

    Each selected layer becomes the TT-SVD of its weight (its bias kept, its dtype and device), with the modes and
    ranks :func:`tt_common.tensorize.plan` chooses (read its module docstring for the rules):

    - ranks: ``max_rank`` (every inner rank at most), ``rtol`` (``||W - TT||_F <= rtol ||W||_F``), or a budget
      over the tensorized layers, ``max_params`` (their cores and biases) or ``compression`` (their dense
      parameters over that), split across layers by the singular values
      (:func:`tt_common.tensorize.allocate_ranks`);
    - which layers: ``include`` (a glob on the dotted module name such as ``"encoder.*"``, a list of globs, or
      a predicate ``include(name, linear)``), at least ``min_size`` weights; a layer that cannot gain stays
      dense, and the report says why;
    - modes: ``modes={"name": (in_modes, out_modes)}`` per layer, otherwise chosen for ``d`` cores (default: by
      the layer's size); badly factoring sizes (a large prime) stay dense, or with ``pad=True`` are zero-padded
      (the layer becomes a :class:`PaddedTTLinear`).

    The input model is left untouched (a ``copy.deepcopy`` is changed) unless ``inplace=True``. Bad input (no
    ``nn.Linear``, a filter that matches nothing, a budget below the smallest TT, a non-float weight, a selected
    layer that the model holds twice) raises a ``ValueError`` before anything changes. Returns the new model and
    a :class:`tt_common.tensorize.TensorizeReport` (``print`` it): per layer parameters and FLOPs per example
    before and after, the relative Frobenius error of ``W`` as built, and the layer's direction and plan (merged
    cores) at ``batch_size``.

    >>> import torch
    >>> from torch import nn
    >>> import tt_torch
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))
    >>> small, report = tt_torch.tensorize(model, max_rank=8, min_size=10_000)
    >>> type(small[0]).__name__, small[0].ranks, type(small[2]).__name__, type(model[0]).__name__
    ('TTLinear', (1, 8, 8, 1), 'Linear', 'Linear')
    >>> report["0"].params_before, report["0"].params_after, report["2"].note
    (262400, 5376, 'below min_size=10,000 weights')
    >>> small(torch.ones(2, 1024)).shape
    torch.Size([2, 10])
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _positive_int(batch_size, "batch_size")
    found = _dense_layers(model)
    if callable(include) and not isinstance(include, str):
        predicate = include
        include = lambda name: predicate(name, found[name][0])  # noqa: E731
    plans = planner.plan([layer for _, layer in found.values()], lambda name: _kernel(found[name][0]),
                         max_rank=max_rank, rtol=rtol, compression=compression, max_params=max_params,
                         include=include, min_size=min_size, d=d, modes=modes, pad=pad)
    target = model if inplace else copy.deepcopy(model)
    targets = _dense_layers(target)
    rows, built = [], {}
    for plan in plans:  # every layer built before any is swapped in
        if plan.shape is None:
            rows.append(planner.dense_row(plan))
            continue
        linear = targets[plan.layer.name][0]
        new, tt = _build(linear, plan)
        cores = [c.detach().to("cpu", torch.float64).numpy() for c in tt.cores]
        error = planner.relative_error(_kernel(linear), cores)
        rows.append(planner.tt_row(plan, tt.shape, error=error, direction=tt.direction,
                                   groups=tt.plan(batch_size)[0]))
        built[plan.layer.name] = new
    other = sum(p.numel() for p in model.parameters()) - sum(p.layer.params for p in plans)
    for name, new in built.items():
        target = _replace(target, name, new)
    return target, TensorizeReport(tuple(rows), other_params=other, batch_size=batch_size)
