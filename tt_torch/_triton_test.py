"""The fused Triton kernel under Triton's interpreter (CPU tensors) against the float64 oracle: forward, gradients.

Float32 tolerance: errors at most ``FLOAT32_TOL`` times the largest magnitude of the checked array (a few dozen
float32 terms per step, about 1e-6 relative; 2e-5 leaves room). Skipped where Triton is not installed.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported: CPU tensors run interpreted

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from tt_common.reference import tt_matmul_reference, tt_to_dense
from tt_common.shapes import TTMatrixShape
from tt_torch import _triton
from tt_torch import functional as F

FLOAT32_TOL = 2e-5

# (in_modes, out_modes, rank, max_block_elements): real (unpadded) modes, a split of the output modes, one core.
CASES = [
    ((2, 3), (4, 5), 2, 2**14),
    ((2, 2, 3), (3, 2, 2), 3, 32),
    ((5,), (3,), 1, 2**14),
]


def _close(got: torch.Tensor, want: np.ndarray) -> None:
    want = np.asarray(want)
    np.testing.assert_allclose(got.detach().double().numpy(), want, rtol=0,
                               atol=FLOAT32_TOL * max(1.0, float(np.abs(want).max())))


def _problem(in_modes, out_modes, rank, seed=0, batch=5):
    shape = TTMatrixShape.create(in_modes, out_modes, rank)
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal(s) for s in shape.core_shapes]
    return (shape, cores, rng.standard_normal((batch, shape.in_features)), rng.standard_normal(shape.out_features),
            rng.standard_normal((batch, shape.out_features)))


def _f32(array: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(array, dtype=torch.float32, requires_grad=grad)


pytestmark = pytest.mark.skipif(not _triton.interpreted(), reason="TRITON_INTERPRET was not 1 when Triton loaded")


@pytest.mark.parametrize("in_modes, out_modes, rank, budget", CASES)
def test_forward_and_gradients_match_the_float64_reference(in_modes, out_modes, rank, budget) -> None:
    shape, cores, x, bias, g = _problem(in_modes, out_modes, rank)
    xt, bt = _f32(x, True), _f32(bias, True)
    ct = [_f32(c, True) for c in cores]
    y = _triton.fused_tt_linear(xt, ct, bt, shape, max_block_elements=budget)
    _close(y, tt_matmul_reference(x, cores, bias))
    y.backward(_f32(g))
    dense = tt_to_dense(cores)
    _close(xt.grad, g @ dense.T)
    _close(bt.grad, g.sum(0))
    c64 = [torch.tensor(c, requires_grad=True) for c in cores]  # float64 autograd of the dense product
    (torch.tensor(x) @ F.to_dense(F.TTMatrix(c64)) * torch.tensor(g)).sum().backward()
    for got, want in zip(ct, c64):
        _close(got.grad, want.grad.numpy())
    no_bias = _triton.fused_tt_linear(_f32(x), [c.detach() for c in ct], None, shape, max_block_elements=budget)
    _close(no_bias, tt_matmul_reference(x, cores))


def test_the_layer_forced_to_triton_matches_torch_and_auto_stays_torch_on_a_cpu() -> None:
    import tt_torch

    torch.manual_seed(0)
    layer = tt_torch.TTLinear((2, 3), (4, 2), 2, kernel="triton")
    x = torch.randn(2, 3, 6)
    want = tt_torch.functional.tt_linear(x, list(layer.cores), layer.bias, kernel="torch")
    _close(layer(x), want.detach().double().numpy())
    assert layer.round(max_rank=1).kernel == "triton"
    assert not F._fused_kernel("auto", layer.shape, 6, x)  # CPU tensors: torch's product, as before


def test_bad_arguments_raise_value_errors_naming_them() -> None:
    shape, cores, x, *_ = _problem((2, 3), (4, 5), 2)
    ct = [_f32(c) for c in cores]
    with pytest.raises(ValueError, match="kernel must be"):
        F.tt_linear(_f32(x), ct, kernel="pallas")
    with pytest.raises(ValueError, match="input's last dimension"):
        F.tt_linear(torch.ones(2, 5), ct, kernel="triton")
    with pytest.raises(ValueError, match="^x: the Triton kernel computes in float32 or bfloat16"):
        _triton.fused_tt_linear(torch.ones(2, 6, dtype=torch.float64), [c.double() for c in ct], None, shape)
    with pytest.raises(ValueError, match="^shape: one input row"):
        wide = TTMatrixShape.create((256, 256), (2, 2), 2)
        _triton.fused_tt_linear(torch.ones(2, 65536), [torch.ones(s) for s in wide.core_shapes], None, wide)


def test_the_kernel_compiles_for_hopper_without_a_gpu() -> None:
    """Triton compiles the kernel to sm_90 machine code here, as a GPU's first call would (the interpreter
    forgives block sizes and argument kinds that the compiler does not); in a process that did not set
    TRITON_INTERPRET, since this one interprets."""
    import subprocess
    import sys

    code = ("from tt_common.shapes import TTMatrixShape; from tt_torch import _triton; "
            "shape = TTMatrixShape.create((2, 3), (4, 5), 2); "
            "print(_triton.compile_for_cuda(shape, 100)['num_warps'], "
            "_triton.compile_for_cuda(shape, 100, bfloat16=True)['num_warps'])")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4", "4"]
