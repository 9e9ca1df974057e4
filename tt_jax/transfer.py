"""Moving weights in and out of Flax NNX models in the framework-neutral format.

See :mod:`tt_common.transfer` for the naming scheme. Supported layers:
:class:`tt_jax.TTLinear`, :class:`tt_jax.TTConv2d`, :class:`tt_jax.TTEmbedding` (``cores.K``, ``bias``),
``nnx.Linear`` (``kernel`` ``(in, out)``, ``bias``),
``nnx.BatchNorm`` (``scale``, ``bias``, running ``mean`` and ``var``) and any
module without ``nnx.Param`` / ``nnx.BatchStat`` variables (dropout). A
parameter or batch statistic anywhere else raises a ``ValueError``: nothing is
silently left behind. Module paths are dotted: ``('layers', 0)`` is ``layers.0``.

>>> from flax import nnx
>>> import tt_jax
>>> class Net(nnx.Module):
...     def __init__(self, rngs):
...         self.layers = nnx.List([tt_jax.TTLinear((2, 2), (3, 3), 2, rngs=rngs), nnx.BatchNorm(9, rngs=rngs)])
>>> weights = export(Net(nnx.Rngs(0)))
>>> sorted(weights)
['layers.0.bias', 'layers.0.cores.0', 'layers.0.cores.1', 'layers.1.bias', 'layers.1.mean', 'layers.1.scale', 'layers.1.var']
>>> other = load(Net(nnx.Rngs(1)), weights)
>>> bool((other.layers[0].cores[1][...] == weights["layers.0.cores.1"]).all())
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tt_common.transfer import check_mapping, join, load_weights, path_name, save_weights
from tt_jax.conv import TTConv2d
from tt_jax.embedding import TTEmbedding
from tt_jax.layer import TTLinear

__all__ = ["export", "load", "load_file", "save_file"]

_Entries = dict[str, nnx.Variable]


def _layer_entries(name: str, module: nnx.Module) -> _Entries:
    if isinstance(module, (TTLinear, TTConv2d, TTEmbedding)):  # the TT layers: P.cores.K (and P.bias)
        entries = {join(name, "cores", k): core for k, core in enumerate(module.cores)}
        variables = {"bias": getattr(module, "bias", None)}
    elif isinstance(module, nnx.Linear):
        entries, variables = {}, {"kernel": module.kernel, "bias": module.bias}
    elif isinstance(module, nnx.BatchNorm):
        entries = {}
        variables = {"scale": module.scale, "bias": module.bias, "mean": module.mean, "var": module.var}
    else:
        return {}
    entries.update({join(name, key): v for key, v in variables.items() if v is not None})
    return entries


def _entries(model: nnx.Module, prefix: str) -> _Entries:
    entries: _Entries = {}
    variables = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            entries.update(_layer_entries(join(prefix, path_name(path)), node))
        elif isinstance(node, (nnx.Param, nnx.BatchStat)):
            variables.append((path, node))
    covered = {id(v) for v in entries.values()}
    for path, variable in variables:
        if id(variable) not in covered:
            raise ValueError(
                f"{type(variable).__name__} {path_name(path)!r} belongs to a module that the transfer format "
                "does not support (supported: TTLinear, TTConv2d, TTEmbedding, nnx.Linear, nnx.BatchNorm, modules without parameters)"
            )
    return entries


def export(model: nnx.Module, *, prefix: str = "") -> dict[str, np.ndarray]:
    """The weights of a layer or a whole model as framework-neutral NumPy arrays (copies, dtypes kept).

    ``prefix`` is prepended to every module path (see :mod:`tt_common.transfer`).
    """
    return {key: np.array(variable.get_value()) for key, variable in _entries(model, prefix).items()}


def load(model: nnx.Module, mapping: Mapping[str, np.ndarray], *, prefix: str = "") -> nnx.Module:
    """Sets the variables of ``model`` from ``mapping`` in place and returns ``model``.

    The keys must be exactly those :func:`export` gives for ``model`` and the
    shapes must match; otherwise a ``ValueError`` names the key and nothing is
    changed. Values are cast to each variable's dtype (bit-exact when equal).
    """
    entries = _entries(model, prefix)
    check_mapping({key: v.get_value().shape for key, v in entries.items()}, mapping)
    for key, variable in entries.items():
        variable.set_value(jnp.asarray(np.asarray(mapping[key]), dtype=variable.get_value().dtype))
    return model


def save_file(
    model: nnx.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None, *, prefix: str = ""
) -> None:
    """Writes :func:`export` ``(model, prefix=prefix)`` to a safetensors file."""
    save_weights(path, export(model, prefix=prefix), metadata)


def load_file(model: nnx.Module, path: str | os.PathLike, *, prefix: str = "") -> nnx.Module:
    """Loads a safetensors file written by either framework into ``model`` (see :func:`load`)."""
    return load(model, load_weights(path), prefix=prefix)
