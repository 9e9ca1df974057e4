"""The core-by-core product against the dense reference, and its FLOP accounting."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.contraction import broadcast_core_elements, choose_direction, contraction_flops, flop_table, tt_matmul
from tt_common.reference import tt_to_dense
from tt_common.shapes import TTMatrixShape
from tt_common.shapes_test import tt_shapes

batch_shapes = st.sampled_from([(), (1,), (3,), (2, 3), (2, 1, 3)])


def _random_cores(shape: TTMatrixShape, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in shape.core_shapes]


@given(tt_shapes(), batch_shapes, st.sampled_from(["ltr", "rtl"]), st.integers(0, 2**32 - 1))
def test_product_equals_dense_reference(shape, batch_shape, direction, seed) -> None:
    cores = _random_cores(shape, seed)
    x = np.random.default_rng(seed + 1).standard_normal(batch_shape + (shape.in_features,))
    want = x @ tt_to_dense(cores)
    got = tt_matmul(x, cores, shape, direction)
    assert got.shape == batch_shape + (shape.out_features,)
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11 * np.abs(want).max(initial=1.0))


def test_dense_reference_follows_the_index_convention() -> None:
    """W[(i_1..i_d), (j_1..j_d)] = G_1[:, i_1, j_1, :] @ ... @ G_d[:, i_d, j_d, :], row-major."""
    shape = TTMatrixShape.create((2, 3, 2), (3, 1, 2), (1, 2, 3, 1))
    cores = _random_cores(shape, 0)
    dense = tt_to_dense(cores)
    for i in np.ndindex(*shape.in_modes):
        for j in np.ndindex(*shape.out_modes):
            product = np.eye(1)
            for k, core in enumerate(cores):
                product = product @ core[:, i[k], j[k], :]
            row = np.ravel_multi_index(i, shape.in_modes)
            col = np.ravel_multi_index(j, shape.out_modes)
            assert dense[row, col] == pytest.approx(product[0, 0], rel=1e-12)


@given(tt_shapes(max_d=5), st.integers(1, 5), st.sampled_from(["ltr", "rtl"]))
def test_flop_formula_counts_the_matmuls_actually_run(shape, batch, direction) -> None:
    counted = []

    def counting_matmul(a, b):
        out = a @ b  # 2-D, or a broadcast batched product: count every matrix of the batch
        counted.append(2 * math.prod(out.shape[:-2]) * a.shape[-2] * a.shape[-1] * b.shape[-1])
        return out

    x = np.ones((batch, shape.in_features))
    tt_matmul(x, _random_cores(shape, 0), shape, direction, matmul=counting_matmul)
    assert counted == contraction_flops(shape, batch, direction)


@given(tt_shapes())
def test_chosen_direction_is_the_cheaper(shape) -> None:
    table = flop_table(shape, 7)
    assert table[choose_direction(shape)] == min(table["ltr"], table["rtl"])
    assert table["dense_matmul"] == 2 * 7 * shape.in_features * shape.out_features


def test_thesis_first_layer_contracts_right_to_left() -> None:
    shape = TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)
    table = flop_table(shape, 100)
    assert choose_direction(shape) == "rtl"
    assert table["rtl"] < table["ltr"] < table["dense_matmul"]
    # By hand, 2 r_{k-1} r_k (m_1..m_k) (n_k..n_d) per example, core 5 first:
    assert contraction_flops(shape, 1, "rtl") == [
        2 * 4 * 1 * 784 * 8,
        2 * 4 * 4 * 112 * 128,
        2 * 4 * 4 * 28 * 2048,
        2 * 4 * 4 * 4 * 32768,
        2 * 1 * 4 * 2 * 262144,
    ]
    assert math.isclose(table["rtl"] / table["dense_matmul"], 0.0261, rel_tol=1e-3)


def test_bad_input_size_and_direction() -> None:
    shape = TTMatrixShape.create((2, 3), (4, 5), 2)
    cores = _random_cores(shape, 0)
    with pytest.raises(ValueError, match="last dimension is 5"):
        tt_matmul(np.ones((3, 5)), cores, shape)
    for groups in (None, "auto"):
        with pytest.raises(ValueError, match="direction must be 'ltr' or 'rtl', got 'up'"):
            tt_matmul(np.ones((3, 6)), cores, shape, "up", groups=groups)
    from tt_common.contraction import plan_groups

    with pytest.raises(ValueError, match="direction must be 'ltr' or 'rtl', got 'up'"):
        plan_groups(shape, 3, "up")


@given(tt_shapes(), batch_shapes, st.sampled_from(["ltr", "rtl", None]), st.integers(0, 2**32 - 1), st.data())
def test_merged_product_equals_dense_reference(shape, batch_shape, direction, seed, data) -> None:
    from tt_common.contraction import _groupings

    groups = data.draw(st.sampled_from([*_groupings(shape.d), "auto"]))
    cores = _random_cores(shape, seed)
    x = np.random.default_rng(seed + 1).standard_normal(batch_shape + (shape.in_features,))
    want = x @ tt_to_dense(cores)
    got = tt_matmul(x, cores, shape, direction, groups=groups)
    assert got.shape == batch_shape + (shape.out_features,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max(initial=1.0))


@given(tt_shapes(), st.sampled_from([1, 7, 100, 1000]), st.sampled_from([None, "ltr", "rtl"]))
def test_plan_groups_never_costs_more_than_core_by_core(shape, batch, fixed) -> None:
    from tt_common.contraction import merged_shape, plan_cost, plan_groups

    groups, direction = plan_groups(shape, batch, fixed)
    assert sum(groups) == shape.d and direction in ((fixed,) if fixed else ("ltr", "rtl"))
    largest_own_core = max(map(math.prod, shape.core_shapes))
    assert max(map(math.prod, merged_shape(shape, groups).core_shapes)) <= max(2**16, largest_own_core)
    unmerged = min(plan_cost(shape, batch, (1,) * shape.d, d) for d in ((fixed,) if fixed else ("ltr", "rtl")))
    assert plan_cost(shape, batch, groups, direction) <= unmerged


@given(tt_shapes(), st.sampled_from([0, 1, 100]), st.sampled_from([None, "ltr", "rtl"]), st.sampled_from([0.0, 1e5]))
def test_layer_plan_is_the_cheapest_merge_in_the_layers_direction(shape, batch, direction, product_flops) -> None:
    from tt_common.contraction import _plans, choose_direction, layer_plan, plan_cost

    groups, got_direction = layer_plan(shape, batch, direction, product_flops=product_flops)
    assert got_direction == (direction or choose_direction(shape))

    def cost(plan) -> float:  # a batch of 0 (an empty input) is planned as a batch of 1
        return plan_cost(shape, max(batch, 1), *plan, product_flops=product_flops)

    assert all(cost((groups, got_direction)) <= cost(plan) for plan in _plans(shape, 2**16) if plan[1] == got_direction)


def test_a_fixed_direction_gets_the_best_merge_in_that_direction() -> None:
    # tt-tt-d6's first layer contracts right to left (choose_direction); the best merge overall, (3, 1, 2) left to
    # right, models at 2.3x the cost of (2, 1, 3) when run right to left. The layers used to run exactly that.
    from unittest import mock

    import tt_common.contraction as contraction

    shape = TTMatrixShape.create((2, 2, 7, 7, 2, 2), (8, 8, 8, 8, 8, 8), 4)
    assert contraction.choose_direction(shape) == "rtl"
    assert contraction.plan_groups(shape, 100) == ((3, 1, 2), "ltr")
    assert contraction.plan_groups(shape, 100, "rtl") == ((2, 1, 3), "rtl")
    assert contraction.plan_cost(shape, 100, (3, 1, 2), "rtl") > 2 * contraction.plan_cost(shape, 100, (2, 1, 3), "rtl")
    cores = _random_cores(shape, 0)
    x = np.random.default_rng(1).standard_normal((100, shape.in_features))
    with mock.patch.object(contraction, "merge_cores", wraps=contraction.merge_cores) as merge:
        got = tt_matmul(x, cores, shape, "rtl", groups="auto")
    assert merge.call_args.args[1] == (2, 1, 3)
    np.testing.assert_allclose(got, x @ tt_to_dense(cores), rtol=1e-10, atol=1e-10 * np.abs(got).max())


def test_plan_groups_takes_layers_whose_own_cores_exceed_the_merge_limit() -> None:
    from tt_common.contraction import plan_groups

    shape = TTMatrixShape.create((32, 32), (128, 128), 32)  # each core 131,072 elements, above max_core_size
    assert plan_groups(shape, 100) == ((1, 1), "ltr")
    cores = _random_cores(shape, 0)
    x = np.random.default_rng(1).standard_normal((2, shape.in_features))
    np.testing.assert_allclose(tt_matmul(x, cores, shape, groups="auto"), x @ tt_to_dense(cores), rtol=1e-10)


def test_ties_go_to_the_direction_with_smaller_broadcast_cores() -> None:
    # (7, 16, 7) -> (64, 64, 64): the same FLOPs both ways; left to right, the middle core is broadcast over
    # 64 output indices per example, right to left over 7 (measured: 2.4x slower training steps in torch).
    shape = TTMatrixShape.create((7, 16, 7), (64, 64, 64), 4)
    assert sum(contraction_flops(shape, 1, "ltr")) == sum(contraction_flops(shape, 1, "rtl"))
    # outer x a x c of each step with an inner axis: ltr cores 1 and 2, rtl cores 2 and 1 (core 3 is a plain dot)
    assert broadcast_core_elements(shape, "ltr") == 1 * (64 * 4) * (1 * 7) + 64 * (64 * 4) * (4 * 16)
    assert broadcast_core_elements(shape, "rtl") == 7 * (4 * 64) * (16 * 4) + 1 * (1 * 64) * (7 * 4)
    assert choose_direction(shape) == "rtl"
    # A full tie (both measures equal) stays left to right.
    assert choose_direction(TTMatrixShape.create((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), 8)) == "ltr"


@given(tt_shapes(), st.sampled_from([1, 3]), st.sampled_from(["ltr", "rtl"]))
def test_small_products_counts_the_slices_of_the_batched_products(shape, batch, direction) -> None:
    from tt_common.contraction import small_products

    slices = []

    def counting_matmul(a, b):
        if a.ndim == 3:
            slices.append(b.shape[0])
        return a @ b

    x = np.ones((batch, shape.in_features))
    tt_matmul(x, _random_cores(shape, 0), shape, direction, matmul=counting_matmul)
    assert small_products(shape, batch, direction) == sum(slices)


def test_product_flops_adds_a_cost_per_small_product() -> None:
    from tt_common.contraction import merged_shape, plan_cost, plan_groups, small_products

    xla_cpu_product_flops = 1e5  # tt_jax._xla_cpu.XLA_CPU_PRODUCT_FLOPS (tt_common's tests import no JAX)

    shape = TTMatrixShape.create((2, 7, 8, 8, 7, 4), (4, 4, 4, 4, 4, 4), 4)  # Novikov et al.'s 25088 -> 4096
    plain, costed = (plan_cost(shape, 100, (2, 1, 1, 2), "rtl", product_flops=p) for p in (0.0, 1e5))
    assert small_products(merged_shape(shape, (2, 1, 1, 2)), 100, "rtl") == 12_700
    assert costed - plain == pytest.approx(1e5 * 12_700)
    # The plan without the term, and the one XLA:CPU trains 1.33-1.37x faster (batches 100 and 1000).
    assert plan_groups(shape, 100, "rtl") == ((2, 1, 1, 2), "rtl")
    assert plan_groups(shape, 100, "rtl", product_flops=xla_cpu_product_flops) == ((2, 2, 2), "rtl")
