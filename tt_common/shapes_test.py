"""Tests of shape validation, rank normalization and parameter counts."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import numpy as np

from tt_common.shapes import (
    TTMatrixShape,
    check_input_dtype,
    check_input_features,
    check_input_ndim,
    max_ranks,
    normalize_ranks,
    rank_caps,
)


@st.composite
def tt_shapes(
    draw, max_d: int = 6, max_mode: int = 8, max_rank: int = 8, max_dense: int | None = 2**16
) -> TTMatrixShape:
    """Random TT shapes whose dense matrix has at most ``max_dense`` elements (``None``: no bound).

    The bound keeps dense references small: without it, 6 modes of 8 make a 2**36-element W.
    """
    d = draw(st.integers(1, max_d))
    budget = math.inf if max_dense is None else max_dense
    in_modes, out_modes = [], []
    for _ in range(d):
        for modes in (in_modes, out_modes):
            modes.append(draw(st.integers(1, int(min(max_mode, budget)))))
            budget //= modes[-1]
    ranks = [1] + draw(st.lists(st.integers(1, max_rank), min_size=d - 1, max_size=d - 1)) + [1]
    return TTMatrixShape.create(in_modes, out_modes, ranks)


@given(tt_shapes(max_dense=None))
def test_shape_invariants(shape: TTMatrixShape) -> None:
    assert len(shape.ranks) == shape.d + 1
    assert shape.ranks[0] == shape.ranks[-1] == 1
    assert all(r <= cap for r, cap in zip(shape.ranks, max_ranks(shape.in_modes, shape.out_modes)))
    assert shape.num_params == sum(math.prod(s) for s in shape.core_shapes)
    assert shape.dense_num_params == math.prod(shape.in_modes) * math.prod(shape.out_modes)
    assert TTMatrixShape.from_core_shapes(shape.core_shapes) == shape


def test_int_ranks_fill_inner_positions() -> None:
    assert TTMatrixShape.create((4, 8, 8, 4), (4, 4, 4, 4), 4).ranks == (1, 4, 4, 4, 1)
    assert TTMatrixShape.create((6,), (5,), 4).ranks == (1, 1)  # d = 1: no inner rank


def test_ranks_above_the_useful_maximum_are_clipped() -> None:
    # Position 1 can hold at most m_1 n_1 = 2, position 2 at most m_3 n_3 = 3.
    shape = TTMatrixShape.create((2, 4, 3), (1, 5, 1), (1, 16, 16, 1))
    assert max_ranks((2, 4, 3), (1, 5, 1)) == (1, 2, 3, 1)
    assert shape.ranks == (1, 2, 3, 1)


def test_thesis_layer_counts() -> None:
    first = TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)
    second = TTMatrixShape.create((8, 16, 16, 16, 8), (5, 2, 1, 1, 1), 4)
    assert (first.num_params, second.num_params) == (3616, 1216)


@pytest.mark.parametrize(
    "in_modes, out_modes, ranks, message",
    [
        ((4, 8), (2,), 2, "same length"),
        ((4, 0), (2, 2), 2, r"in_modes\[1\] must be a positive integer"),
        ((4, 8), (2, -2), 2, r"out_modes\[1\] must be a positive integer"),
        ((4, 2.5), (2, 2), 2, r"in_modes\[1\] must be a positive integer"),
        ((), (), 2, "in_modes must not be empty"),
        ((4, 8), (2, 2), 0, "ranks must be a positive integer"),
        ((4, 8), (2, 2), (1, 0, 1), r"ranks\[1\] must be a positive integer"),
        ((4, 8), (2, 2), (1, 2, 2, 1), "length d \\+ 1 = 3"),
        ((4, 8), (2, 2), (2, 2, 1), "start and end with 1"),
        ((4, 8), (2, 2), (1, 2, 3), "start and end with 1"),
        (4, (2, 2), 2, "in_modes must be a sequence"),
    ],
)
def test_bad_shapes_raise_value_errors_naming_the_problem(in_modes, out_modes, ranks, message) -> None:
    with pytest.raises(ValueError, match=message):
        TTMatrixShape.create(in_modes, out_modes, ranks)


def test_bad_core_shapes() -> None:
    with pytest.raises(ValueError, match="ranks do not chain"):
        TTMatrixShape.from_core_shapes([(1, 2, 2, 3), (2, 2, 2, 1)])
    with pytest.raises(ValueError, match="4 axes"):
        TTMatrixShape.from_core_shapes([(1, 2, 2)])
    with pytest.raises(ValueError, match="start and end with 1"):
        TTMatrixShape.from_core_shapes([(2, 2, 2, 1)])


def test_wrong_input_or_kernel_size() -> None:
    shape = TTMatrixShape.create((4, 8), (2, 3), 2)
    with pytest.raises(ValueError, match=r"last dimension is 31.*prod\(\(4, 8\)\) = 32"):
        check_input_features(31, shape.in_features, shape.in_modes)
    with pytest.raises(ValueError, match=r"dense matrix of shape \(6, 32\)"):
        shape.check_kernel((6, 32))
    shape.check_kernel((6, 32), layout="(out, in)")


def test_normalize_ranks_rejects_bool() -> None:
    with pytest.raises(ValueError):
        normalize_ranks(True, (2, 2), (2, 2))


def test_modes_may_be_numpy_integer_arrays() -> None:
    shape = TTMatrixShape.create(np.array([4, 8]), np.array([2, 3], dtype=np.int32), np.array([1, 2, 1]))
    assert (shape.in_modes, shape.out_modes, shape.ranks) == ((4, 8), (2, 3), (1, 2, 1))
    assert all(type(m) is int for m in shape.in_modes + shape.ranks)


@pytest.mark.parametrize(
    "modes, message",
    [
        (np.array([4.0, 8.0]), "in_modes must be a sequence of positive integers .*integer dtype"),
        (np.array([True, True]), "in_modes must be a sequence of positive integers"),
        (np.array([[4, 8]]), "in_modes must be a sequence of positive integers .*1-D"),
        (np.array([4, 0]), r"in_modes\[1\] must be a positive integer"),
    ],
)
def test_numpy_modes_of_another_kind_are_refused_naming_the_argument(modes, message) -> None:
    with pytest.raises(ValueError, match=message):
        TTMatrixShape.create(modes, (2, 2), 2)


def test_rank_caps_take_ints_and_sequences_and_clip() -> None:
    assert rank_caps(None, (2, 2, 2), (3, 3, 3)) == (1, 6, 6, 1)
    assert rank_caps(4, (2, 2, 2), (3, 3, 3)) == (1, 4, 4, 1)
    assert rank_caps(np.int64(9), (2, 2, 2), (3, 3, 3)) == (1, 6, 6, 1)
    assert rank_caps((1, 2, 9, 1), (2, 2, 2), (3, 3, 3)) == (1, 2, 6, 1)
    assert rank_caps(np.array([1, 3, 1]), (2, 2), (3, 3)) == (1, 3, 1)


@pytest.mark.parametrize(
    "max_rank, message",
    [
        (2.5, "max_rank must be None, a positive integer or a sequence of d \\+ 1 = 3 positive integers, got 2.5"),
        (2.0, "max_rank must be None, a positive integer .*got 2.0"),
        (True, "max_rank must be None, a positive integer .*got True"),
        (0, "max_rank must be a positive integer, got 0"),
        ((1, 2.7, 1), r"max_rank\[1\] must be a positive integer, got 2.7"),
        ((1, True, 1), r"max_rank\[1\] must be a positive integer, got True"),
        ((1, 0, 1), r"max_rank\[1\] must be a positive integer, got 0"),
        ((1, 2), "max_rank must be an int or a sequence of length d \\+ 1 = 3"),
        ("2", "max_rank must be a sequence of positive integers"),
    ],
)
def test_bad_max_rank_is_refused_naming_it(max_rank, message) -> None:
    with pytest.raises(ValueError, match=message):
        rank_caps(max_rank, (2, 2), (3, 3))


def test_a_0d_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one axis.*got a 0-d input"):
        check_input_ndim(0, 6)
    check_input_ndim(1, 6)


def test_input_dtype_rule_names_both_dtypes() -> None:
    with pytest.raises(ValueError, match="input dtype float64 does not match the layer's dtype float32"):
        check_input_dtype(np.dtype("float64"), np.dtype("float32"))
    check_input_dtype(np.dtype("float32"), np.dtype("float32"))
