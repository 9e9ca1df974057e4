"""TT-SVD and TT rounding: exact on known TT ranks, within their error bound otherwise."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.reference import tt_round, tt_svd, tt_to_dense
from tt_common.shapes import TTMatrixShape
from tt_common.shapes_test import tt_shapes

seeds = st.integers(0, 2**32 - 1)


def _cores(shape: TTMatrixShape, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shape.core_shapes]


@given(tt_shapes(max_d=4, max_mode=4, max_rank=4), seeds)
def test_tt_svd_recovers_a_matrix_of_known_tt_rank(shape, seed) -> None:
    dense = tt_to_dense(_cores(shape, seed))
    found = tt_svd(dense, shape.in_modes, shape.out_modes, rtol=1e-10)
    assert all(a <= b for a, b in zip(found.ranks, shape.ranks))  # random cores: equal almost surely
    np.testing.assert_allclose(tt_to_dense(found.cores), dense, atol=1e-8 * np.linalg.norm(dense))


@given(tt_shapes(max_d=4, max_mode=4, max_rank=3), seeds)
def test_exact_tt_svd_without_caps(shape, seed) -> None:
    dense = np.random.default_rng(seed).standard_normal((shape.in_features, shape.out_features))
    found = tt_svd(dense, shape.in_modes, shape.out_modes)
    assert found.error_bound <= 1e-12 * max(np.linalg.norm(dense), 1.0)
    np.testing.assert_allclose(tt_to_dense(found.cores), dense, atol=1e-10 * np.linalg.norm(dense))


@given(st.integers(1, 8), st.sampled_from([None, 0.05, 0.3, 0.9]), seeds)
def test_truncated_tt_svd_stays_within_its_bound(max_rank, rtol, seed) -> None:
    in_modes, out_modes = (2, 3, 4), (3, 2, 2)
    dense = np.random.default_rng(seed).standard_normal((24, 12))
    found = tt_svd(dense, in_modes, out_modes, max_rank=max_rank, rtol=rtol)
    error = np.linalg.norm(tt_to_dense(found.cores) - dense)
    assert max(found.ranks) <= max_rank
    assert error <= found.error_bound * (1 + 1e-9) + 1e-12
    if rtol is not None and max_rank >= 8:  # max_ranks = (1, 6, 8, 1): caps not binding, the rtol guarantee holds
        assert error <= rtol * np.linalg.norm(dense) * (1 + 1e-9)


@pytest.mark.parametrize("rtol", [1e-3, 0.1, 0.5])
def test_rtol_guarantee(rtol) -> None:
    dense = np.random.default_rng(1).standard_normal((64, 27))
    found = tt_svd(dense, (4, 4, 4), (3, 3, 3), rtol=rtol)
    assert np.linalg.norm(tt_to_dense(found.cores) - dense) <= rtol * np.linalg.norm(dense)
    assert found.error_bound <= rtol * np.linalg.norm(dense) * (1 + 1e-12)


@given(tt_shapes(max_d=4, max_mode=3, max_rank=3), seeds)
def test_rounding_a_redundant_tt_is_exact_and_lowers_ranks(shape, seed) -> None:
    cores = _cores(shape, seed)
    # The sum of a TT with itself written with doubled ranks, halved: same matrix, ranks 2r.
    doubled = []
    for k, c in enumerate(cores):
        if shape.d == 1:
            doubled.append(c)
        elif k == 0:
            doubled.append(np.concatenate([c, c], axis=3) / 2)
        elif k == shape.d - 1:
            doubled.append(np.concatenate([c, c], axis=0))
        else:
            z = np.zeros_like(c)
            top = np.concatenate([c, z], axis=3)
            bottom = np.concatenate([z, c], axis=3)
            doubled.append(np.concatenate([top, bottom], axis=0))
    rounded = tt_round(doubled, rtol=1e-10)
    assert all(a <= b for a, b in zip(rounded.ranks, shape.ranks))
    dense = tt_to_dense(cores)
    np.testing.assert_allclose(tt_to_dense(rounded.cores), dense, atol=1e-8 * np.linalg.norm(dense))


@given(st.integers(1, 4), seeds)
def test_rounding_with_rank_cap_stays_within_its_bound(max_rank, seed) -> None:
    shape = TTMatrixShape.create((2, 3, 2, 2), (2, 2, 3, 2), 6)
    cores = _cores(shape, seed)
    rounded = tt_round(cores, max_rank=max_rank)
    error = np.linalg.norm(tt_to_dense(rounded.cores) - tt_to_dense(cores))
    assert max(rounded.ranks) <= max_rank
    assert error <= rounded.error_bound * (1 + 1e-9) + 1e-12


def test_bad_arguments() -> None:
    dense = np.ones((6, 4))
    with pytest.raises(ValueError, match=r"dense matrix of shape \(6, 4\)"):
        tt_svd(dense, (2, 2), (2, 3))
    with pytest.raises(ValueError, match="max_rank"):
        tt_svd(dense, (2, 3), (2, 2), max_rank=0)
    with pytest.raises(ValueError, match="max_rank"):
        tt_svd(dense, (2, 3), (2, 2), max_rank=(1, 2))
    with pytest.raises(ValueError, match="rtol"):
        tt_svd(dense, (2, 3), (2, 2), rtol=-1.0)
    with pytest.raises(ValueError, match="does not chain"):
        tt_round([np.ones((1, 2, 2, 3)), np.ones((2, 2, 2, 1))])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_tt_svd_refuses_a_matrix_with_nan_or_inf_before_the_svd(bad) -> None:
    kernel = np.ones((4, 9))
    kernel[1, 2] = bad
    with pytest.raises(ValueError, match="kernel has 1 NaN or infinite entries"):
        tt_svd(kernel, (2, 2), (3, 3))


def test_tt_round_refuses_cores_with_nan() -> None:
    cores = [np.ones((1, 2, 3, 2)), np.ones((2, 2, 3, 1))]
    cores[1][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"cores\[1\] has 1 NaN or infinite entries"):
        tt_round(cores, max_rank=1)


@pytest.mark.parametrize("max_rank", [2.5, True, (1, 2.7, 1)])
def test_truncations_refuse_a_float_or_bool_max_rank(max_rank) -> None:
    kernel = np.ones((4, 9))
    with pytest.raises(ValueError, match="max_rank"):
        tt_svd(kernel, (2, 2), (3, 3), max_rank=max_rank)
    with pytest.raises(ValueError, match="max_rank"):
        tt_round(tt_svd(kernel, (2, 2), (3, 3)).cores, max_rank=max_rank)


def _largest_entries_are_positive(cores) -> bool:
    """The sign convention on every core but the last: each column of the left unfolding (r m n, r')."""
    for core in cores[:-1]:
        u = core.reshape(-1, core.shape[3])
        if not (u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])] > 0).all():
            return False
    return True


@given(tt_shapes(max_d=4, max_mode=4, max_rank=3), st.sampled_from([None, 1, 2]), seeds)
def test_sign_convention_largest_entry_of_each_left_vector_is_positive(shape, max_rank, seed) -> None:
    dense = np.random.default_rng(seed).standard_normal((shape.in_features, shape.out_features))
    found = tt_svd(dense, shape.in_modes, shape.out_modes, max_rank=max_rank)
    assert _largest_entries_are_positive(found.cores)
    assert _largest_entries_are_positive(tt_round(_cores(shape, seed), max_rank=max_rank).cores)
    # Flipping the kernel's sign flips the last core only: the decomposition is a function of the matrix.
    flipped = tt_svd(-dense, shape.in_modes, shape.out_modes, max_rank=max_rank)
    for k, (a, b) in enumerate(zip(found.cores, flipped.cores)):
        np.testing.assert_allclose(b, -a if k == shape.d - 1 else a, atol=1e-9 * max(1.0, np.linalg.norm(dense)))
