"""The JAX TT initializers: the mirror of tt_torch/initializers_test.py for the thesis's per-core init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tt_common import TTMatrixShape
from tt_common.init import thesis_bias_bound, thesis_core_bounds, thesis_kernel_variance
from tt_common.reference import tt_to_dense
from tt_jax import TTLinear, initializers

SHAPE = TTMatrixShape.create((8, 8, 8), (4, 4, 4), 4)
DRAWS = 64


def test_thesis_per_core_init_draws_each_core_on_its_own_bounds() -> None:
    init = initializers.thesis_per_core()
    keys = jax.random.split(jax.random.key(3), DRAWS)
    draws = [init(k, SHAPE, jnp.float64) for k in keys]
    for core, bound in zip(draws[0], thesis_core_bounds(SHAPE)):
        assert float(jnp.abs(core).max()) <= bound and float(jnp.abs(core).max()) > 0.95 * bound
    per_draw = np.array([np.mean(tt_to_dense([np.asarray(c) for c in cores]) ** 2) for cores in draws])
    variance, sem = thesis_kernel_variance(SHAPE), per_draw.std(ddof=1) / np.sqrt(DRAWS)
    assert abs(per_draw.mean() - variance) < 4 * sem and variance < 0.05 / 512


def test_thesis_bias_is_uniform_on_the_first_cores_bound() -> None:
    layer = TTLinear((8, 8, 8), (4, 4, 4), 4, cores_init=initializers.thesis_per_core(),
                     bias_init=initializers.thesis_bias(SHAPE), param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    bound = thesis_bias_bound(SHAPE)
    assert float(jnp.abs(layer.bias[...]).max()) <= bound and float(jnp.abs(layer.bias[...]).max()) > 0.5 * bound
