"""Shipping a PyTorch model: ``torch.export`` with a dynamic batch dimension, and ONNX.

:func:`export` gives a ``torch.export.ExportedProgram`` (``torch.export.save`` / ``load`` write and read it);
:func:`to_onnx` writes an ONNX file through ``torch.onnx.export`` (its ``dynamo=True`` path, which needs the
``onnx`` and ``onnxscript`` packages), to run e.g. in onnxruntime. Layers in the dense inference form
(:mod:`tt_torch.inference`) are exported with their dense kernel. The mirror of :mod:`tt_jax.export`.

>>> import torch
>>> import tt_torch
>>> from tt_torch import export
>>> model = tt_torch.TTLinear((4, 8), (2, 5), 4).eval()
>>> program = export.export(model, torch.ones(3, 32))
>>> x = torch.ones(7, 32)
>>> torch.allclose(program.module()(x), model(x), atol=1e-6)
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from tt_torch.layer import TTLinear

__all__ = ["ONNX_DTYPES", "SUPPORTED_DTYPES", "check_exportable", "export", "to_onnx"]

SUPPORTED_DTYPES = ("float16", "bfloat16", "float32", "float64")
# onnxruntime's CPU kernels for the graph's MatMul / Gemm: no bfloat16; float16 only on some providers.
ONNX_DTYPES = ("float32", "float64")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_exportable(model: nn.Module, example_input: torch.Tensor, dynamic_axes: Sequence[int],
                     dtypes: Sequence[str] = SUPPORTED_DTYPES) -> None:
    """Raises a ``ValueError`` naming the problem unless ``model`` can be exported for ``example_input``.

    The model must be in inference mode where it matters (no batch norm or dropout in training mode:
    ``model.eval()``); the input a tensor of a dtype in ``dtypes``, at least 1-D; the dynamic axes batch
    axes, not the feature (last) axis, each of size at least 2 in the example (``torch.export`` specializes
    sizes 0 and 1).
    """
    modules = [(name or "model", module) for name, module in model.named_modules()]
    for where, module in modules:  # batch norm first: in training mode it changes the outputs, not only their noise
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(f"cannot export: the batch norm {where!r} is in training mode (it would normalize "
                             "with the batch's statistics): call model.eval() first")
    for where, module in modules:
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise ValueError(f"cannot export: the dropout {where!r} is in training mode: call model.eval() first")
    if not isinstance(example_input, torch.Tensor):
        raise ValueError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    shape, name = tuple(example_input.shape), _dtype_name(example_input.dtype)
    if name not in dtypes:
        raise ValueError(f"cannot export for input dtype {name}: supported {', '.join(dtypes)}")
    if not shape:
        raise ValueError("cannot export for a 0-d example input: the last axis holds the features")
    axes = [int(a) for a in dynamic_axes]
    for axis in axes:
        if not -len(shape) <= axis < len(shape):
            raise ValueError(f"dynamic axis {axis} is out of range for an input of shape {shape}")
        if axis % len(shape) == len(shape) - 1:
            raise ValueError(f"dynamic axis {axis} is the feature axis (the last, of size {shape[-1]}): the "
                             "layers' modes fix it; only batch axes can be dynamic")
        if shape[axis] < 2:
            raise ValueError(f"dynamic axis {axis} has size {shape[axis]} in the example; torch.export "
                             "specializes sizes 0 and 1: give an example of size at least 2 there")
    if len({a % len(shape) for a in axes}) != len(axes):
        raise ValueError(f"dynamic_axes must not repeat an axis, got {tuple(axes)}")


def _dynamic_shapes(ndim: int, dynamic_axes: Sequence[int], batch: str) -> tuple[dict[int, Any]]:
    axes = sorted(a % ndim for a in dynamic_axes)
    return ({axis: torch.export.Dim(batch if i == 0 else f"{batch}{i}") for i, axis in enumerate(axes)},)


def _refresh_dense_kernels(model: nn.Module) -> None:
    """Rebuilds stale dense kernels eagerly: under ``torch.export`` the layers use them as they are."""
    for module in model.modules():
        if isinstance(module, TTLinear) and module.inference_form == "dense":
            if module.dense_kernel is None or module._dense_key != module._cores_key():
                module._build_dense_kernel()


def export(
    model: nn.Module, example_input: torch.Tensor, *, batch: str = "batch", dynamic_axes: Sequence[int] = (0,),
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` for inputs like ``example_input``, its ``dynamic_axes`` dynamic
    (``torch.export.Dim`` named ``batch``, ``batch1``, ...; ``()`` for a static shape).

    Symbolic batches are contracted with the plan for each layer's prepared batch size
    (:meth:`tt_torch.TTLinear.prepare_inference`; 1 if not prepared).
    """
    check_exportable(model, example_input, dynamic_axes)
    _refresh_dense_kernels(model)
    dynamic = _dynamic_shapes(example_input.dim(), dynamic_axes, batch) if dynamic_axes else None
    return torch.export.export(model, (example_input,), dynamic_shapes=dynamic)


def to_onnx(
    model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *, batch: str = "batch",
    dynamic_axes: Sequence[int] = (0,), opset_version: int | None = None,
) -> None:
    """Writes ``model`` as an ONNX file at ``path`` (input ``"input"``, output ``"output"``), batch dynamic.

    Input dtypes: :data:`ONNX_DTYPES` (what onnxruntime's CPU kernels run). Exported from :func:`export`'s
    program; ``opset_version`` as in ``torch.onnx.export`` (default: its own).
    """
    check_exportable(model, example_input, dynamic_axes, ONNX_DTYPES)
    program = export(model, example_input, batch=batch, dynamic_axes=dynamic_axes)
    onnx_program = torch.onnx.export(program, (example_input,), input_names=["input"], output_names=["output"],
                                     opset_version=opset_version, dynamo=True, verbose=False)
    onnx_program.save(os.fspath(path))
