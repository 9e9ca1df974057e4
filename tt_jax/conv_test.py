"""TTConv2d (JAX): lax.conv_general_dilated with to_dense(), each order, jit and grad, from_conv, errors, init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tt_jax
from tt_common.conv import CONV_ORDERS
from tt_jax import TTConv2d


def _reference(layer: TTConv2d, x: jax.Array) -> jax.Array:
    s = layer.shape
    y = jax.lax.conv_general_dilated(x, layer.to_dense(), s.stride, [(p, p) for p in s.padding],
                                     rhs_dilation=s.dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + layer.bias[...]


@pytest.mark.parametrize("order", CONV_ORDERS)
@pytest.mark.parametrize("kwargs", [{}, dict(stride=2, padding=1), dict(padding=(2, 1), dilation=(2, 1))])
def test_forward_is_the_dense_convolution(order: str, kwargs: dict) -> None:
    layer = TTConv2d((2, 4), (4, 2), 3, (1, 3, 5, 1), order=order, param_dtype=jnp.float64,
                     bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0), **kwargs)
    x = jax.random.normal(jax.random.key(1), (3, 10, 9, 8), jnp.float64)
    np.testing.assert_allclose(layer(x), _reference(layer, x), rtol=1e-12, atol=1e-12)


def test_float32_jit_and_grad() -> None:
    layer = TTConv2d((2, 4), (4, 2), 3, 3, padding=1, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 6, 6, 8), jnp.float32)
    y = nnx.jit(lambda m, x: m(x))(layer, x)
    assert y.dtype == jnp.float32 and y.shape == (2, 6, 6, 8)
    grads = nnx.grad(lambda m: (m(x) ** 2).sum())(layer)
    assert [g.shape for g in jax.tree.leaves(grads)] == [(8,), (1, 2, 4, 3), (3, 4, 2, 3), (3, 9, 1, 1)]


def test_wrong_channels_or_layout_are_named() -> None:
    layer = TTConv2d((2, 4), (4, 2), 3, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"the input looks NCHW: transpose it"):
        layer(jnp.ones((1, 8, 6, 6)))
    with pytest.raises(ValueError, match="input must be 4-D NHWC"):
        layer(jnp.ones((6, 6, 8)))
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        TTConv2d((2, 4), (4, 2), (3, 0), 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="stride must be a positive int"):
        TTConv2d((2, 4), (4, 2), 3, 3, stride=(0, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"C_in = 8, C_out = 6, which in_modes=\(2, 2\)"):
        TTConv2d.from_dense(np.ones((3, 3, 8, 6), np.float32), (2, 2), (3, 2))


def test_from_conv_is_exact_at_full_rank_and_takes_the_settings() -> None:
    dense = nnx.Conv(8, 6, (3, 2), strides=2, padding=[(1, 1), (0, 0)], kernel_dilation=(1, 2),
                     param_dtype=jnp.float64, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    layer = TTConv2d.from_conv(dense, (2, 4), (3, 2))
    x = jax.random.normal(jax.random.key(2), (2, 9, 9, 8), jnp.float64)
    np.testing.assert_allclose(layer(x), dense(x), rtol=1e-10, atol=1e-10)
    assert (layer.shape.stride, layer.shape.padding, layer.shape.dilation) == ((2, 2), (1, 0), (1, 2))
    same = TTConv2d.from_conv(nnx.Conv(8, 6, (3, 3), rngs=nnx.Rngs(0)), (2, 4), (3, 2), max_rank=2)  # 'SAME'
    assert same.shape.padding == (1, 1) and same.ranks == (1, 2, 2, 1)
    with pytest.raises(ValueError, match="is not symmetric zero padding"):
        TTConv2d.from_conv(nnx.Conv(8, 6, (2, 2), rngs=nnx.Rngs(0)), (2, 4), (3, 2))


def test_default_init_gives_nnx_convs_variance() -> None:
    """nnx.Conv's LeCun normal: kernel entries of variance 1 / (kh kw C_in), averaged over 200 draws (rtol 10%)."""
    moments = [float((TTConv2d((2, 2), (2, 2), 3, 3, param_dtype=jnp.float64, rngs=nnx.Rngs(seed)).to_dense() ** 2).mean())
               for seed in range(200)]  # fmt: skip
    assert np.mean(moments) == pytest.approx(1 / 36, rel=0.1)


def test_report_row() -> None:
    report = tt_jax.compression_report(TTConv2d((4, 4), (4, 4), 3, 4, rngs=nnx.Rngs(0)))
    assert "| model | tt-conv2d 3x3 | 16 -> 16 | 4x4x9 | 4x4x1 | 1,4,4,1 | 372 | 2,320 | 6.2 | 3,712 |" in report
