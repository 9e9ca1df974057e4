"""experiments.nnx_layers.BatchNorm against nnx.BatchNorm: outputs, running statistics and gradients agree."""

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from experiments import nnx_layers

FLOAT64_RTOL = 1e-12
FLOAT32_RTOL = 1e-5  # different summation order (matrix products vs XLA reductions)


def _pair(features: int, dtype, **kwargs):
    make = lambda cls: cls(features, momentum=0.9, param_dtype=dtype, rngs=nnx.Rngs(0), **kwargs)  # noqa: E731
    ours, theirs = make(nnx_layers.BatchNorm), make(nnx.BatchNorm)
    for norm in (ours, theirs):  # non-trivial scale and bias
        norm.scale.set_value(jnp.linspace(0.5, 2.0, features, dtype=dtype))
        norm.bias.set_value(jnp.linspace(-1.0, 1.0, features, dtype=dtype))
    return ours, theirs


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, FLOAT64_RTOL), (jnp.float32, FLOAT32_RTOL)])
@pytest.mark.parametrize("batch_shape", [(6,), (2, 3)])
def test_matches_nnx_batch_norm(dtype, rtol, batch_shape) -> None:
    ours, theirs = _pair(5, dtype)
    x = 3 + 2 * jax.random.normal(jax.random.key(0), (*batch_shape, 5), dtype)
    g = jax.random.normal(jax.random.key(1), (*batch_shape, 5), dtype)

    @nnx.jit
    def train_step(norm, x):
        def loss(norm, x):
            return jnp.vdot(jnp.tanh(norm(x, use_running_average=False)), g)

        return nnx.value_and_grad(loss, argnums=(0, 1))(norm, x)

    (loss_a, (grads_a, dx_a)), (loss_b, (grads_b, dx_b)) = train_step(ours, x), train_step(theirs, x)
    chex.assert_trees_all_close(loss_a, loss_b, rtol=rtol)
    chex.assert_trees_all_close(dx_a, dx_b, rtol=rtol, atol=rtol)
    chex.assert_trees_all_close(nnx.state(grads_a), nnx.state(grads_b), rtol=rtol, atol=rtol)
    chex.assert_trees_all_close(nnx.state(ours), nnx.state(theirs), rtol=rtol)  # running statistics
    chex.assert_trees_all_close(ours(x, use_running_average=True), theirs(x, use_running_average=True), rtol=rtol)


def test_cases_it_does_not_cover_go_to_nnx() -> None:
    ours, theirs = _pair(4, jnp.float64, axis=0)  # features on the leading axis
    x = jax.random.normal(jax.random.key(2), (4, 3), jnp.float64)
    chex.assert_trees_all_close(ours(x, use_running_average=False), theirs(x, use_running_average=False))
    ours, theirs = _pair(3, jnp.float64)
    mask = jnp.array([[True], [False], [True], [True]])
    chex.assert_trees_all_close(ours(x, use_running_average=False, mask=mask),
                                theirs(x, use_running_average=False, mask=mask))


def test_needs_a_mode() -> None:
    norm = nnx_layers.BatchNorm(3, use_running_average=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="use_running_average"):
        norm(jnp.ones((2, 3)))
