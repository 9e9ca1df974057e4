"""TTEmbedding (JAX): the table's rows, nnx.Embed's index rules eager and under jit, errors, from_embed, init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tt_jax
from tt_jax import TTEmbedding


@pytest.mark.parametrize("direction", ["ltr", "rtl"])
@pytest.mark.parametrize("ids_shape", [(), (5,), (2, 3, 4)])
def test_lookup_is_the_tables_rows_for_any_index_shape(direction: str, ids_shape: tuple) -> None:
    layer = TTEmbedding((3, 4, 5), (2, 3, 2), (1, 3, 4, 1), direction=direction, param_dtype=jnp.float64,
                        rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(1), ids_shape, -60, 60)  # negative ones count from the end
    got = layer(ids)
    assert got.shape == (*ids_shape, 12) and got.dtype == jnp.float64
    np.testing.assert_allclose(got, jnp.take(layer.to_dense(), ids, axis=0), rtol=1e-12, atol=1e-12)
    assert layer(ids.astype(jnp.int32)).dtype == jnp.float64


def test_out_of_range_raises_eagerly_and_is_nan_under_jit() -> None:
    layer = TTEmbedding((3, 4), (2, 3), 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"index 12 is out of range for a vocabulary of V = 12 \(valid: -12 <= index"):
        layer(jnp.array([0, 12]))
    with pytest.raises(ValueError, match="index -13 is out of range"):
        layer(jnp.array([-13]))
    rows = nnx.jit(lambda m, i: m(i))(layer, jnp.array([12, -13, 3]))
    assert bool(jnp.isnan(rows[:2]).all()) and bool(jnp.isfinite(rows[2]).all())  # jnp.take's "fill", as nnx.Embed
    with pytest.raises(ValueError, match="indices must be of an integer dtype, got float32"):
        layer(jnp.array([1.0], jnp.float32))


def test_padding_idx_zeroes_the_row_and_its_gradient() -> None:
    layer = TTEmbedding((3, 4), (2, 3), 3, padding_idx=2, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m: m(jnp.array([2, 2 - 12])).sum())(layer)
    assert all(not g.any() for g in jax.tree.leaves(grads))
    assert not layer(jnp.array([2])).any() and not layer.to_dense()[2].any()


def test_from_embed_is_exact_at_full_rank() -> None:
    dense = nnx.Embed(12, 6, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    layer = TTEmbedding.from_embed(dense, (3, 4), (2, 3))
    ids = jnp.arange(-12, 12)
    np.testing.assert_allclose(layer(ids), dense(ids), rtol=1e-10, atol=1e-12)


def test_default_init_gives_nnx_embeds_variance() -> None:
    """nnx.Embed's default variance_scaling(1.0, 'fan_in', 'normal', out_axis=0) gives a (V, D) table variance 1 / D."""
    assert float(nnx.Embed(2000, 16, rngs=nnx.Rngs(0)).embedding[...].var()) == pytest.approx(1 / 16, rel=0.05)
    moments = [float((TTEmbedding((4, 4), (2, 4), 3, param_dtype=jnp.float64, rngs=nnx.Rngs(seed)).to_dense() ** 2).mean())
               for seed in range(200)]  # fmt: skip
    assert np.mean(moments) == pytest.approx(1 / 8, rel=0.1)


def test_report_row() -> None:
    report = tt_jax.compression_report(TTEmbedding((10, 10, 10), (4, 4, 4), 8, rngs=nnx.Rngs(0)))
    assert "| model | tt-embedding | 1000 -> 64 | 10x10x10 | 4x4x4 | 1,8,8,1 | 3,200 | 64,000 | 20.0 | 3,072 |" in report
