"""TTEmbeddingShape's validation, mixed-radix digits and the lookup against the table (NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.embedding import TTEmbeddingShape, digits, lookup, lookup_flops, choose_lookup_direction
from tt_common.reference import tt_to_dense


@st.composite
def embedding_shapes(draw: st.DrawFn) -> TTEmbeddingShape:
    d = draw(st.integers(1, 4))
    modes = lambda top: tuple(draw(st.lists(st.integers(1, top), min_size=d, max_size=d)))  # noqa: E731
    vocab = modes(6)
    padding = draw(st.one_of(st.none(), st.integers(0, int(np.prod(vocab)) - 1)))
    return TTEmbeddingShape.create(vocab, modes(4), (1, *draw(st.lists(st.integers(1, 5), min_size=d - 1,
                                                                          max_size=d - 1)), 1), padding)


@given(shape=embedding_shapes())
def test_digits_are_row_major_mixed_radix(shape: TTEmbeddingShape) -> None:
    ids = np.arange(shape.num_embeddings)
    got = np.stack(digits(ids, shape), axis=1)
    np.testing.assert_array_equal(got, np.stack(np.unravel_index(ids, shape.vocab_modes), axis=1))


@given(shape=embedding_shapes(), seed=st.integers(0, 2**16), direction=st.sampled_from(["ltr", "rtl"]))
def test_lookup_is_the_tables_rows(shape: TTEmbeddingShape, seed: int, direction: str) -> None:
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal(s) for s in shape.matrix.core_shapes]
    ids = rng.integers(0, shape.num_embeddings, 7)
    table = tt_to_dense(cores)
    if shape.padding_idx is not None:
        table[shape.padding_idx] = 0
    got = lookup(ids, cores, shape, direction, permute=np.transpose, gather=lambda a, i: a[i], matmul=np.matmul)
    np.testing.assert_allclose(got, table[ids], rtol=1e-12, atol=1e-12 * np.abs(table).max())
    assert lookup_flops(shape, 7, choose_lookup_direction(shape)) == min(lookup_flops(shape, 7, d) for d in ("ltr", "rtl"))


def test_negative_indices_take_the_row_from_the_end() -> None:
    shape = TTEmbeddingShape.create((3, 4), (2, 2), 2)
    cores = [np.random.default_rng(k).standard_normal(s) for k, s in enumerate(shape.matrix.core_shapes)]
    gather = lambda a, i: np.take(a, i, axis=0, mode="wrap")  # noqa: E731
    got = lookup(np.array([-1, -12]), cores, shape, "ltr", permute=np.transpose, gather=gather, matmul=np.matmul)
    np.testing.assert_allclose(got, tt_to_dense(cores)[[11, 0]])


@pytest.mark.parametrize("padding_idx, message", [
    (12, r"padding_idx must be an int in \[-12, 12\)"), (-13, "padding_idx must be an int"),
    (1.0, "padding_idx must be an int"), (True, "padding_idx must be an int")])  # fmt: skip
def test_bad_padding_idx_is_named(padding_idx, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TTEmbeddingShape.create((3, 4), (2, 2), 2, padding_idx)
    assert TTEmbeddingShape.create((3, 4), (2, 2), 2, -1).padding_idx == 11
