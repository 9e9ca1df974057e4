"""TTLinear (JAX) against the NumPy float64 reference: forward, gradients, transforms, TT-SVD."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tt_common.reference import tt_matmul_reference, tt_svd, tt_to_dense
from tt_jax import TTCore, TTLinear, compression_report, initializers

# A small layer with unequal modes and ranks, used by most tests (few shapes: few XLA compiles).
IN_MODES, OUT_MODES, RANKS = (2, 3, 4), (3, 1, 2), (1, 2, 3, 1)
FLOAT64_RTOL = 1e-12


def _layer(direction: str = "auto", **kwargs) -> TTLinear:
    kwargs.setdefault("param_dtype", jnp.float64)
    kwargs.setdefault("bias_init", nnx.initializers.normal(1.0))
    return TTLinear(IN_MODES, OUT_MODES, RANKS, direction=direction, rngs=nnx.Rngs(0), **kwargs)


def _numpy(layer: TTLinear) -> tuple[list[np.ndarray], np.ndarray]:
    return [np.asarray(c[...]) for c in layer.cores], np.asarray(layer.bias[...])


class ForwardTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_matches_the_float64_reference(self) -> None:
        for direction in ("ltr", "rtl"):
            layer = _layer(direction)
            cores, bias = _numpy(layer)
            for batch_shape in [(), (5,), (2, 3)]:
                x = np.random.default_rng(0).standard_normal(batch_shape + (24,))
                y = self.variant(lambda x: layer(x))(jnp.asarray(x))
                chex.assert_shape(y, batch_shape + (6,))
                np.testing.assert_allclose(y, tt_matmul_reference(x, cores, bias), rtol=FLOAT64_RTOL)


def test_jit_and_eager_agree_in_float32() -> None:
    layer = _layer(param_dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(1), (4, 24), jnp.float32)
    eager = layer(x)
    jitted = nnx.jit(lambda m, x: m(x))(layer, x)
    assert eager.dtype == jnp.float32
    # float32: same ops, possibly fused differently; a few ulps of the output scale.
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6 * float(jnp.abs(eager).max()))


def _dense_from_cores(cores):
    """W from the cores by einsum: a path to W independent of tt_matmul."""
    dense = cores[0][0]  # (m, n, r)
    for core in cores[1:]:
        rows, cols, _ = dense.shape
        dense = jnp.einsum("abr,rmns->ambns", dense, core).reshape(rows * core.shape[1], cols * core.shape[2], -1)
    return dense[:, :, 0]


def test_gradients_equal_those_of_the_dense_reconstruction() -> None:
    layer = _layer()
    x = jax.random.normal(jax.random.key(1), (5, 24), jnp.float64)
    g = jax.random.normal(jax.random.key(2), (5, 6), jnp.float64)
    cores = [c[...] for c in layer.cores]
    bias = layer.bias[...]

    def dense_loss(cores, bias, x):
        return jnp.sum((x @ _dense_from_cores(cores) + bias) * g)

    module_grads, x_grad = nnx.grad(lambda m, x: jnp.sum(m(x) * g), argnums=(0, 1))(layer, x)
    got = ([module_grads["cores"][k][...] for k in range(3)], module_grads["bias"][...], x_grad)
    want = jax.grad(dense_loss, argnums=(0, 1, 2))(cores, bias, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert bool(jnp.all(jnp.isfinite(a)))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_vmap_over_inputs_equals_a_batched_call() -> None:
    layer = _layer()
    x = jax.random.normal(jax.random.key(3), (3, 24), jnp.float64)
    np.testing.assert_allclose(jax.vmap(layer)(x), layer(x), rtol=FLOAT64_RTOL)


def test_to_dense_from_dense_round_trip() -> None:
    layer = _layer()
    cores, bias = _numpy(layer)
    np.testing.assert_allclose(layer.to_dense(), tt_to_dense(cores), rtol=FLOAT64_RTOL)
    rebuilt = TTLinear.from_dense(layer.to_dense(), IN_MODES, OUT_MODES, rtol=1e-12, bias=bias, param_dtype=jnp.float64)
    assert rebuilt.ranks == RANKS
    np.testing.assert_allclose(rebuilt.to_dense(), tt_to_dense(cores), atol=1e-10)
    np.testing.assert_allclose(rebuilt.bias[...], bias)


def test_from_dense_truncates_and_round_lowers_ranks() -> None:
    kernel = np.random.default_rng(4).standard_normal((24, 6))
    exact = TTLinear.from_dense(kernel, IN_MODES, OUT_MODES, param_dtype=jnp.float64)
    np.testing.assert_allclose(exact.to_dense(), kernel, atol=1e-10)
    truncated = TTLinear.from_dense(kernel, IN_MODES, OUT_MODES, max_rank=2, param_dtype=jnp.float64)
    bound = tt_svd(kernel, IN_MODES, OUT_MODES, max_rank=2).error_bound
    assert max(truncated.ranks) <= 2
    assert np.linalg.norm(np.asarray(truncated.to_dense()) - kernel) <= bound * (1 + 1e-9)
    rounded = exact.round(max_rank=2)
    assert rounded.ranks == truncated.ranks
    np.testing.assert_allclose(rounded.to_dense(), truncated.to_dense(), atol=1e-10)


def test_optax_training_step_lowers_the_loss() -> None:
    layer = TTLinear(IN_MODES, OUT_MODES, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(layer, optax.adam(1e-2), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(5), (32, 24))
    target = jax.random.normal(jax.random.key(6), (32, 6))

    @nnx.jit
    def step(layer, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(layer)
        optimizer.update(layer, grads)
        return loss

    losses = [float(step(layer, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.9 * losses[0]


def test_cores_are_tt_core_params() -> None:
    layer = _layer()
    cores = nnx.state(layer, TTCore)
    assert len(jax.tree.leaves(cores)) == 3
    assert len(jax.tree.leaves(nnx.state(layer, nnx.Param))) == 4


@pytest.mark.parametrize(
    "init, variance",
    [
        (initializers.lecun_normal(), 1 / 512),
        (initializers.he_uniform(), 2 / 512),
        (initializers.glorot_normal(), 2 / (512 + 64)),
        (initializers.variance_scaling(1.0, "fan_out", "truncated_normal"), 1 / 64),
    ],
)
def test_dense_matrix_has_the_initializer_variance(init, variance) -> None:
    """The empirical variance of W, averaged over 64 draws, within 4 standard errors of the target."""
    layer = TTLinear((8, 8, 8), (4, 4, 4), 4, rngs=nnx.Rngs(0))
    keys = jax.random.split(jax.random.key(7), 64)
    draw = jax.jit(jax.vmap(lambda k: jnp.mean(_dense_from_cores(init(k, layer.shape, jnp.float32)) ** 2)))
    per_draw = np.asarray(draw(keys), dtype=np.float64)
    mean, sem = per_draw.mean(), per_draw.std(ddof=1) / np.sqrt(len(per_draw))
    assert sem < 0.1 * variance  # the test can tell a wrong rule apart
    assert abs(mean - variance) < 4 * sem, (mean, variance, sem)


def test_default_initializer_matches_nnx_linear_variance() -> None:
    layer = TTLinear((8, 8, 8), (4, 4, 4), 4, rngs=nnx.Rngs(0))
    dense = nnx.Linear(512, 64, rngs=nnx.Rngs(0))
    tt_var = float(jnp.mean(layer.to_dense() ** 2))
    dense_var = float(jnp.mean(dense.kernel[...] ** 2))
    assert abs(dense_var * 512 - 1) < 0.02  # nnx.Linear: LeCun, variance 1 / fan_in
    assert abs(tt_var * 512 - 1) < 0.5  # one draw of the TT: looser (core norms fluctuate)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_modes=(2, 3), out_modes=(3,), ranks=2), "same length"),
        (dict(in_modes=(2, 0), out_modes=(3, 3), ranks=2), "positive integer"),
        (dict(in_modes=(2, 3), out_modes=(3, 3), ranks=(1, 2)), "length d \\+ 1"),
        (dict(in_modes=(2, 3), out_modes=(3, 3), ranks=(2, 2, 2)), "start and end with 1"),
        (dict(in_modes=(2, 3), out_modes=(3, 3), ranks=-1), "positive integer"),
        (dict(in_modes=(2, 3), out_modes=(3, 3), ranks=2, direction="up"), "direction"),
    ],
)
def test_bad_construction_raises(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        TTLinear(**kwargs, rngs=nnx.Rngs(0))


def test_bad_inputs_raise() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match="last dimension is 23"):
        layer(jnp.ones((2, 23)))
    with pytest.raises(ValueError, match="does not match"):
        TTLinear.from_dense(np.ones((6, 24)), IN_MODES, OUT_MODES)
    with pytest.raises(ValueError, match="bias must have shape"):
        TTLinear.from_dense(np.ones((24, 6)), IN_MODES, OUT_MODES, bias=np.ones(5))


def test_compression_report_of_a_model() -> None:
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List(
                [TTLinear((4, 8), (4, 4), 2, rngs=rngs), nnx.BatchNorm(16, rngs=rngs), nnx.Linear(16, 10, rngs=rngs)]
            )

    report = compression_report(Net(nnx.Rngs(0)))
    lines = report.splitlines()
    assert lines[2].startswith("| layers.0 | tt | 32 -> 16 | 4x8 | 4x4 | 1,2,1 | 112 | 528 |")
    assert lines[3].startswith("| layers.2 | dense | 16 -> 10 |")
    # TT 32 + 64 + 16 = 112, dense 170, batch norm 32: 314; dense network: 528 + 170 + 32 = 730.
    assert lines[4].startswith("| total | | | | | | 314 | 730 |")


@pytest.mark.parametrize("dtype", [None, jnp.float32])
def test_input_dtype_rule_is_nnx_linears(dtype) -> None:
    """A float64 input to float32 parameters: computed in the dtype that nnx.Linear computes in (documented)."""
    layer = TTLinear(IN_MODES, OUT_MODES, RANKS, dtype=dtype, rngs=nnx.Rngs(0))
    dense = nnx.Linear(24, 6, dtype=dtype, rngs=nnx.Rngs(0))
    x = np.ones((2, 24), np.float64)
    assert layer(x).dtype == dense(x).dtype
    assert layer(x).dtype == (jnp.float32 if dtype is not None or not jax.config.jax_enable_x64 else jnp.float64)


def test_a_0d_input_or_nan_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one axis.*0-d input"):
        _layer()(jnp.float64(1.0))
    kernel = np.ones((24, 6))
    kernel[3, 1] = np.inf
    with pytest.raises(ValueError, match="kernel has 1 NaN or infinite entries"):
        TTLinear.from_dense(kernel, IN_MODES, OUT_MODES)
    with pytest.raises(ValueError, match="max_rank must be None, a positive integer"):
        TTLinear.from_dense(np.ones((24, 6)), IN_MODES, OUT_MODES, max_rank=2.5)

def test_from_linear_keeps_kernel_bias_and_settings() -> None:
    dense = nnx.Linear(24, 6, param_dtype=jnp.float64, precision=jax.lax.Precision.HIGHEST,
                       bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    layer = TTLinear.from_linear(dense, IN_MODES, OUT_MODES)  # exact: largest useful ranks
    assert layer.param_dtype == jnp.float64 and layer.precision == jax.lax.Precision.HIGHEST
    np.testing.assert_array_equal(layer.bias[...], dense.bias[...])
    x = jax.random.normal(jax.random.key(0), (7, 24), jnp.float64)
    np.testing.assert_allclose(layer(x), dense(x), rtol=1e-10, atol=1e-12)
    no_bias = TTLinear.from_linear(nnx.Linear(24, 6, use_bias=False, rngs=nnx.Rngs(0)), IN_MODES, OUT_MODES,
                                   max_rank=2)
    assert no_bias.bias is None and no_bias.cores[0].dtype == jnp.float32 and max(no_bias.ranks) == 2
    with pytest.raises(ValueError, match="must be an nnx.Linear"):
        TTLinear.from_linear(nnx.BatchNorm(4, rngs=nnx.Rngs(0)), IN_MODES, OUT_MODES)


def test_round_keeps_every_setting_it_lists() -> None:
    def promote(arrays, dtype):
        return nnx.nn.dtypes.promote_dtype(arrays, dtype=dtype)

    layer = _layer(dtype=jnp.float32, precision=jax.lax.Precision.HIGHEST, promote_dtype=promote,
                   cores_metadata={"out_sharding": None}, bias_metadata={"tag": "b"})
    small = layer.round(max_rank=1)
    assert small.ranks == (1, 1, 1, 1)
    for name in ("use_bias", "dtype", "param_dtype", "precision", "dot_general", "promote_dtype",
                 "preferred_element_type", "cores_init", "bias_init", "cores_metadata", "bias_metadata"):
        assert getattr(small, name) == getattr(layer, name), name
    assert small.cores[0].dtype == jnp.float64 and small.bias.tag == "b"
    np.testing.assert_array_equal(small.bias[...], layer.bias[...])


def test_hooks_metadata_and_stored_initializers() -> None:
    calls = []

    def dot_general(*args, **kwargs):
        calls.append(kwargs.get("preferred_element_type"))
        return jax.lax.dot_general(*args, **kwargs)

    layer = _layer(dot_general=dot_general, preferred_element_type=jnp.float64, cores_metadata={"tag": "core"})
    x = jnp.ones((4, 24), jnp.float64)
    np.testing.assert_allclose(layer(x), _layer()(x), rtol=FLOAT64_RTOL)
    assert calls and set(calls) == {jnp.float64}  # every product goes through the hook
    assert all(c.tag == "core" for c in layer.cores)
    assert layer.cores_init is not None and layer.bias_init is not None


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_computation_dtype_apart_from_param_dtype(dtype) -> None:
    """``dtype`` != ``param_dtype``: output and input gradient in ``dtype``, parameter gradients in ``param_dtype``."""
    layer = TTLinear(IN_MODES, OUT_MODES, RANKS, dtype=dtype, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 24), dtype)
    y = layer(x)
    grads, x_grad = nnx.grad(lambda m, x: m(x).astype(jnp.float32).sum(), argnums=(0, 1))(layer, x)
    assert y.dtype == dtype and x_grad.dtype == dtype
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    low = TTLinear(IN_MODES, OUT_MODES, RANKS, param_dtype=dtype, rngs=nnx.Rngs(0))  # params and computation
    grads = nnx.grad(lambda m: m(x).astype(jnp.float32).sum())(low)
    assert low(x).dtype == dtype and all(g.dtype == dtype for g in jax.tree.leaves(grads))


def test_from_features_uses_the_suggested_shape() -> None:
    from tt_common import suggest_shape

    layer = TTLinear.from_features(784, 1024, 4, d=3, rngs=nnx.Rngs(0))
    assert layer.shape == suggest_shape(784, 1024, 3, 4)
