"""The inference mode of tt_jax.TTLinear: the dense form, its cached kernel and its invalidation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tt_common.contraction import choose_inference_form
from tt_jax import TTLinear, inference
from tt_jax._xla_cpu import product_flops

IN_MODES, OUT_MODES, RANKS = (2, 3, 4), (3, 1, 2), (1, 2, 3, 1)
# float32: the dense product and the core-by-core product round differently; float64 agrees to 1e-12.
TOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}


def _layer(dtype=jnp.float32) -> TTLinear:
    return TTLinear(IN_MODES, OUT_MODES, RANKS, param_dtype=dtype, bias_init=nnx.initializers.normal(1.0),
                    rngs=nnx.Rngs(0))


def _x(dtype=jnp.float32, batch=(5,)) -> jax.Array:
    return jax.random.normal(jax.random.key(1), (*batch, 24), dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("batch", [(5,), (2, 3), ()])
def test_dense_form_equals_the_cores(dtype, batch) -> None:
    layer = _layer(dtype)
    x = _x(dtype, batch)
    want = layer(x)
    assert layer.prepare_inference(5, "dense").form == "dense"
    assert layer.dense_kernel[...].dtype == dtype and layer.dense_kernel.shape == (24, 6)
    got = layer(x)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(nnx.jit(lambda m, v: m(v))(layer, x), want, rtol=TOL[dtype], atol=TOL[dtype])


def test_auto_is_the_models_choice_and_reset_returns_to_training_form() -> None:
    layer = TTLinear((32, 32), (32, 32), 32, rngs=nnx.Rngs(0))
    for batch in (1, 32):
        want = choose_inference_form(layer.shape, batch, direction=layer.direction, product_flops=product_flops())
        assert layer.prepare_inference(batch) == want == layer.inference_choice
        assert (layer.dense_kernel is None) == (want.form == "cores")
    layer.reset_inference()
    assert layer.inference_choice is None and layer.dense_kernel is None and layer.inference_form == "cores"


def test_kernel_is_rebuilt_when_the_cores_change_through_nnx_update() -> None:
    layer, x = _layer(), _x()
    layer.prepare_inference(5, "dense")
    kernel = layer.dense_kernel[...]
    layer(x)
    assert layer.dense_kernel[...] is kernel  # unchanged cores: no rebuild
    nnx.update(layer, nnx.state(layer, nnx.Param))  # new arrays, same values: no rebuild either
    layer(x)
    assert layer.dense_kernel[...] is kernel
    nnx.update(layer, jax.tree.map(lambda p: 2 * p, nnx.state(layer, nnx.Param)))
    got = layer(x)
    assert layer.dense_kernel[...] is not kernel
    np.testing.assert_allclose(got, x @ layer.to_dense() + layer.bias[...], rtol=1e-5, atol=1e-5)


def test_kernel_is_rebuilt_after_an_optimizer_step() -> None:
    layer, x = _layer(), _x()
    optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.Param)
    layer.prepare_inference(5, "dense")
    grads = nnx.grad(lambda m: jnp.sum(m.to_dense() ** 2))(layer)  # the cores' gradient: not through the cache
    optimizer.update(layer, grads)
    np.testing.assert_allclose(layer(x), x @ layer.to_dense() + layer.bias[...], rtol=1e-5, atol=1e-5)


def test_the_cache_is_no_parameter() -> None:
    layer = _layer()
    layer.prepare_inference(5, "dense")
    assert "dense_kernel" not in nnx.state(layer, nnx.Param)
    assert "dense_kernel" in nnx.state(layer)


@pytest.mark.parametrize("args, match", [
    ((0,), "batch_size must be a positive integer"),
    ((5, "sparse"), "form must be 'auto', 'cores' or 'dense'"),
])
def test_bad_input_raises_before_any_change(args, match) -> None:
    layer = _layer()
    with pytest.raises(ValueError, match=match):
        layer.prepare_inference(*args)
    assert layer.inference_choice is None and layer.dense_kernel is None


def test_dense_form_checks_the_input() -> None:
    layer = _layer()
    layer.prepare_inference(5, "dense")
    with pytest.raises(ValueError, match="input's last dimension is 7"):
        layer(jnp.ones((2, 7)))


def test_model_helpers_and_report() -> None:
    model = nnx.Sequential(_layer(), jax.nn.relu, TTLinear((2, 3), (2, 2), 2, rngs=nnx.Rngs(2)))
    choices = inference.prepare_inference(model, 8, "dense")
    assert list(choices) == ["layers.0", "layers.2"] and {c.form for c in choices.values()} == {"dense"}
    report = inference.inference_report(model)
    assert "| layers.0 | dense | 8 |" in report and "forced by the user" in report
    inference.reset_inference(model)
    assert set(inference.inference_choices(model).values()) == {None}
