"""Balanced factorizations and FLOP-aware layer shapes."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.contraction import choose_direction, contraction_flops
from tt_common.factorize import _spread, factorizations, factorize, suggest_shape
from tt_common.shapes import TTMatrixShape


@given(st.integers(1, 5000), st.integers(1, 5))
def test_factorize_is_a_most_balanced_factorization(n, d) -> None:
    factors = factorize(n, d)
    assert len(factors) == d and math.prod(factors) == n and list(factors) == sorted(factors)
    assert all(_spread(factors) <= _spread(f) + 1e-12 for f in factorizations(n, d))


def test_factorizations_are_complete_for_a_small_case() -> None:
    assert sorted(factorizations(8, 3)) == [(1, 1, 8), (1, 2, 4), (2, 2, 2)]


def test_suggest_shape_minimizes_flops_among_its_candidates() -> None:
    shape = suggest_shape(784, 1024, d=4, ranks=4)
    assert (shape.in_features, shape.out_features, shape.d) == (784, 1024, 4)
    cost = sum(contraction_flops(shape, 1, choose_direction(shape)))
    for m in factorizations(784, 4)[:8]:
        for n in factorizations(1024, 4)[:8]:
            other = TTMatrixShape.create(m, n, 4)
            assert cost <= sum(contraction_flops(other, 1, choose_direction(other)))


@pytest.mark.parametrize("n, d", [(0, 2), (4, 0), (-3, 1)])
def test_bad_sizes(n, d) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        factorize(n, d)
