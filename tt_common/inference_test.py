"""The inference-form model (tt_common.contraction.choose_inference_form) and its report."""

import pytest

from tt_common.contraction import (choose_inference_form, dense_call_cost, layer_plan, plan_cost, planning_batch,
                                   reconstruction_flops)
from tt_common.report import format_inference_report
from tt_common.shapes import TTMatrixShape

WIDE = TTMatrixShape.create((32, 32), (32, 32), 32)  # dense wins from batch 32 in the model
THIN = TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)  # 784 -> 262144: the cores win


@pytest.mark.parametrize("batch", [1, 32, 1000])
def test_auto_takes_the_cheaper_modelled_form(batch: int) -> None:
    for shape in (WIDE, THIN):
        choice = choose_inference_form(shape, batch, max_dense_bytes=2**40)
        cores = plan_cost(shape, batch, *layer_plan(shape, batch))
        assert choice.cores_cost == cores and choice.dense_cost == dense_call_cost(shape, batch)
        assert choice.form == ("dense" if choice.dense_cost < cores else "cores")
        assert choice.reconstruction_flops == reconstruction_flops(shape) and choice.batch_size == batch


def test_memory_bound_and_forced_forms() -> None:
    assert choose_inference_form(WIDE, 32).form == "dense"
    capped = choose_inference_form(WIDE, 32, max_dense_bytes=4 * 2**20 - 1)
    assert capped.form == "cores" and "max_dense_bytes" in capped.reason
    forced = choose_inference_form(THIN, 1, "dense")  # forcing ignores the memory bound
    assert forced.form == "dense" and forced.reason == "forced by the user (form='dense')"
    assert forced.dense_bytes == 784 * 262144 * 4
    assert choose_inference_form(WIDE, 32, itemsize=8).dense_bytes == 1024 * 1024 * 8


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": 2.0}, "batch_size must be a positive integer"),
    ({"batch_size": True}, "batch_size must be a positive integer"),
    ({"batch_size": 2, "form": "sparse"}, "form must be 'auto', 'cores' or 'dense'"),
    ({"batch_size": 2, "itemsize": 0}, "itemsize must be a positive integer"),
    ({"batch_size": 2, "max_dense_bytes": -1}, "max_dense_bytes must be a non-negative integer"),
])
def test_bad_input_names_the_problem(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choose_inference_form(WIDE, **kwargs)


def test_planning_batch_of_symbolic_dims() -> None:
    class Symbol:  # neither int nor comparable, like a JAX symbolic dimension
        pass

    assert planning_batch((3, 5)) == 15
    assert planning_batch((Symbol(), 5), symbolic=7) == 7


def test_report_rows() -> None:
    text = format_inference_report([("a", choose_inference_form(WIDE, 32)), ("b", None)])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| a | dense | 32 |") and "4.0 MiB" in lines[2]
    assert lines[3].startswith("| b | cores | - |")
