"""The TT initializers give the dense matrix the variance of the named dense initializer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from tt_common import TTMatrixShape
from tt_common.init import TRUNCATED_NORMAL_STD, thesis_bias_bound, thesis_core_bounds, thesis_kernel_variance
from tt_common.reference import tt_to_dense
from tt_torch import TTLinear, initializers

SHAPE = TTMatrixShape.create((8, 8, 8), (4, 4, 4), 4)  # M = 512, N = 64
DRAWS = 64


@pytest.mark.parametrize(
    "init, variance",
    [
        (initializers.lecun_normal(), 1 / 512),
        (initializers.lecun_uniform(), 1 / 512),
        (initializers.he_normal(), 2 / 512),
        (initializers.he_uniform(), 2 / 512),
        (initializers.glorot_normal(), 2 / (512 + 64)),
        (initializers.glorot_uniform(), 2 / (512 + 64)),
        (initializers.variance_scaling(1.0, "fan_out", "truncated_normal"), 1 / 64),
    ],
)
def test_dense_matrix_has_the_initializer_variance(init, variance) -> None:
    """The mean of W's squared entries, averaged over 64 independent draws, is within 4 standard errors
    of the target (a z-test: a correct rule fails it with probability 6e-5 under the normal approximation,
    which the 64-draw average satisfies well; the draws are seeded, so the test is deterministic)."""
    generator = torch.Generator().manual_seed(7)
    per_draw = np.array(
        [np.mean(tt_to_dense([c.numpy() for c in init(generator, SHAPE, torch.float64)]) ** 2) for _ in range(DRAWS)]
    )
    mean, sem = per_draw.mean(), per_draw.std(ddof=1) / np.sqrt(DRAWS)
    assert sem < 0.1 * variance  # the test can tell a wrong rule (e.g. a factor 2 or 3) apart
    assert abs(mean - variance) < 4 * sem, (mean, variance, sem)


def test_distributions_are_the_named_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    big = TTMatrixShape.create((64,), (64,), 1)  # d = 1: the core is W itself
    (uniform,) = initializers.lecun_uniform()(generator, big, torch.float64)
    bound = np.sqrt(3 / 64)
    assert float(uniform.abs().max()) <= bound and float(uniform.abs().max()) > 0.99 * bound
    (truncated,) = initializers.variance_scaling(1.0, "fan_in", "truncated_normal")(generator, big, torch.float64)
    assert float(truncated.abs().max()) <= 2 * np.sqrt(1 / 64) / TRUNCATED_NORMAL_STD + 1e-12


def test_default_initializer_is_lecun_not_nn_linear() -> None:
    """The default gives W the variance 1 / M of Flax's default kernel; nn.Linear's is 1 / (3 M)."""
    torch.manual_seed(0)
    layer = TTLinear((8, 8, 8), (4, 4, 4), 4, dtype=torch.float64)
    dense = torch.nn.Linear(512, 64, dtype=torch.float64)
    assert abs(float(dense.weight.detach().square().mean()) * 512 * 3 - 1) < 0.02
    assert abs(float(layer.to_dense().detach().square().mean()) * 512 - 1) < 0.5  # one TT draw: looser


def test_initializers_validate_and_pickle() -> None:
    with pytest.raises(ValueError, match="mode"):
        initializers.variance_scaling(1.0, "fan_sideways")
    with pytest.raises(ValueError, match="scale must be positive"):
        initializers.variance_scaling(-1.0, "fan_in")
    with pytest.raises(ValueError, match="distribution"):
        initializers.variance_scaling(1.0, "fan_in", "cauchy")
    init = initializers.he_uniform()
    assert pickle.loads(pickle.dumps(init)) == init
    cores = init(None, SHAPE, torch.float16, "meta")
    assert [tuple(c.shape) for c in cores] == list(SHAPE.core_shapes) and cores[0].dtype == torch.float16


def test_thesis_per_core_init_draws_each_core_on_its_own_bounds() -> None:
    """Each core is uniform on ±1/sqrt(r_{k-1} r_k n_k), so W has thesis_kernel_variance, not 1 / M."""
    generator = torch.Generator().manual_seed(3)
    init = initializers.thesis_per_core()
    bounds = thesis_core_bounds(SHAPE)
    cores = init(generator, SHAPE, torch.float64)
    for core, bound in zip(cores, bounds):
        assert float(core.abs().max()) <= bound and float(core.abs().max()) > 0.95 * bound
    per_draw = np.array([np.mean(tt_to_dense([c.numpy() for c in init(generator, SHAPE, torch.float64)]) ** 2)
                         for _ in range(DRAWS)])
    variance, sem = thesis_kernel_variance(SHAPE), per_draw.std(ddof=1) / np.sqrt(DRAWS)
    assert abs(per_draw.mean() - variance) < 4 * sem and variance < 0.05 / 512  # 54x below LeCun's 1 / M here (std 7x)
    assert pickle.loads(pickle.dumps(init)) == init


def test_thesis_bias_is_uniform_on_the_first_cores_bound() -> None:
    layer = TTLinear((8, 8, 8), (4, 4, 4), 4, cores_init=initializers.thesis_per_core(),
                     bias_init=initializers.thesis_bias(SHAPE), dtype=torch.float64)
    bound = thesis_bias_bound(SHAPE)
    assert bound == 1 / np.sqrt(4 * 4)  # r_0 r_1 n_1 = 1 * 4 * 4
    assert float(layer.bias.detach().abs().max()) <= bound and float(layer.bias.detach().abs().max()) > 0.5 * bound
