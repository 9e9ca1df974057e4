"""Moving weights in and out of PyTorch models in the framework-neutral format.

See :mod:`tt_common.transfer` for the naming scheme. Supported layers:
:class:`tt_torch.TTLinear`, :class:`tt_torch.TTConv2d`, :class:`tt_torch.TTEmbedding` (``cores.K``,
``bias``), ``nn.Linear`` (its ``(out, in)`` weight becomes
the ``(in, out)`` key ``kernel``), ``nn.BatchNorm1d/2d/3d`` (``weight``,
``bias``, ``running_mean``, ``running_var`` become ``scale``, ``bias``,
``mean``, ``var``; ``num_batches_tracked`` is not transferred) and any module
without parameters (dropout, activations). A parameter or buffer anywhere else
raises a ``ValueError``: nothing is silently left behind.

>>> import torch
>>> import tt_torch
>>> model = torch.nn.Sequential(tt_torch.TTLinear((2, 2), (3, 3), 2), torch.nn.BatchNorm1d(9))
>>> weights = export(model)
>>> sorted(weights)
['0.bias', '0.cores.0', '0.cores.1', '1.bias', '1.mean', '1.scale', '1.var']
>>> other = torch.nn.Sequential(tt_torch.TTLinear((2, 2), (3, 3), 2), torch.nn.BatchNorm1d(9))
>>> torch.equal(load(other, weights)[0].cores[1], model[0].cores[1])
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tt_common.transfer import check_mapping, join, load_weights, save_weights
from tt_torch.conv import TTConv2d
from tt_torch.embedding import TTEmbedding
from tt_torch.layer import TTLinear

__all__ = ["export", "load", "load_file", "save_file"]

# key -> (tensor, transposed): ``transposed`` tensors are stored as their 2-D transpose.
_Entries = dict[str, tuple[torch.Tensor, bool]]


def _layer_entries(name: str, module: nn.Module) -> _Entries:
    entries: _Entries = {}
    if isinstance(module, (TTLinear, TTConv2d, TTEmbedding)):  # the TT layers: P.cores.K (and P.bias)
        entries.update({join(name, "cores", k): (core, False) for k, core in enumerate(module.cores)})
        tensors = {"bias": getattr(module, "bias", None)}
    elif isinstance(module, nn.Linear):
        entries[join(name, "kernel")] = (module.weight, True)
        tensors = {"bias": module.bias}
    elif isinstance(module, _BatchNorm):
        tensors = {"scale": module.weight, "bias": module.bias, "mean": module.running_mean, "var": module.running_var}
    else:
        return entries
    entries.update({join(name, key): (t, False) for key, t in tensors.items() if t is not None})
    return entries


def _entries(model: nn.Module, prefix: str) -> _Entries:
    entries: _Entries = {}
    for name, module in model.named_modules():
        entries.update(_layer_entries(join(prefix, name), module))
    covered = {id(t) for t, _ in entries.values()}
    for what, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if id(tensor) not in covered and not name.endswith("num_batches_tracked"):
                raise ValueError(
                    f"{what} {name!r} belongs to a module that the transfer format does not support "
                    "(supported: TTLinear, TTConv2d, TTEmbedding, nn.Linear, batch norm, modules without parameters)"
                )
    return entries


def export(model: nn.Module, *, prefix: str = "") -> dict[str, np.ndarray]:
    """The weights of a layer or a whole model as framework-neutral NumPy arrays (copies, dtypes kept).

    ``prefix`` is prepended to every module path (see :mod:`tt_common.transfer`).
    """
    out = {}
    for key, (tensor, transposed) in _entries(model, prefix).items():
        tensor = tensor.detach()
        if transposed:
            tensor = tensor.T
        try:
            out[key] = tensor.to("cpu").numpy().copy()
        except TypeError as error:  # e.g. bfloat16, which NumPy lacks
            raise ValueError(f"cannot export key {key!r} of dtype {tensor.dtype} to NumPy: {error}") from error
    return out


def load(model: nn.Module, mapping: Mapping[str, np.ndarray], *, prefix: str = "") -> nn.Module:
    """Copies ``mapping`` into ``model`` in place and returns ``model``.

    The keys must be exactly those :func:`export` gives for ``model`` and the
    shapes must match; otherwise a ``ValueError`` names the key and nothing is
    changed. Values are cast to each parameter's dtype (bit-exact when equal).
    """
    entries = _entries(model, prefix)
    expected = {key: tuple(t.shape)[::-1] if tr else tuple(t.shape) for key, (t, tr) in entries.items()}
    check_mapping(expected, mapping)
    with torch.no_grad():
        for key, (tensor, transposed) in entries.items():
            source = torch.from_numpy(np.array(mapping[key], copy=True))
            tensor.copy_(source.T if transposed else source)
    return model


def save_file(
    model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None, *, prefix: str = ""
) -> None:
    """Writes :func:`export` ``(model, prefix=prefix)`` to a safetensors file."""
    save_weights(path, export(model, prefix=prefix), metadata)


def load_file(model: nn.Module, path: str | os.PathLike, *, prefix: str = "") -> nn.Module:
    """Loads a safetensors file written by either framework into ``model`` (see :func:`load`)."""
    return load(model, load_weights(path), prefix=prefix)
