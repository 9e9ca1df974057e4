"""Compression reports: what each layer of a model costs, TT or dense."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tt_common.contraction import InferenceChoice, choose_direction, contraction_flops, dense_matmul_flops
from tt_common.conv import TTConvShape, per_position_flops
from tt_common.embedding import TTEmbeddingShape, choose_lookup_direction, lookup_flops
from tt_common.shapes import TTMatrixShape

__all__ = ["LayerReport", "dense_layer_report", "format_inference_report", "format_report", "tt_conv_layer_report",
           "tt_embedding_layer_report", "tt_layer_report"]


@dataclass(frozen=True)
class LayerReport:
    """One row of a compression report. ``flops`` are per example (batch size 1); for a convolution per output
    position (of large images: its cost depends on the image size), for an embedding per index looked up."""

    name: str
    kind: str  # "tt" or "dense"
    in_features: int
    out_features: int
    in_modes: tuple[int, ...] | None
    out_modes: tuple[int, ...] | None
    ranks: tuple[int, ...] | None
    params: int  # weights + bias
    dense_params: int  # weights + bias of the dense layer of the same size
    flops: int
    dense_flops: int

    @property
    def ratio(self) -> float:
        """Compression ratio ``dense_params / params``."""
        return self.dense_params / self.params


def tt_layer_report(name: str, shape: TTMatrixShape, use_bias: bool) -> LayerReport:
    """The report row of a TT layer.

    >>> row = tt_layer_report("fc1", TTMatrixShape.create((4, 8, 8, 4), (4, 4, 4, 4), 4), True)
    >>> row.params, row.dense_params, round(row.ratio, 1)
    (1408, 262400, 186.4)
    """
    bias = shape.out_features if use_bias else 0
    flops = sum(contraction_flops(shape, 1, choose_direction(shape)))
    return LayerReport(
        name=name,
        kind="tt",
        in_features=shape.in_features,
        out_features=shape.out_features,
        in_modes=shape.in_modes,
        out_modes=shape.out_modes,
        ranks=shape.ranks,
        params=shape.num_params + bias,
        dense_params=shape.dense_num_params + bias,
        flops=flops,
        dense_flops=dense_matmul_flops(shape, 1),
    )


def dense_layer_report(name: str, in_features: int, out_features: int, use_bias: bool) -> LayerReport:
    """The report row of a dense layer (ratio 1)."""
    params = in_features * out_features + (out_features if use_bias else 0)
    flops = 2 * in_features * out_features
    return LayerReport(
        name, "dense", in_features, out_features, None, None, None, params, params, flops, flops
    )


def _fmt_modes(modes: tuple[int, ...] | None) -> str:
    return "-" if modes is None else "x".join(map(str, modes))


def format_report(rows: Sequence[LayerReport], other_params: int = 0) -> str:
    """A markdown table of ``rows`` with a total line.

    ``other_params`` counts parameters outside the reported layers (batch norm
    scales and offsets, for example); they enter both totals.

    >>> print(format_report([dense_layer_report("head", 4, 2, True)]))
    | layer | kind | in -> out | in modes | out modes | ranks | params | dense params | ratio | FLOPs/example |
    |---|---|---|---|---|---|---|---|---|---|
    | head | dense | 4 -> 2 | - | - | - | 10 | 10 | 1.0 | 16 |
    | total | | | | | | 10 | 10 | 1.0 | 16 |
    """
    header = (
        "| layer | kind | in -> out | in modes | out modes | ranks | params | dense params | ratio | FLOPs/example |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for r in rows:
        ranks = "-" if r.ranks is None else ",".join(map(str, r.ranks))
        lines.append(
            f"| {r.name} | {r.kind} | {r.in_features} -> {r.out_features} | {_fmt_modes(r.in_modes)} | "
            f"{_fmt_modes(r.out_modes)} | {ranks} | {r.params:,} | {r.dense_params:,} | {r.ratio:.1f} | {r.flops:,} |"
        )
    params = sum(r.params for r in rows) + other_params
    dense = sum(r.dense_params for r in rows) + other_params
    flops = sum(r.flops for r in rows)
    lines.append(f"| total | | | | | | {params:,} | {dense:,} | {dense / max(params, 1):.1f} | {flops:,} |")
    return "\n".join(lines)


def tt_conv_layer_report(name: str, shape: TTConvShape, use_bias: bool) -> LayerReport:
    """The report row of a TT convolution: channels in and out, the kernel's TT matrix modes, FLOPs per output
    position (:func:`tt_common.conv.per_position_flops`).

    >>> from tt_common.conv import TTConvShape
    >>> row = tt_conv_layer_report("conv", TTConvShape.create((4, 4), (4, 4), 3, 4), True)
    >>> row.kind, row.in_modes, row.params, row.dense_params, row.flops, row.dense_flops
    ('tt-conv2d 3x3', (4, 4, 9), 372, 2320, 3712, 4608)
    """
    bias = shape.out_channels if use_bias else 0
    flops, dense_flops = per_position_flops(shape)
    return LayerReport(
        name=name, kind=f"tt-conv2d {shape.kernel_size[0]}x{shape.kernel_size[1]}", in_features=shape.in_channels,
        out_features=shape.out_channels, in_modes=shape.matrix.in_modes, out_modes=shape.matrix.out_modes,
        ranks=shape.ranks, params=shape.matrix.num_params + bias, dense_params=shape.dense_num_params + bias,
        flops=flops, dense_flops=dense_flops,
    )


def tt_embedding_layer_report(name: str, shape: TTEmbeddingShape) -> LayerReport:
    """The report row of a TT embedding: ``V -> D``, FLOPs per index (a dense table's lookup is a copy: 0).

    >>> from tt_common.embedding import TTEmbeddingShape
    >>> row = tt_embedding_layer_report("embed", TTEmbeddingShape.create((10, 10, 10), (4, 4, 4), 8))
    >>> row.params, row.dense_params, row.flops, row.dense_flops
    (3200, 64000, 3072, 0)
    """
    flops = lookup_flops(shape, 1, choose_lookup_direction(shape))
    return LayerReport(
        name=name, kind="tt-embedding", in_features=shape.num_embeddings, out_features=shape.features,
        in_modes=shape.vocab_modes, out_modes=shape.feature_modes, ranks=shape.matrix.ranks,
        params=shape.matrix.num_params, dense_params=shape.matrix.dense_num_params, flops=flops, dense_flops=0,
    )


def format_inference_report(rows: Sequence[tuple[str, InferenceChoice | None]]) -> str:
    """A markdown table of each TT layer's inference form and why (``None``: not prepared, the training form).

    Costs are the model's per call (:func:`tt_common.contraction.choose_inference_form`), not measurements.

    >>> from tt_common.contraction import choose_inference_form
    >>> shape = TTMatrixShape.create((32, 32), (32, 32), 32)
    >>> print(format_inference_report([("fc", choose_inference_form(shape, 32, "dense")), ("head", None)]))
    | layer | form | batch | modelled cost, cores | modelled cost, dense | dense W | why |
    |---|---|---|---|---|---|---|
    | fc | dense | 32 | 2.25e+08 | 1.14e+08 | 4.0 MiB | forced by the user (form='dense') |
    | head | cores | - | - | - | - | training form (prepare_inference not called) |
    """
    lines = ["| layer | form | batch | modelled cost, cores | modelled cost, dense | dense W | why |",
             "|---|---|---|---|---|---|---|"]
    for name, c in rows:
        if c is None:
            lines.append(f"| {name} | cores | - | - | - | - | training form (prepare_inference not called) |")
        else:
            lines.append(f"| {name} | {c.form} | {c.batch_size} | {c.cores_cost:.3g} | {c.dense_cost:.3g} | "
                         f"{c.dense_bytes / 2**20:.1f} MiB | {c.reason} |")
    return "\n".join(lines)
