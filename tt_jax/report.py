"""Compression report of a Flax NNX model: every ``TTLinear``, ``TTConv2d``, ``TTEmbedding`` and ``nnx.Linear`` in it."""

from __future__ import annotations

import jax
from flax import nnx

from tt_common.report import (LayerReport, dense_layer_report, format_report, tt_conv_layer_report,
                              tt_embedding_layer_report, tt_layer_report)
from tt_jax.conv import TTConv2d
from tt_jax.embedding import TTEmbedding
from tt_jax.layer import TTLinear

__all__ = ["compression_report", "layer_reports"]


def _name(path: tuple) -> str:
    return ".".join(map(str, path)) or "model"


def layer_reports(model: nnx.Module) -> list[LayerReport]:
    """One :class:`tt_common.LayerReport` per TT or dense layer, in graph order."""
    rows = []
    for path, node in nnx.iter_graph(model):
        if isinstance(node, TTLinear):
            rows.append(tt_layer_report(_name(path), node.shape, node.use_bias))
        elif isinstance(node, TTConv2d):
            rows.append(tt_conv_layer_report(_name(path), node.shape, node.use_bias))
        elif isinstance(node, TTEmbedding):
            rows.append(tt_embedding_layer_report(_name(path), node.shape))
        elif isinstance(node, nnx.Linear):
            rows.append(dense_layer_report(_name(path), node.in_features, node.out_features, node.bias is not None))
    return rows


def _count(state) -> int:
    return sum(x.size for x in jax.tree.leaves(state))


def compression_report(model: nnx.Module) -> str:
    """A markdown table of the model's layers; other parameters (batch norm) count in the totals.

    >>> from flax import nnx
    >>> import tt_jax
    >>> print(compression_report(tt_jax.TTLinear((2, 2), (3, 3), 2, rngs=nnx.Rngs(0))))
    | layer | kind | in -> out | in modes | out modes | ranks | params | dense params | ratio | FLOPs/example |
    |---|---|---|---|---|---|---|---|---|---|
    | model | tt | 4 -> 9 | 2x2 | 3x3 | 1,2,1 | 33 | 45 | 1.4 | 120 |
    | total | | | | | | 33 | 45 | 1.4 | 120 |
    """
    rows = layer_reports(model)
    other = _count(nnx.state(model, nnx.Param)) - sum(r.params for r in rows)
    return format_report(rows, other_params=other)
