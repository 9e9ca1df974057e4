"""The fused Pallas kernel (interpret mode on the CPU) against the float64 oracle: forward and gradients.

Float32 tolerance: errors at most ``FLOAT32_TOL`` times the largest magnitude of the checked array (the
products here sum a few dozen float32 terms per step, about 1e-6 relative; 2e-5 leaves room).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tt_common.fused import fused_plan
from tt_common.reference import tt_matmul_reference
from tt_common.shapes import TTMatrixShape
from tt_jax import _pallas
from tt_jax import functional as F

FLOAT32_TOL = 2e-5

# (in_modes, out_modes, rank, max_block_elements): padded modes, a split of the output modes, one core.
CASES = [
    ((2, 3), (4, 5), 2, 2**14),
    ((2, 2, 3), (3, 2, 2), 3, 32),
    ((4, 2, 2), (2, 4, 2), 2, 2**14),
    ((5,), (3,), 1, 2**14),
]


def _close(got, want) -> None:
    want = np.asarray(want)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=FLOAT32_TOL * max(1.0, float(np.abs(want).max())))


def _problem(in_modes, out_modes, rank, seed=0, batch=5):
    shape = TTMatrixShape.create(in_modes, out_modes, rank)
    rng = np.random.default_rng(seed)
    cores = [rng.standard_normal(s) for s in shape.core_shapes]
    x = rng.standard_normal((batch, shape.in_features))
    bias = rng.standard_normal(shape.out_features)
    g = rng.standard_normal((batch, shape.out_features))
    return shape, cores, x, bias, g


def _f32(*arrays):
    return [jnp.asarray(a, jnp.float32) for a in arrays]


@pytest.mark.parametrize("in_modes, out_modes, rank, budget", CASES)
def test_forward_matches_the_float64_reference(in_modes, out_modes, rank, budget) -> None:
    shape, cores, x, bias, _ = _problem(in_modes, out_modes, rank)
    assert fused_plan(shape, 5, max_block_elements=budget).block_rows >= 1
    fused = jax.jit(lambda x, cs, b: _pallas.fused_tt_linear(x, cs, b, shape, max_block_elements=budget))
    _close(fused(*_f32(x), _f32(*cores), *_f32(bias)), tt_matmul_reference(x, cores, bias))
    no_bias = _pallas.fused_tt_linear(*_f32(x), _f32(*cores), None, shape, max_block_elements=budget)
    _close(no_bias, tt_matmul_reference(x, cores))


@pytest.mark.parametrize("in_modes, out_modes, rank, budget", CASES[:3])
def test_gradients_match_float64_autodiff_of_the_dense_product(in_modes, out_modes, rank, budget) -> None:
    shape, cores, x, bias, g = _problem(in_modes, out_modes, rank, seed=1)

    def loss(x, cores, bias):  # <x W + b, g>: its gradients are the VJP with cotangent g
        y = _pallas.fused_tt_linear(x, cores, bias, shape, max_block_elements=budget)
        return jnp.sum(y * jnp.asarray(g, y.dtype))

    def oracle(x, cores, bias):
        dense = F.to_dense(F.TTMatrix(cores))  # float64, differentiable
        return jnp.sum((x @ dense + bias) * g)

    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*_f32(x), _f32(*cores), *_f32(bias))
    want = jax.grad(oracle, argnums=(0, 1, 2))(jnp.asarray(x), [jnp.asarray(c) for c in cores], jnp.asarray(bias))
    assert want[0].dtype == jnp.float64
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.dtype == jnp.float32 and a.shape == b.shape
        _close(a, b)


def test_the_layer_forced_to_pallas_matches_xla_with_leading_batch_axes() -> None:
    from flax import nnx

    import tt_jax

    layer = tt_jax.TTLinear((2, 3), (4, 2), 2, kernel="pallas", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 3, 6), jnp.float32)
    want = tt_jax.TTLinear((2, 3), (4, 2), 2, kernel="xla", rngs=nnx.Rngs(0))(x)
    _close(layer(x), np.asarray(want, np.float64))
    assert layer.round(max_rank=1).kernel == "pallas"


def test_auto_is_the_xla_program_on_a_cpu() -> None:
    """The default path on a CPU is today's XLA product: the same jaxpr as ``kernel="xla"``, no Pallas call."""
    shape, cores, x, bias, _ = _problem((2, 3), (4, 5), 2)
    args = (*_f32(x), _f32(*cores), *_f32(bias))
    auto = jax.make_jaxpr(lambda x, cs, b: F.tt_linear(x, cs, b))(*args)
    xla = jax.make_jaxpr(lambda x, cs, b: F.tt_linear(x, cs, b, kernel="xla"))(*args)
    assert str(auto) == str(xla) and "pallas_call" not in str(auto)
    assert not _pallas.use_pallas("auto", shape, 1000, jnp.float32)


def test_bad_arguments_raise_value_errors_naming_them() -> None:
    _, cores, x, _, _ = _problem((2, 3), (4, 5), 2)
    with pytest.raises(ValueError, match="kernel must be"):
        F.tt_linear(*_f32(x), _f32(*cores), kernel="triton")
    with pytest.raises(ValueError, match="dot_general"):
        F.tt_linear(*_f32(x), _f32(*cores), kernel="pallas", preferred_element_type=jnp.float32)
    with pytest.raises(ValueError, match="input's last dimension"):
        F.tt_linear(jnp.ones((2, 5), jnp.float32), _f32(*cores), kernel="pallas")
    wide = TTMatrixShape.create((256, 256), (2, 2), 2)
    with pytest.raises(ValueError, match="^shape: one input row"):
        _pallas.fused_tt_linear(jnp.ones((2, 65536), jnp.float32), [jnp.ones(s, jnp.float32) for s in
                                                                     wide.core_shapes], None, wide)


def test_the_kernel_lowers_for_a_gpu_without_one() -> None:
    """``jax.export`` for CUDA runs the Pallas-to-Triton lowering here (power-of-two sizes, 2-D products);
    skipped where this jaxlib cannot lower for CUDA."""
    shape, cores, x, bias, _ = _problem((2, 3), (4, 5), 2, batch=16)
    fn = jax.jit(lambda x, cs, b: _pallas.fused_tt_linear(x, cs, b, shape, interpret=False))
    args = (*_f32(x), _f32(*cores), *_f32(bias))
    try:
        # Lowered to look at, never kept: the Triton call has no serialization guarantee (its target's name).
        unchecked = [jax.export.DisabledSafetyCheck.custom_call(t) for t in ("__gpu$xla.gpu.triton", "triton_kernel_call")]
        exported = jax.export.export(fn, platforms=["cuda"], disabled_checks=unchecked)(*args)
    except Exception as e:  # which error a CPU-only jaxlib raises is not specified
        if "cuda" in str(e).lower() or "triton" in str(e).lower() or "platform" in str(e).lower():
            pytest.skip(f"no CUDA lowering in this jaxlib: {type(e).__name__}: {str(e)[:200]}")
        raise
    assert "triton" in exported.mlir_module()
