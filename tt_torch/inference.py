"""Inference mode of a PyTorch model: every ``TTLinear`` in it contracts its cores or multiplies by its dense
kernel, whichever the FLOP/memory model (:func:`tt_common.contraction.choose_inference_form`) finds cheaper for a
batch size, or the form forced by the user. The mirror of :mod:`tt_jax.inference`.

>>> import torch
>>> from torch import nn
>>> import tt_torch
>>> from tt_torch import inference
>>> model = nn.Sequential(tt_torch.TTLinear((32, 32), (32, 32), 32), nn.Tanh(),
...                       tt_torch.TTLinear((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), 8)).eval()
>>> [c.form for c in inference.prepare_inference(model, 32).values()]
['dense', 'cores']
>>> with torch.no_grad():
...     model(torch.ones(32, 1024)).shape
torch.Size([32, 1024])
>>> print(inference.inference_report(model))
| layer | form | batch | modelled cost, cores | modelled cost, dense | dense W | why |
|---|---|---|---|---|---|---|
| 0 | dense | 32 | 2.25e+08 | 1.14e+08 | 4.0 MiB | dense is cheaper (modelled cost per call at batch 32: cores 2.25e+08, dense 1.14e+08 FLOPs); W takes 4.0 MiB |
| 2 | cores | 32 | 7.61e+07 | 1.14e+08 | 4.0 MiB | cores are cheaper (modelled cost per call at batch 32: cores 7.61e+07, dense 1.14e+08 FLOPs) |
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from tt_common.contraction import DEFAULT_MAX_DENSE_BYTES, InferenceChoice
from tt_common.report import format_inference_report
from tt_torch.layer import TTLinear

__all__ = ["inference_choices", "inference_report", "prepare_inference", "reset_inference"]


def _tt_layers(model: nn.Module) -> dict[str, TTLinear]:
    return {name or "model": module for name, module in model.named_modules() if isinstance(module, TTLinear)}


def prepare_inference(
    model: nn.Module, batch_size: int, form: Literal["auto", "cores", "dense"] = "auto", *,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
) -> dict[str, InferenceChoice]:
    """:meth:`tt_torch.TTLinear.prepare_inference` on every TT layer of ``model``; the choices by layer path."""
    return {name: layer.prepare_inference(batch_size, form, max_dense_bytes=max_dense_bytes)
            for name, layer in _tt_layers(model).items()}


def reset_inference(model: nn.Module) -> None:
    """Every TT layer of ``model`` back to the training form (:meth:`tt_torch.TTLinear.reset_inference`)."""
    for layer in _tt_layers(model).values():
        layer.reset_inference()


def inference_choices(model: nn.Module) -> dict[str, InferenceChoice | None]:
    """Each TT layer's current choice by layer path (``None``: not prepared, the training form)."""
    return {name: layer.inference_choice for name, layer in _tt_layers(model).items()}


def inference_report(model: nn.Module) -> str:
    """A markdown table of the form each TT layer uses and why (:func:`tt_common.format_inference_report`)."""
    return format_inference_report(list(inference_choices(model).items()))
