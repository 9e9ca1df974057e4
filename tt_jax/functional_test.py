"""tt_jax.functional against the NumPy float64 oracle: the product, TT-SVD and rounding, transforms, dtypes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tt_common.reference import tt_matmul_reference, tt_round, tt_svd, tt_to_dense
from tt_common.shapes_test import tt_shapes
from tt_jax import functional as F

FLOAT64_RTOL = 1e-12
seeds = st.integers(0, 2**32 - 1)


def _cores(shape, seed, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shape.core_shapes]


@settings(max_examples=8)  # each example compiles
@given(tt_shapes(max_d=4, max_mode=4, max_rank=3), seeds)
def test_tt_linear_matches_the_float64_reference(shape, seed) -> None:
    cores = _cores(shape, seed)
    rng = np.random.default_rng(seed + 1)
    x, bias = rng.standard_normal((3, shape.in_features)), rng.standard_normal(shape.out_features)
    y = jax.jit(F.tt_linear)(jnp.asarray(x), cores, jnp.asarray(bias))
    np.testing.assert_allclose(y, tt_matmul_reference(x, [np.asarray(c) for c in cores], bias),
                               rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL)
    tt = F.TTMatrix(cores)
    np.testing.assert_allclose(F.to_dense(tt), tt_to_dense([np.asarray(c) for c in cores]), atol=1e-12)


@settings(max_examples=8)  # eager linalg on every new shape compiles
@given(tt_shapes(max_d=4, max_mode=4, max_rank=3), st.sampled_from([None, 1, 2]), st.sampled_from([None, 0.3]),
       seeds)
def test_from_dense_and_round_equal_the_numpy_oracle(shape, max_rank, rtol, seed) -> None:
    """Same ranks, same matrix (float64); TT-SVD's cores are the oracle's too (one sign convention)."""
    dense = np.random.default_rng(seed).standard_normal((shape.in_features, shape.out_features))
    want = tt_svd(dense, shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol)
    got = F.from_dense(jnp.asarray(dense), shape.in_modes, shape.out_modes, max_rank=max_rank, rtol=rtol)
    assert got.ranks == want.ranks and got.dtype == jnp.float64
    np.testing.assert_allclose(F.to_dense(got), tt_to_dense(want.cores), atol=1e-9 * np.linalg.norm(dense))
    for core, oracle in zip(got.cores, want.cores):  # random dense: distinct singular values, unique vectors
        np.testing.assert_allclose(np.asarray(core), oracle, atol=1e-9 * max(1.0, np.linalg.norm(dense)))
    cores = [np.asarray(c) for c in _cores(shape, seed)]
    want = tt_round(cores, max_rank=max_rank, rtol=rtol)
    got = F.round(F.TTMatrix([jnp.asarray(c) for c in cores]), max_rank=max_rank, rtol=rtol)
    assert got.ranks == want.ranks
    scale = np.linalg.norm(tt_to_dense(cores))
    np.testing.assert_allclose(F.to_dense(got), tt_to_dense(want.cores), atol=1e-9 * scale)


def test_from_dense_and_round_run_under_jit_with_static_ranks() -> None:
    dense = jax.random.normal(jax.random.key(0), (24, 6), jnp.float32)
    decompose = jax.jit(F.from_dense, static_argnums=(1, 2), static_argnames="max_rank")
    tt = decompose(dense, (2, 3, 4), (3, 1, 2), max_rank=2)
    assert tt.ranks == (1, 2, 2, 1) and tt.dtype == jnp.float32
    want = tt_svd(np.asarray(dense), (2, 3, 4), (3, 1, 2), max_rank=2)
    np.testing.assert_allclose(F.to_dense(tt), tt_to_dense(want.cores), atol=1e-5)  # float32 SVD
    rounded = jax.jit(F.round, static_argnames="max_rank")(tt, max_rank=1)
    assert rounded.ranks == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="rtol"):
        jax.jit(F.from_dense, static_argnums=(1, 2), static_argnames="rtol")(dense, (2, 3, 4), (3, 1, 2), rtol=0.1)


def test_tt_matrix_is_a_pytree_through_grad_and_vmap() -> None:
    tt = F.from_dense(jax.random.normal(jax.random.key(1), (6, 4), jnp.float64), (2, 3), (2, 2), max_rank=2)
    x = jax.random.normal(jax.random.key(2), (5, 6), jnp.float64)
    grads = jax.grad(lambda tt: jnp.sum(F.matmul(x, tt) ** 2))(tt)
    assert isinstance(grads, F.TTMatrix) and grads.shape == tt.shape
    dense_grad = jax.grad(lambda w: jnp.sum((x @ w) ** 2))(F.to_dense(tt))
    via_dense = jax.grad(lambda tt: jnp.sum(F.to_dense(tt) * dense_grad))(tt)
    chex.assert_trees_all_close(grads, via_dense, rtol=1e-10)
    stacked = jax.tree.map(lambda c: jnp.stack([c, 2 * c]), tt)
    ys = jax.vmap(lambda tt: F.matmul(x, tt))(stacked)
    np.testing.assert_allclose(ys[1], 2**tt.shape.d * F.matmul(x, tt), rtol=FLOAT64_RTOL)  # W scales by 2^d


def test_the_product_is_named_in_the_compiled_program() -> None:
    tt = F.TTMatrix([jnp.ones((1, 2, 3, 2)), jnp.ones((2, 4, 5, 1))])
    assert "tt_linear" in jax.jit(F.matmul).lower(jnp.ones((7, 8)), tt).as_text(debug_info=True)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_outputs_and_gradients_keep_their_dtype(dtype) -> None:
    tt = F.from_dense(jnp.ones((6, 4), dtype), (2, 3), (2, 2))
    assert tt.dtype == dtype and F.round(tt, max_rank=1).dtype == dtype
    x, bias = jnp.ones((5, 6), dtype), jnp.ones(4, dtype)
    y, grads = jax.value_and_grad(lambda x, c, b: F.tt_linear(x, c, b).sum(), argnums=(0, 1, 2))(x, tt.cores, bias)
    assert y.dtype == dtype
    assert all(g.dtype == dtype for g in jax.tree.leaves(grads))


def test_bad_arguments_raise_before_any_work() -> None:
    cores = [jnp.ones((1, 2, 3, 2)), jnp.ones((2, 4, 5, 1))]
    with pytest.raises(ValueError, match="last dimension is 7"):
        F.tt_linear(jnp.ones((3, 7)), cores)
    with pytest.raises(ValueError, match="bias must have shape"):
        F.tt_linear(jnp.ones((3, 8)), cores, jnp.ones(14))
    with pytest.raises(ValueError, match="ranks do not chain"):
        F.TTMatrix([jnp.ones((1, 2, 3, 2)), jnp.ones((3, 4, 5, 1))])
    with pytest.raises(ValueError, match="do not match"):
        F.TTMatrix(cores, F.TTMatrix([jnp.ones((1, 8, 15, 1))]).shape)
    with pytest.raises(ValueError, match="dense matrix of shape"):
        F.from_dense(jnp.ones((8, 14)), (2, 4), (3, 5))
    with pytest.raises(ValueError, match="max_rank"):
        F.round(F.TTMatrix(cores), max_rank=0)


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast-core", "transposed-result"])
def test_both_forms_of_a_step_match_numpy_with_gradients(broadcast: bool, monkeypatch) -> None:
    """Each step's ``(1, p, q) @ (B, q, s)`` in either form, and its VJP, against float64 NumPy."""
    monkeypatch.setattr(F, "_broadcast_is_cheaper", lambda *shape: broadcast)
    rng = np.random.default_rng(0)
    a, b, g = rng.standard_normal((1, 5, 3)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 5, 2))

    def product(a, b):
        return F._matmul(a, b, dot_general=jax.lax.dot_general, precision=None, preferred_element_type=None)

    out, pullback = jax.vjp(product, jnp.asarray(a), jnp.asarray(b))
    grad_a, grad_b = pullback(jnp.asarray(g))
    chex.assert_shape((out, grad_a, grad_b), ((4, 5, 2), (1, 5, 3), (4, 3, 2)))
    np.testing.assert_allclose(out, np.einsum("pq,bqs->bps", a[0], b), rtol=FLOAT64_RTOL)
    np.testing.assert_allclose(grad_a[0], np.einsum("bps,bqs->pq", g, b), rtol=FLOAT64_RTOL)
    np.testing.assert_allclose(grad_b, np.einsum("pq,bps->bqs", a[0], g), rtol=FLOAT64_RTOL)
