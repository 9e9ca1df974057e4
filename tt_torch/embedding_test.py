"""TTEmbedding (PyTorch): the table's rows, padding_idx as nn.Embedding's, errors, from_embedding, init variance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tt_torch
from tt_torch import TTEmbedding


@pytest.mark.parametrize("direction", ["ltr", "rtl"])
@pytest.mark.parametrize("ids_shape", [(), (5,), (2, 3, 4)])
def test_lookup_is_the_tables_rows_for_any_index_shape(direction: str, ids_shape: tuple) -> None:
    layer = TTEmbedding((3, 4, 5), (2, 3, 2), (1, 3, 4, 1), direction=direction, dtype=torch.float64)
    ids = torch.randint(0, 60, ids_shape, generator=torch.Generator().manual_seed(0))
    got = layer(ids)
    assert got.shape == (*ids_shape, 12) and got.dtype == torch.float64
    torch.testing.assert_close(got, layer.to_dense()[ids], rtol=1e-12, atol=1e-12)
    assert layer(ids.int()).dtype == torch.float64  # int32 indices too


def test_padding_idx_zeroes_the_row_and_its_gradient() -> None:
    layer = TTEmbedding((3, 4), (2, 3), 3, padding_idx=-1)
    assert layer.padding_idx == 11
    layer(torch.tensor([11, 11])).sum().backward()
    assert all(torch.equal(c.grad, torch.zeros_like(c)) for c in layer.cores)
    assert torch.equal(layer(torch.tensor([11])), torch.zeros(1, 6))
    assert torch.equal(layer.to_dense()[11], torch.zeros(6))


def test_bad_indices_and_arguments_are_named() -> None:
    layer = TTEmbedding((3, 4), (2, 3), 3)
    with pytest.raises(ValueError, match="indices must be of an integer dtype, got float32"):
        layer(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="indices must be of an integer dtype, got bool"):
        layer(torch.tensor([True]))
    with pytest.raises(ValueError, match=r"index 12 is out of range for a vocabulary of V = 12 \(valid: 0 <= index < 12\)"):
        layer(torch.tensor([[0, 12]]))
    with pytest.raises(ValueError, match="index -1 is out of range"):
        layer(torch.tensor([-1]))
    with pytest.raises(ValueError, match="padding_idx must be an int"):
        TTEmbedding((3, 4), (2, 3), 3, padding_idx=12)
    with pytest.raises(ValueError, match=r"dense matrix of shape \(12, 5\) does not match"):
        TTEmbedding.from_dense(torch.ones(12, 5), (3, 4), (2, 3))


def test_from_embedding_is_exact_at_full_rank() -> None:
    dense = torch.nn.Embedding(12, 6, padding_idx=4, dtype=torch.float64)
    layer = TTEmbedding.from_embedding(dense, (3, 4), (2, 3))
    ids = torch.arange(12)
    torch.testing.assert_close(layer(ids), dense(ids), rtol=1e-10, atol=1e-12)
    assert layer.padding_idx == 4 and layer.cores[0].dtype == torch.float64


def test_default_init_gives_nn_embeddings_variance() -> None:
    """nn.Embedding draws N(0, 1): the table's entries have variance 1, averaged over 200 draws (rtol 10%)."""
    layer = TTEmbedding((4, 4), (2, 4), 3, dtype=torch.float64)
    moments = []
    for seed in range(200):
        layer.reset_parameters(torch.Generator().manual_seed(seed))
        moments.append(float((layer.to_dense().detach() ** 2).mean()))
    assert np.mean(moments) == pytest.approx(1.0, rel=0.1)


def test_report_row() -> None:
    report = tt_torch.compression_report(TTEmbedding((10, 10, 10), (4, 4, 4), 8))
    assert "| model | tt-embedding | 1000 -> 64 | 10x10x10 | 4x4x4 | 1,8,8,1 | 3,200 | 64,000 | 20.0 | 3,072 |" in report
