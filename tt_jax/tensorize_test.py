"""tt_jax.tensorize on nested models: what is replaced, exactness, the input untouched, training, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import tt_jax
from tt_common.reference import tt_to_dense
from tt_common.shapes import TTMatrixShape
from tt_jax import PaddedTTLinear, TTCore, TTLinear, tensorize

MODES = ((4, 4, 4), (4, 4, 4))


def _low_rank_(linear: nnx.Linear, seed: int, ranks: int = 2) -> nnx.Linear:
    """Sets a 64 -> 64 layer's kernel to a TT matrix of the given ranks (float64), so a TT-SVD recovers it."""
    rng = np.random.default_rng(seed)
    linear.kernel.set_value(jnp.asarray(tt_to_dense([rng.standard_normal(s)
                                                     for s in TTMatrixShape.create(*MODES, ranks).core_shapes])))
    linear.bias.set_value(jnp.asarray(rng.standard_normal(linear.out_features)))
    return linear


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        kw = {"param_dtype": jnp.float64, "rngs": rngs}
        self.inner = nnx.Sequential(nnx.Linear(64, 64, **kw), jnp.tanh)
        self.skip = nnx.Dict({"proj": nnx.Linear(64, 64, **kw)})
        self.extra = nnx.data({"pair": (nnx.Linear(64, 64, **kw), jnp.tanh)})  # a tuple inside a plain dict

    def __call__(self, x: jax.Array) -> jax.Array:
        linear, act = self.extra["pair"]
        return self.inner(x) + self.skip["proj"](x) + act(linear(x))


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.block = Block(rngs)
        self.stack = nnx.List([nnx.Linear(64, 64, param_dtype=jnp.float64, rngs=rngs) for _ in range(2)])
        self.plain = nnx.data([nnx.Linear(64, 64, param_dtype=jnp.float64, rngs=rngs)])
        self.head = nnx.Linear(64, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.block(x)
        for layer in [*self.stack, *self.plain]:
            x = jax.nn.relu(layer(x))
        return self.head(x)


def _net() -> Net:
    net = Net(nnx.Rngs(0))
    for k, linear in enumerate([net.block.inner.layers[0], net.block.skip["proj"], net.block.extra["pair"][0],
                                *net.stack, *net.plain]):
        _low_rank_(linear, k)
    return net


NAMES = ["block.extra.pair.0", "block.inner.layers.0", "block.skip.proj", "plain.0", "stack.0", "stack.1"]


def test_every_nested_dense_layer_is_replaced_exactly_and_the_input_is_untouched() -> None:
    net = _net()
    before = jax.tree.map(np.array, nnx.state(net))
    small, report = tensorize(net, max_rank=2, min_size=1000, d=3)
    assert sorted(report.tensorized) == NAMES
    assert report["head"].status == "dense" and "min_size" in report["head"].note
    layers = [small.block.inner.layers[0], small.block.skip["proj"], small.block.extra["pair"][0], *small.stack,
              *small.plain]
    for layer in layers:
        assert isinstance(layer, TTLinear) and layer.ranks == (1, 2, 2, 1) and layer.cores[0].dtype == jnp.float64
    assert isinstance(small.block.extra["pair"], tuple) and small.block.extra["pair"][1] is jnp.tanh
    assert all(r.error < 1e-12 for r in report.layers if r.status == "tt")
    x = jax.random.normal(jax.random.key(0), (5, 64), jnp.float64)
    np.testing.assert_allclose(small(x), net(x), rtol=1e-10, atol=1e-10)
    after = jax.tree.map(np.array, nnx.state(net))
    assert jax.tree.all(jax.tree.map(np.array_equal, before, after)) and isinstance(net.stack[0], nnx.Linear)
    count = lambda m: sum(v.size for v in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert report.params_after == count(small) and report.params_before == count(net)
    assert "| stack.0 | tt | 64 -> 64 | 4x4x4 | 4x4x4 | 1,2,2,1 |" in str(report)


def test_inplace_and_a_root_linear() -> None:
    net = _net()
    same, _ = tensorize(net, max_rank=2, include="stack.*", inplace=True, d=3)
    assert same is net and isinstance(net.stack[0], TTLinear) and isinstance(net.plain[0], nnx.Linear)
    root = _low_rank_(nnx.Linear(64, 64, param_dtype=jnp.float64, rngs=nnx.Rngs(0)), 0)
    layer, report = tensorize(root, max_rank=2, d=3)
    assert isinstance(layer, TTLinear) and report.tensorized == [""] and "| model | tt |" in str(report)


def test_fine_tuning_with_optax_lowers_the_loss_and_the_cores_are_params() -> None:
    rngs = nnx.Rngs(1)
    model = nnx.Sequential(nnx.Linear(64, 64, rngs=rngs), jax.nn.relu, nnx.Linear(64, 64, rngs=rngs))
    small, _ = tensorize(model, max_rank=4)
    assert isinstance(small, nnx.Module)
    assert len(jax.tree.leaves(nnx.state(small, TTCore))) == 4  # 2 layers of 2 cores, selected as nnx.Param too
    assert len(jax.tree.leaves(nnx.state(small, nnx.Param))) == 6
    x, y = jax.random.normal(jax.random.key(0), (128, 64)), jax.random.normal(jax.random.key(1), (128, 64))
    optimizer = nnx.Optimizer(small, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(small, optimizer)) for _ in range(20)]
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_prime_size_is_skipped_or_padded() -> None:
    model = nnx.Sequential(nnx.Linear(67, 64, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
    with pytest.warns(UserWarning, match="no dense layer is replaced"):
        same, report = tensorize(model, max_rank=4, d=2)
    assert isinstance(same.layers[0], nnx.Linear) and "factors badly into d=2: in_features 67" in report["layers.0"].note
    padded, report = tensorize(model, max_rank=4, d=2, pad=True)
    layer = padded.layers[0]
    assert isinstance(layer, PaddedTTLinear) and layer.layer.in_features == 70
    x = jax.random.normal(jax.random.key(0), (3, 67), jnp.float64)
    kernel = layer.layer.to_dense()[:67, :64]
    np.testing.assert_allclose(padded(x), x @ kernel + model.layers[0].bias[...], rtol=1e-12, atol=1e-12)
    error = np.linalg.norm(kernel - model.layers[0].kernel[...]) / np.linalg.norm(model.layers[0].kernel[...])
    assert abs(report["layers.0"].error - error) < 1e-12
    assert sorted(tt_jax.transfer.export(padded)) == ["layers.0.layer.bias", "layers.0.layer.cores.0",
                                                      "layers.0.layer.cores.1"]


def test_bad_input_raises_and_leaves_the_model_unchanged() -> None:
    with pytest.raises(ValueError, match="model has no dense layer"):
        tensorize(nnx.Sequential(jax.nn.relu), max_rank=2)
    with pytest.raises(ValueError, match="model must be an nnx.Module"):
        tensorize("model", max_rank=2)
    shared = nnx.Linear(64, 64, rngs=nnx.Rngs(0))
    model = nnx.Sequential(shared, jax.nn.relu, shared)
    with pytest.raises(ValueError, match=r"dense layer 'layers.0' is shared: the model holds it at "
                                         r"\['layers.0', 'layers.2'\]"):
        tensorize(model, max_rank=2, inplace=True)
    assert model.layers[0] is shared and model.layers[2] is shared
    with pytest.raises(ValueError, match="is shared"):
        tensorize(nnx.Sequential(nnx.Sequential(shared), nnx.Sequential(shared)), max_rank=2)
    ints = nnx.Linear(64, 64, rngs=nnx.Rngs(0))
    ints.kernel.set_value(jnp.ones((64, 64), jnp.int32))
    with pytest.raises(ValueError, match="dense layer 'model' has int32 weights"):
        tensorize(ints, max_rank=2)
    model = nnx.Sequential(nnx.Linear(64, 64, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="include='x' matches no dense layer"):
        tensorize(model, max_rank=2, include="x", inplace=True)
    with pytest.raises(ValueError, match="below the smallest TT"):
        tensorize(model, max_params=5, inplace=True)
    assert isinstance(model.layers[0], nnx.Linear)


def test_include_predicate_sees_the_layer() -> None:
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(nnx.Linear(64, 64, rngs=rngs), nnx.Linear(64, 32, rngs=rngs))
    _, report = tensorize(model, max_rank=2, include=lambda name, linear: linear.out_features == 32)
    assert report.tensorized == ["layers.1"]


def test_from_linear_chooses_modes_when_none_are_given() -> None:
    layer = TTLinear.from_linear(nnx.Linear(4096, 4096, rngs=nnx.Rngs(0)), max_rank=4, d=4)
    assert layer.in_modes == (8, 8, 8, 8) and layer.ranks == (1, 4, 4, 4, 1)
    with pytest.raises(ValueError, match="both in_modes and out_modes"):
        TTLinear.from_linear(nnx.Linear(16, 9, rngs=nnx.Rngs(0)), (4, 4))
