"""Row sums and broadcasts as matrix products: the same values and derivatives as the plain jnp forms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tt_jax.rows import broadcast_rows, mean_rows, sum_rows

FLOAT64_RTOL = 1e-13


@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_sums_equal_jnp_sums(batch_shape) -> None:
    x = jax.random.normal(jax.random.key(0), (*batch_shape, 7), jnp.float64)
    axes = tuple(range(len(batch_shape)))
    chex.assert_trees_all_close(sum_rows(x), x.sum(axes), rtol=FLOAT64_RTOL)
    chex.assert_trees_all_close(mean_rows(x), x.mean(axes), rtol=FLOAT64_RTOL)
    chex.assert_shape(sum_rows(x), (7,))


class BroadcastRowsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_reverse_and_forward_derivatives_equal_broadcast_to(self) -> None:
        shape = (2, 3, 4)
        v = jnp.arange(4.0, dtype=jnp.float64) + 1
        w = jax.random.normal(jax.random.key(1), shape, jnp.float64)

        def loss(broadcast):
            return lambda v: jnp.sum(jnp.sin(broadcast(v * v, shape)) * w)

        ours, plain = loss(broadcast_rows), loss(jnp.broadcast_to)
        chex.assert_trees_all_close(self.variant(jax.grad(ours))(v), jax.grad(plain)(v), rtol=FLOAT64_RTOL)
        chex.assert_trees_all_close(self.variant(jax.jacfwd(ours))(v), jax.jacfwd(plain)(v), rtol=FLOAT64_RTOL)
        chex.assert_trees_all_close(self.variant(ours)(v), plain(v), rtol=FLOAT64_RTOL)

    def test_under_vmap(self) -> None:
        vs = jnp.arange(6.0, dtype=jnp.float64).reshape(2, 3)
        got = jax.vmap(jax.grad(lambda v: jnp.sum(broadcast_rows(v, (4, 3)) ** 2)))(vs)
        np.testing.assert_allclose(got, 8 * vs, rtol=FLOAT64_RTOL)
