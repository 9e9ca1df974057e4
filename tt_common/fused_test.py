"""The fused kernels' plan (tt_common.fused): steps that chain, blocks that fit, refusals that name the argument."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common.fused import fused_plan, fused_traffic_bytes, pow2
from tt_common.shapes import TTMatrixShape
from tt_common.shapes_test import tt_shapes


@given(tt_shapes(max_d=5, max_mode=9, max_rank=5), st.integers(1, 300), st.sampled_from([64, 2**10, 2**14]),
       st.booleans())
def test_a_plan_chains_its_steps_and_fits_its_block(shape, batch, budget, pad) -> None:
    try:
        plan = fused_plan(shape, batch, max_block_elements=budget, pad=pad)
    except ValueError as e:
        assert str(e).startswith("shape: ")
        assert math.prod(pow2(m) if pad else m for m in shape.in_modes) > budget or "no split" in str(e)
        return
    grow = pow2 if pad else int
    assert plan.in_modes == tuple(map(grow, shape.in_modes)) and plan.out_modes == tuple(map(grow, shape.out_modes))
    assert plan.ranks[0] == plan.ranks[-1] == 1
    assert plan.steps[0].state_in == plan.in_features
    for before, after in zip(plan.steps, plan.steps[1:]):
        assert before.state_out == after.state_in
    assert plan.steps[-1].state_out == plan.tile and plan.tile * plan.programs_per_block == plan.out_features
    assert plan.block_rows * plan.max_state <= budget
    assert plan.block_rows & (plan.block_rows - 1) == 0 and plan.block_rows <= pow2(batch)
    assert [s.sliced for s in plan.steps] == [k < plan.split for k in range(shape.d)]
    assert plan.num_blocks(batch) * plan.block_rows >= batch


def test_the_benchmark_layers_that_fit_and_the_one_that_does_not() -> None:
    wide_out = TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)  # 784 -> 262144
    plan = fused_plan(wide_out, 1000)
    assert plan.split == 3 and plan.padded and plan.max_state * plan.block_rows <= 2**14
    assert fused_plan(wide_out, 1000, pad=False).in_modes == (2, 2, 7, 4, 7)
    with pytest.raises(ValueError, match="^shape: one input row of 262144"):
        fused_plan(TTMatrixShape.create((8, 16, 16, 16, 8), (5, 2, 1, 1, 1), 4), 100)
    with pytest.raises(ValueError, match="^batch_size must be a positive integer"):
        fused_plan(wide_out, 0)
    with pytest.raises(ValueError, match="^max_block_elements"):
        fused_plan(wide_out, 1, max_block_elements=True)


def test_the_fused_traffic_is_the_input_the_output_and_the_parameters() -> None:
    shape = TTMatrixShape.create((4, 4), (2, 8), 3)
    params = shape.num_params + shape.out_features
    assert fused_traffic_bytes(shape, 7, 2) == 2 * (7 * (16 + 16) + params)
