"""The tensorize planner: layer selection, modes, ranks, budgets and their checks (NumPy float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tt_common import tensorize as T
from tt_common.reference import tt_svd, tt_to_dense
from tt_common.shapes import TTMatrixShape

MODES = ((4, 4, 4), (4, 4, 4))


def _tt_kernel(ranks, seed: int) -> np.ndarray:
    shape = TTMatrixShape.create(*MODES, ranks)
    rng = np.random.default_rng(seed)
    return tt_to_dense([rng.standard_normal(s) for s in shape.core_shapes])


def _objective(kernels, rank_tuples) -> float:
    """Sum over layers of the measured relative squared error of the float64 TT-SVD at these ranks."""
    total = 0.0
    for w, ranks in zip(kernels, rank_tuples):
        cores = tt_svd(w, *MODES, max_rank=ranks).cores
        total += T.relative_error(w, cores) ** 2
    return total


def test_the_budget_goes_where_the_singular_values_say_and_beats_uniform_ranks() -> None:
    """One layer is exactly of TT rank 2, the other a full-rank random matrix: uniform ranks waste the first's."""
    kernels = [_tt_kernel(2, 0), np.random.default_rng(1).standard_normal((64, 64))]
    uniform = TTMatrixShape.create(*MODES, 6)
    budget = 2 * uniform.num_params
    shapes = [TTMatrixShape.create(*MODES, 1)] * 2
    spectra = [T.unfolding_spectra(w, *MODES) for w in kernels]
    ranks = T.allocate_ranks(shapes, spectra, budget)
    assert ranks[0] == (1, 2, 2, 1)  # exactly its TT ranks: nothing spent on zero singular values
    assert sum(TTMatrixShape.create(*MODES, r).num_params for r in ranks) <= budget
    greedy, flat = _objective(kernels, ranks), _objective(kernels, [uniform.ranks] * 2)
    assert greedy < 0.9 * flat, (greedy, flat)


@given(st.integers(0, 2**32 - 1), st.integers(100, 3000), st.sampled_from([None, 3]))
def test_allocation_stays_in_budget_with_ranks_the_tt_svd_keeps(seed, budget, max_rank) -> None:
    rng = np.random.default_rng(seed)
    shapes = [TTMatrixShape.create((2, 3, 4), (3, 2, 2), 1), TTMatrixShape.create((4, 4), (2, 8), 1)]
    spectra = [T.unfolding_spectra(rng.standard_normal((s.in_features, s.out_features)), s.in_modes, s.out_modes)
               for s in shapes]
    minimum = sum(s.num_params for s in shapes)
    if budget < minimum:
        with pytest.raises(ValueError, match="max_params"):
            T.allocate_ranks(shapes, spectra, budget)
        return
    ranks = T.allocate_ranks(shapes, spectra, budget, max_rank=max_rank)
    assert sum(TTMatrixShape.create(s.in_modes, s.out_modes, r).num_params for s, r in zip(shapes, ranks)) <= budget
    for s, r in zip(shapes, ranks):
        assert T.svd_ranks(r, s.in_modes, s.out_modes) == r
        assert max_rank is None or max(r) <= max_rank
    # A larger budget never models a larger error.
    more = T.allocate_ranks(shapes, spectra, budget + 200, max_rank=max_rank)
    assert all(all(a >= b for a, b in zip(m, r)) for m, r in zip(more, ranks)) or \
        _bound(spectra, more) <= _bound(spectra, ranks) + 1e-12


def _bound(spectra, ranks) -> float:
    out = 0.0
    for s, r in zip(spectra, ranks):
        norm = np.sum(s[0] ** 2)
        out += sum(np.sum(sk[rk:] ** 2) for sk, rk in zip(s, r[1:-1])) / norm
    return out


def _layers():
    return [T.DenseLayer("enc.fc1", 64, 64, True, "float64"), T.DenseLayer("enc.fc2", 64, 64, True, "float64"),
            T.DenseLayer("head", 64, 10, False, "float64")]


def _kernels():
    rng = np.random.default_rng(0)
    data = {"enc.fc1": _tt_kernel(2, 3), "enc.fc2": rng.standard_normal((64, 64)),
            "head": rng.standard_normal((64, 10))}
    return data.__getitem__


def test_max_rank_plan_selection_and_notes() -> None:
    plans = T.plan(_layers(), _kernels(), max_rank=2, include="enc.*", d=3)
    assert [p.shape.ranks if p.shape else None for p in plans] == [(1, 2, 2, 1), (1, 2, 2, 1), None]
    assert plans[2].note == "not selected by include"
    plans = T.plan(_layers(), _kernels(), max_rank=2, include=["head", "enc.fc2"], min_size=1000)
    assert [p.note for p in plans][0] == "not selected by include"
    assert plans[2].note == "below min_size=1,000 weights"
    plans = T.plan(_layers(), _kernels(), max_rank=2, include=lambda name: name.endswith("1"))
    assert [p.shape is not None for p in plans] == [True, False, False]


def test_rtol_ranks_are_the_float64_tt_svds() -> None:
    kernels = _kernels()
    plans = T.plan(_layers()[:2], kernels, rtol=0.5, d=3)
    for p in plans:
        assert p.shape.ranks == tt_svd(kernels(p.layer.name), *MODES, rtol=0.5).ranks
    assert plans[0].shape.ranks == (1, 2, 2, 1)  # the exact TT rank 2 layer


def test_budget_plan_by_compression_and_max_params() -> None:
    layers, kernels = _layers()[:2], _kernels()
    plans = T.plan(layers, kernels, compression=8.0, d=3)
    total = sum(p.tt_params for p in plans)
    assert total <= sum(l.params for l in layers) / 8
    assert plans[0].shape.ranks == (1, 2, 2, 1) and plans[0].note == "budget compression=8.0"
    assert max(plans[1].shape.ranks) > 2
    assert T.plan(layers, kernels, max_params=total, d=3) == [
        T.LayerPlan(p.layer, p.shape, f"budget max_params={total:,}") for p in plans]


