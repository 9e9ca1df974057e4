"""torch-mpo's ``compress_model`` as a conversion of the compression study, read into our TT layers.

torch-mpo (0.2.3) is a study-only dependency. Its wheels declare Python >= 3.12, but the package is pure Python
and runs on this project's 3.11; install it beside the environment with

    pip install --no-deps --ignore-requires-python --target DIR torch-mpo==0.2.3   # then PYTHONPATH=DIR

:func:`mpo_conversion` loads a finished dense run in torch, lets ``torch_mpo.compress_model`` replace the given
layers at one TT-rank (the largest whose model stays within a parameter budget: torch-mpo takes one rank for all
layers, or one per layer by hand), and copies its cores into our ``TTLinear`` layout, checking that the model
computes what torch-mpo's does. The fine-tuning that follows is then the study's own (same loop, recipe and data
as our conversions'), so the comparison is of the two conversions: torch-mpo's modes, its uniform rank and its
TT-SVD, against our planner's.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from experiments.presets import TT, Network
from experiments.weights import load_model

__all__ = ["MAX_RANK", "MpoConversion", "mpo_conversion", "mpo_rank_for"]

MAX_RANK = 256  # the largest uniform rank searched

INSTALL = ("torch-mpo is not installed: pip install --no-deps --ignore-requires-python --target DIR "
           "torch-mpo==0.2.3, then PYTHONPATH=DIR")


def _torch_mpo():
    try:
        import torch_mpo
        from torch_mpo.layers import TTLinear as MpoLinear
        from torch_mpo.utils.compression import compress_model
    except ImportError:
        raise ValueError(INSTALL) from None
    return torch_mpo, MpoLinear, compress_model


@dataclass(frozen=True)
class MpoConversion:
    """A run's model converted by torch-mpo: our network spec, its weights (our naming) and what was chosen."""

    spec: Network
    weights: dict[str, np.ndarray]
    info: dict


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def mpo_rank_for(model, names: Sequence[str], max_params: int) -> int:
    """The largest uniform TT-rank at which torch-mpo's conversion of ``names`` keeps ``model`` within
    ``max_params`` parameters; a ``ValueError`` if not even rank 1 does."""
    import torch

    _, MpoLinear, _ = _torch_mpo()
    dense = {name: model.get_submodule(name) for name in names}
    others = _params(model) - sum(_params(layer) for layer in dense.values())
    best = None
    for rank in range(1, MAX_RANK + 1):
        size = others + sum(_params(MpoLinear(layer.in_features, layer.out_features, tt_ranks=rank,
                                              bias=layer.bias is not None, device=torch.device("meta")))
                            for layer in dense.values())
        if size > max_params:
            break
        best = rank
    if best is None:
        raise ValueError(f"torch-mpo at rank 1 needs more than max_params={max_params:,} parameters")
    return best


def _our_layer(mpo_layer):
    """Our ``TTLinear`` computing what ``mpo_layer`` does: its ``(r, m_out, r', n_in)`` cores are ours permuted.

    torch-mpo keeps a uniform rank even where it exceeds what the modes can use (``r_k > prod`` of the modes on
    either side); ours clips such ranks, so there the layer is the exact (lossless) TT-SVD of torch-mpo's matrix.
    """
    import torch

    import tt_torch

    in_modes, out_modes = tuple(mpo_layer.inp_modes), tuple(mpo_layer.out_modes)
    bias = mpo_layer.bias is not None
    layer = tt_torch.TTLinear(in_modes, out_modes, tuple(mpo_layer.tt_ranks), bias=bias)
    with torch.no_grad():
        if layer.ranks != tuple(mpo_layer.tt_ranks):
            weight = mpo_layer.to_matrix().detach().double()  # (out, in), as nn.Linear's
            layer = tt_torch.TTLinear.from_dense(weight, in_modes, out_modes, max_rank=layer.ranks,
                                                 bias=mpo_layer.bias.detach().double() if bias else False)
            return layer.to(torch.float32)
        for k, core in enumerate(mpo_layer.cores):
            r, r_next = mpo_layer.tt_ranks[k], mpo_layer.tt_ranks[k + 1]
            layer.cores[k].copy_(core.reshape(r, out_modes[k], r_next, in_modes[k]).permute(0, 3, 1, 2))
        if bias:
            layer.bias.copy_(mpo_layer.bias)
    return layer


def mpo_conversion(run_dir: str | os.PathLike, names: Sequence[str], max_params: int, *, which: str,
                   spec: Network, name: str) -> MpoConversion:
    """torch-mpo's ``compress_model`` of the run's layers ``names`` at the largest uniform rank within
    ``max_params``, as our network ``name`` with its weights. A ``RuntimeError`` if the copied layers do not
    compute what torch-mpo's do (to float32 rounding)."""
    import torch

    import tt_torch

    torch_mpo, _, compress_model = _torch_mpo()
    model = load_model(Path(run_dir), backend="torch", which=which)
    rank = mpo_rank_for(model, names, max_params)
    compressed = compress_model(model, layers_to_compress=list(names), tt_ranks=rank, verbose=False)
    ours = copy.deepcopy(model)  # compress_model left model as it was
    layers = dict(zip(spec.module_names(), spec.layers))
    for layer_name in names:
        mpo_layer = compressed.get_submodule(layer_name)
        tt = _our_layer(mpo_layer)
        parent, _, last = layer_name.rpartition(".")
        setattr(ours.get_submodule(parent), last, tt)
        layers[layer_name] = TT(tt.in_modes, tt.out_modes, tt.ranks)
    x = torch.randn(64, spec.layers[0].in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = compressed.eval()(x), ours.eval()(x)
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())):
        raise RuntimeError(f"our copy of torch-mpo's layers differs from them by {(got - expected).abs().max():.3g}")
    parts = [f"{n}: TT {layers[n].in_modes} -> {layers[n].out_modes} ranks {layers[n].ranks}" for n in names]
    new_spec = replace(spec, name=name, layers=tuple(layers[n] for n in spec.module_names()), thesis_params=None,
                       thesis_accuracy=None, based_on=None,
                       description=f"{spec.name} converted by torch-mpo's compress_model ({'; '.join(parts)})")
    info = {"converter": f"torch-mpo {getattr(torch_mpo, '__version__', '?')} compress_model", "rank": rank,
            "layers": list(names), "max_params": max_params, "params": _params(compressed)}
    return MpoConversion(new_spec, tt_torch.transfer.export(ours), info)
