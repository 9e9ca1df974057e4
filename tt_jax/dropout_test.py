"""tt_jax.Dropout: Bernoulli masks at the stated rate, outputs scaled to keep the mean, nnx.Dropout's interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tt_jax
from tt_jax.dropout import keep_mask, keep_threshold

SAMPLE = (256, 4096)  # 2^20 elements: a keep fraction's standard deviation is at most 5e-4
FRACTION_ATOL = 3e-3  # 6 standard deviations


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_keeps_the_stated_fraction_and_scales_kept_values(rate) -> None:
    dropout = tt_jax.Dropout(rate, rngs=nnx.Rngs(dropout=0))
    x = jax.random.normal(jax.random.key(1), SAMPLE)
    y = np.asarray(nnx.jit(lambda dropout, x: dropout(x))(dropout, x))
    kept = y != 0
    keep_prob = keep_threshold(1 - rate) / 2**16
    assert abs(kept.mean() - (1 - rate)) < FRACTION_ATOL
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / np.float32(keep_prob), rtol=1e-6)


def test_neighbouring_elements_are_independent() -> None:
    # Each 32-bit draw gives two neighbouring elements: their masks must not be correlated.
    mask = np.asarray(keep_mask(jax.random.key(0), 0.5, SAMPLE)).reshape(-1, 2).astype(np.float64)
    correlation = np.corrcoef(mask[:, 0], mask[:, 1])[0, 1]
    assert abs(correlation) < 6 / np.sqrt(len(mask))
    assert abs(mask.mean() - 0.5) < FRACTION_ATOL


def test_masks_change_between_calls_and_repeat_with_the_seed() -> None:
    x = jnp.ones((8, 64))
    first, second = tt_jax.Dropout(0.5, rngs=nnx.Rngs(dropout=3)), tt_jax.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    a, b = first(x), first(x)
    assert not jnp.array_equal(a, b)
    assert jnp.array_equal(second(x), a)


def test_deterministic_and_edge_rates_as_nnx_dropout() -> None:
    x = jax.random.normal(jax.random.key(0), (4, 6))
    for rate in (0.0, 0.3, 1.0):
        ours = tt_jax.Dropout(rate, rngs=nnx.Rngs(dropout=0))
        theirs = nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0))
        assert jnp.array_equal(ours(x, deterministic=True), theirs(x, deterministic=True))
        if rate in (0.0, 1.0):
            assert jnp.array_equal(ours(x), theirs(x))
    model = tt_jax.Dropout(0.3, rngs=nnx.Rngs(dropout=0))
    model.eval()
    assert jnp.array_equal(model(x), x)
    with pytest.raises(ValueError, match="keep probability"):
        keep_threshold(1.5)


def test_broadcast_dims_share_the_mask() -> None:
    y = tt_jax.Dropout(0.5, broadcast_dims=(0,), rngs=nnx.Rngs(dropout=0))(jnp.ones((5, 300)))
    assert jnp.array_equal(y, jnp.broadcast_to(y[:1], y.shape))
    assert 0 < float((y[0] == 0).mean()) < 1


def test_gradient_is_the_scaled_mask() -> None:
    x = jnp.ones((16, 32))

    def fresh() -> tt_jax.Dropout:  # the same seed, so the same mask on its first call
        return tt_jax.Dropout(0.25, rngs=nnx.Rngs(dropout=0))

    out = fresh()(x)
    grad = jax.grad(lambda x: fresh()(x).sum())(x)
    assert jnp.array_equal(grad, out)  # d(sum)/dx = mask / keep probability = the output, for x = 1
    assert 0 < float((out == 0).mean()) < 1