def test_a_large_prime_is_skipped_with_the_reason_or_padded() -> None:
    prime = [T.DenseLayer("fc", 1021, 256, True, "float32")]
    with pytest.warns(UserWarning, match="no dense layer is replaced"):
        plans = T.plan(prime, None, max_rank=4)
    assert plans[0].shape is None and "factors badly" in plans[0].note and "1021" in plans[0].note
    padded = T.plan(prime, None, max_rank=4, pad=True)[0]
    assert padded.padded and padded.shape.in_features == 1024 and "zero-padded to 1024 -> 256" in padded.note
    assert T.plan(prime, None, max_rank=4, modes={"fc": ((8, 8, 16), (4, 8, 8))}, pad=True)[0].shape.d == 3


def test_layers_that_cannot_gain_stay_dense_with_the_reason() -> None:
    plans = T.plan([T.DenseLayer("tiny", 4, 4, True, "float32"), T.DenseLayer("big", 256, 256, True, "float32")],
                   None, max_rank=4)
    assert plans[0].shape is None and plans[0].note.startswith("cannot gain: a TT of ranks 1,4,1 holds")
    assert plans[1].shape is not None


def test_auto_d_and_modes_helpers() -> None:
    assert T.auto_d(1024, 1024) == 3 and T.auto_d(4096, 4096) == 4
    assert T.choose_modes(4096, 4096, d=4) == ((8, 8, 8, 8), (8, 8, 8, 8))
    assert T.padded_size(67, 2) == 70  # 7 x 10
    with pytest.raises(ValueError, match="both in_modes and out_modes"):
        T.default_modes(4, 4, (2, 2), None, None, 2)
    with pytest.raises(ValueError, match="modes or d"):
        T.default_modes(4, 4, (2, 2), (2, 2), 2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give max_rank, rtol, compression or max_params"),
    ({"max_rank": 0}, "max_rank must be a positive integer"),
    ({"max_rank": 2.0}, "max_rank must be a positive integer"),
    ({"rtol": -0.1}, "rtol must be"),
    ({"compression": 0.5}, "compression must be"),
    ({"compression": 2.0, "max_params": 100}, "not both"),
    ({"rtol": 0.1, "max_params": 100}, "give one"),
    ({"max_rank": 2, "min_size": -1}, "min_size"),
    ({"max_rank": 2, "d": 0}, "d must be"),
    ({"max_rank": 2, "include": 3}, "include must be"),
    ({"max_rank": 2, "include": "nothing*"}, r"include='nothing\*' matches no dense layer"),
    ({"max_rank": 2, "modes": {"nope": ((8, 8), (8, 8))}}, "modes names 'nope', which is no dense layer"),
    ({"max_rank": 2, "modes": {"head": ((8, 8), (2, 5))}, "include": "enc.*"}, "which include does not select"),
    ({"max_rank": 2, "modes": {"head": ((8, 4), (2, 5))}}, r"modes\['head'\].*multiply to 32 -> 10"),
    ({"max_params": 10}, r"max_params=10 is below the smallest TT of the layers to tensorize: [\d,]+ parameters"),
    ({"compression": 1e6}, r"compression=1000000.0 \(max_params=0\) is below the smallest TT"),
])
def test_bad_arguments_name_themselves(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        T.plan(_layers(), _kernels(), **kwargs)


def test_bad_layers_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="model has no dense layer"):
        T.plan([], None, max_rank=2)
    shared = T.DenseLayer("a", 64, 64, True, "float32", paths=("a", "b.c"))
    with pytest.raises(ValueError, match=r"dense layer 'a' is shared: the model holds it at \['a', 'b.c'\]"):
        T.plan([shared], None, max_rank=2)
    T.plan([shared, T.DenseLayer("x", 64, 64, True, "float32")], None, max_rank=2, include="x")  # not selected
    ints = T.DenseLayer("q", 64, 64, True, "int8", floating=False)
    with pytest.raises(ValueError, match="dense layer 'q' has int8 weights"):
        T.plan([ints], None, max_rank=2)


def test_report_table_and_totals() -> None:
    plans = T.plan(_layers(), _kernels(), max_rank=2, include="enc.*", d=3)
    kernels = _kernels()
    rows = []
    for p in plans:
        if p.shape is None:
            rows.append(T.dense_row(p))
            continue
        cores = tt_svd(kernels(p.layer.name), p.shape.in_modes, p.shape.out_modes, max_rank=p.shape.ranks).cores
        rows.append(T.tt_row(p, p.shape, error=T.relative_error(kernels(p.layer.name), cores), direction="ltr",
                             groups=(1, 1, 1)))
    report = T.TensorizeReport(tuple(rows), other_params=7, batch_size=32)
    assert report.tensorized == ["enc.fc1", "enc.fc2"]
    assert report["enc.fc1"].error < 1e-12 and 0.5 < report["enc.fc2"].error < 1
    assert report.params_before == 2 * (64 * 64 + 64) + 640 + 7
    assert report.params_after == 2 * (16 * 2 + 2 * 16 * 2 + 2 * 16 + 64) + 640 + 7
    text = str(report)
    assert "| enc.fc1 | tt | 64 -> 64 | 4x4x4 | 4x4x4 | 1,2,2,1 | 4,160 -> 192 | 21.7 |" in text
    assert text.splitlines()[-1].startswith("| total | 2 of 3 layers |")
    assert math.isclose(report.ratio, report.params_before / report.params_after)
