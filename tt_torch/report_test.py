"""Compression report of a torch model: the same rows and totals as the JAX report of the same network."""

from __future__ import annotations

from torch import nn

from tt_torch import TTLinear, compression_report, layer_reports


def test_compression_report_of_a_model() -> None:
    model = nn.Sequential(TTLinear((4, 8), (4, 4), 2), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    lines = compression_report(model).splitlines()
    assert lines[2].startswith("| 0 | tt | 32 -> 16 | 4x8 | 4x4 | 1,2,1 | 112 | 528 |")
    assert lines[3].startswith("| 3 | dense | 16 -> 10 |")
    # As in tt_jax/layer_test.py: TT 112, dense 170, batch norm 32 (running stats are buffers): 314 vs 730.
    assert lines[4].startswith("| total | | | | | | 314 | 730 |")


def test_rows_follow_module_names_and_flops() -> None:
    model = nn.ModuleDict({"body": nn.ModuleList([TTLinear((2, 3), (4, 5), 2, bias=False)])})
    (row,) = layer_reports(model)
    assert row.name == "body.0" and row.params == 2 * 4 * 2 + 2 * 3 * 5 and row.flops == 280  # rtl, see flop_table
