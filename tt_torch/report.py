"""Compression report of a PyTorch model: every ``TTLinear``, ``TTConv2d``, ``TTEmbedding`` and ``nn.Linear`` in it."""

from __future__ import annotations

from torch import nn

from tt_common.report import (LayerReport, dense_layer_report, format_report, tt_conv_layer_report,
                              tt_embedding_layer_report, tt_layer_report)
from tt_torch.conv import TTConv2d
from tt_torch.embedding import TTEmbedding
from tt_torch.layer import TTLinear

__all__ = ["compression_report", "layer_reports"]


def layer_reports(model: nn.Module) -> list[LayerReport]:
    """One :class:`tt_common.LayerReport` per TT or dense layer, in module order."""
    rows = []
    for name, module in model.named_modules():
        name = name or "model"
        if isinstance(module, TTLinear):
            rows.append(tt_layer_report(name, module.shape, module.bias is not None))
        elif isinstance(module, TTConv2d):
            rows.append(tt_conv_layer_report(name, module.shape, module.bias is not None))
        elif isinstance(module, TTEmbedding):
            rows.append(tt_embedding_layer_report(name, module.shape))
        elif isinstance(module, nn.Linear):
            rows.append(dense_layer_report(name, module.in_features, module.out_features, module.bias is not None))
    return rows


def compression_report(model: nn.Module) -> str:
    """A markdown table of the model's layers; other parameters (batch norm) count in the totals.

    Buffers (batch-norm running statistics) are not parameters and are not
    counted, as in :func:`tt_jax.compression_report`.

    >>> import tt_torch
    >>> print(compression_report(tt_torch.TTLinear((2, 2), (3, 3), 2)))
    | layer | kind | in -> out | in modes | out modes | ranks | params | dense params | ratio | FLOPs/example |
    |---|---|---|---|---|---|---|---|---|---|
    | model | tt | 4 -> 9 | 2x2 | 3x3 | 1,2,1 | 33 | 45 | 1.4 | 120 |
    | total | | | | | | 33 | 45 | 1.4 | 120 |
    """
    rows = layer_reports(model)
    other = sum(p.numel() for p in model.parameters()) - sum(r.params for r in rows)
    return format_report(rows, other_params=other)
