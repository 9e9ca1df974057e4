"""tt_torch.functional against the NumPy float64 oracle: the product, TT-SVD and rounding, autograd, dtypes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tt_common.reference import tt_matmul_reference, tt_round, tt_svd, tt_to_dense
from tt_common.shapes_test import tt_shapes
from tt_torch import TTLinear
from tt_torch import functional as F

FLOAT64_RTOL = 1e-12
seeds = st.integers(0, 2**32 - 1)


def _cores(shape, seed, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal(s), dtype=dtype) for s in shape.core_shapes]


@settings(max_examples=8)
@given(tt_shapes(max_d=4, max_mode=4, max_rank=3), seeds)
def test_tt_linear_matches_the_float64_reference(shape, seed) -> None:
    cores = _cores(shape, seed)
    rng = np.random.default_rng(seed + 1)
    x, bias = rng.standard_normal((3, shape.in_features)), rng.standard_normal(shape.out_features)
    y = F.tt_linear(torch.tensor(x), cores, torch.tensor(bias))
    np.testing.assert_allclose(y.numpy(), tt_matmul_reference(x, [c.numpy() for c in cores], bias),
                               rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL)
    np.testing.assert_allclose(F.to_dense(F.TTMatrix(cores)).numpy(), tt_to_dense([c.numpy() for c in cores]),
                               atol=1e-12)


@settings(max_examples=8)
@given(tt_shapes(max_d=4, max_mode=4, max_rank=3), st.sampled_from([None, 1, 2]), st.sampled_from([None, 0.3]),
       seeds)
def test_from_dense_and_round_equal_the_numpy_oracle(shape, max_rank, rtol, seed) -> None:
    """Same ranks, same matrix (float64); TT-SVD's cores are the oracle's too (one sign convention)."""
    dense = np.random.default_rng(seed).standard_normal((shape.in_features, shape.out_features))
    want = tt_svd(dense, shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol)
    got = F.from_dense(torch.tensor(dense), shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol)
    assert got.ranks == want.ranks and got.dtype == torch.float64
    np.testing.assert_allclose(F.to_dense(got).numpy(), tt_to_dense(want.cores), atol=1e-9 * np.linalg.norm(dense))
    for core, oracle in zip(got.cores, want.cores):  # random dense: distinct singular values, unique vectors
        np.testing.assert_allclose(core.numpy(), oracle, atol=1e-9 * max(1.0, np.linalg.norm(dense)))
    cores = [c.numpy() for c in _cores(shape, seed)]
    want = tt_round(cores, max_rank=max_rank, rtol=rtol)
    got = F.round(F.TTMatrix([torch.tensor(c) for c in cores]), max_rank=max_rank, rtol=rtol)
    assert got.ranks == want.ranks
    scale = np.linalg.norm(tt_to_dense(cores))
    np.testing.assert_allclose(F.to_dense(got).numpy(), tt_to_dense(want.cores), atol=1e-9 * scale)


def test_gradients_flow_through_the_tt_matrix() -> None:
    tt = F.from_dense(torch.randn(6, 4, dtype=torch.float64), (2, 3), (2, 2), max_rank=2)
    cores = [c.requires_grad_() for c in tt.cores]
    x = torch.randn(5, 6, dtype=torch.float64)
    grads = torch.autograd.grad((F.matmul(x, F.TTMatrix(cores)) ** 2).sum(), cores)
    dense_grad = 2 * x.T @ (x @ F.to_dense(tt)).detach()
    via_dense = torch.autograd.grad((F.to_dense(F.TTMatrix(cores)) * dense_grad).sum(), cores)
    for a, b in zip(grads, via_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_outputs_and_gradients_keep_their_dtype(dtype) -> None:
    tt = F.from_dense(torch.ones(6, 4, dtype=dtype), (2, 3), (2, 2))
    assert tt.dtype == dtype and F.round(tt, max_rank=1).dtype == dtype
    layer = TTLinear((2, 3), (2, 2), 2, dtype=dtype)
    x = torch.ones(5, 6, dtype=dtype, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.dtype == dtype and x.grad.dtype == dtype
    assert all(p.grad.dtype == dtype for p in layer.parameters())


def test_autocast_runs_the_products_in_bfloat16_and_keeps_float32_gradients() -> None:
    layer = TTLinear((2, 3), (2, 2), 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.ones(5, 6))
    assert y.dtype == torch.bfloat16  # as nn.Linear under autocast
    y.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in layer.parameters())


def test_bad_arguments_raise_before_any_work() -> None:
    cores = [torch.ones(1, 2, 3, 2), torch.ones(2, 4, 5, 1)]
    with pytest.raises(ValueError, match="last dimension is 7"):
        F.tt_linear(torch.ones(3, 7), cores)
    with pytest.raises(ValueError, match="bias must have shape"):
        F.tt_linear(torch.ones(3, 8), cores, torch.ones(14))
    with pytest.raises(ValueError, match="ranks do not chain"):
        F.TTMatrix([torch.ones(1, 2, 3, 2), torch.ones(3, 4, 5, 1)])
    with pytest.raises(ValueError, match="do not match"):
        F.TTMatrix(cores, F.TTMatrix([torch.ones(1, 8, 15, 1)]).shape)
    with pytest.raises(ValueError, match="dense matrix of shape"):
        F.from_dense(torch.ones(8, 14), (2, 4), (3, 5))
    with pytest.raises(ValueError, match="max_rank"):
        F.round(F.TTMatrix(cores), max_rank=0)
