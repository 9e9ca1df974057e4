"""Shipping a Flax NNX model: ``jax.export`` (serialized StableHLO) with a symbolic batch dimension.

The exported function takes the input only: the model's arrays (cores, or the dense kernels of the layers in
the dense inference form, :mod:`tt_jax.inference`) are constants of the graph, so a process that reloads it
imports JAX and nothing of this library. The mirror of :mod:`tt_torch.export`.

>>> import jax, jax.numpy as jnp
>>> from flax import nnx
>>> import tt_jax
>>> from tt_jax import export
>>> model = tt_jax.TTLinear((4, 8), (2, 5), 4, rngs=nnx.Rngs(0))
>>> exported = export.export(model, jnp.ones((3, 32), jnp.float32))
>>> exported.in_avals
(ShapedArray(float32[batch,32]),)
>>> reloaded = jax.export.deserialize(export.serialize(exported))
>>> x = jnp.ones((7, 32), jnp.float32)
>>> bool(jnp.allclose(reloaded.call(x), model(x), atol=1e-6))
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tt_jax.layer import TTLinear

__all__ = ["SUPPORTED_DTYPES", "check_exportable", "export", "load", "save", "serialize"]

SUPPORTED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_exportable(model: nnx.Module, example_input: Any, dynamic_axes: Sequence[int]) -> None:
    """Raises a ``ValueError`` naming the problem unless ``model`` can be exported for ``example_input``.

    The model must be in inference mode (every ``nnx.BatchNorm`` with ``use_running_average``, every
    ``nnx.Dropout`` deterministic: ``model.eval()``); the input of a floating dtype of
    :data:`SUPPORTED_DTYPES`, at least 1-D; the dynamic axes batch axes, not the feature (last) axis.
    """
    nodes = [(".".join(map(str, path)) or "model", node) for path, node in nnx.iter_graph(model)]
    for where, node in nodes:  # batch norm first: in training mode it changes the outputs, not only their noise
        if isinstance(node, nnx.BatchNorm) and not node.use_running_average:
            raise ValueError(f"cannot export: the batch norm {where!r} is in training mode (use_running_average "
                             "is not True): call model.eval() first")
    for where, node in nodes:
        if isinstance(node, nnx.Dropout) and not node.deterministic and node.rate > 0:
            raise ValueError(f"cannot export: the dropout {where!r} is in training mode (deterministic is not "
                             "True): call model.eval() first")
    shape, dtype = tuple(np.shape(example_input)), np.dtype(example_input.dtype)
    if dtype.name not in SUPPORTED_DTYPES:
        raise ValueError(f"cannot export for input dtype {dtype.name}: supported {', '.join(SUPPORTED_DTYPES)}")
    if not shape:
        raise ValueError("cannot export for a 0-d example input: the last axis holds the features")
    axes = [int(a) for a in dynamic_axes]
    for axis in axes:
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"dynamic axis {axis} is out of range for an input of shape {shape}")
        if axis % len(shape) == len(shape) - 1:
            raise ValueError(f"dynamic axis {axis} is the feature axis (the last, of size {shape[-1]}): the "
                             "layers' modes fix it; only batch axes can be dynamic")
    if len({a % len(shape) for a in axes}) != len(axes):
        raise ValueError(f"dynamic_axes must not repeat an axis, got {tuple(axes)}")


def _symbolic_shape(shape: tuple[int, ...], dynamic_axes: Sequence[int], batch: str) -> tuple[Any, ...]:
    axes = sorted(a % len(shape) for a in dynamic_axes)
    names = {axis: batch if i == 0 else f"{batch}{i}" for i, axis in enumerate(axes)}
    spec = ", ".join(names.get(axis, str(size)) for axis, size in enumerate(shape))
    return jax.export.symbolic_shape(spec)


def _refresh_dense_kernels(model: nnx.Module) -> None:
    """Rebuilds stale dense kernels eagerly: inside the trace the layers use them as they are."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, TTLinear) and node.inference_form == "dense" and node._dense_is_stale():
            node._build_dense_kernel()


def export(
    model: nnx.Module, example_input: jax.Array | np.ndarray, *, batch: str = "batch",
    dynamic_axes: Sequence[int] = (0,), platforms: Sequence[str] | None = None,
) -> jax.export.Exported:
    """``jax.export`` of ``model``'s forward pass for inputs like ``example_input``, its ``dynamic_axes``
    symbolic (named ``batch``, ``batch1``, ...; ``()`` for a static shape).

    The example gives the static sizes and the dtype; its values are not used. ``platforms`` as in
    ``jax.export.export`` (default: the current backend). Symbolic batches are contracted with the plan for
    each layer's prepared batch size (:meth:`tt_jax.TTLinear.prepare_inference`; 1 if not prepared).
    """
    check_exportable(model, example_input, dynamic_axes)
    _refresh_dense_kernels(model)
    shape = tuple(np.shape(example_input))
    spec = jax.ShapeDtypeStruct(_symbolic_shape(shape, dynamic_axes, batch) if dynamic_axes else shape,
                                example_input.dtype)
    forward = jax.jit(lambda x: model(x))  # the model's arrays become constants of the graph
    kwargs = {} if platforms is None else {"platforms": tuple(platforms)}
    return jax.export.export(forward, **kwargs)(spec)


def serialize(exported: jax.export.Exported) -> bytes:
    """The serialized form (``jax.export.deserialize`` reads it back, in any process with JAX)."""
    return bytes(exported.serialize())


def save(exported: jax.export.Exported, path: str | os.PathLike) -> None:
    """Writes :func:`serialize` ``(exported)`` to ``path``."""
    with open(path, "wb") as f:
        f.write(serialize(exported))


def load(path: str | os.PathLike) -> jax.export.Exported:
    """Reads a file written by :func:`save` (the same as ``jax.export.deserialize(open(path, 'rb').read())``)."""
    with open(path, "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))
