"""Tests of shape validation, rank normalization and parameter counts."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.shapes import TTMatrixShape, check_input_features, max_ranks, normalize_ranks


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
