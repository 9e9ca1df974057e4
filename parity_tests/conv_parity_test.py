"""TTConv2d three ways: a direct NumPy float64 convolution with the dense kernel (the oracle), JAX, PyTorch.

Hypothesis draws the channel modes (d 1..3, channels <= 16), kernel size (1..3 per axis), stride, padding,
dilation, ranks (clipped), the image size, the order of the forward pass and whether there is a bias. The weights
reach both layers through the transfer format; for ``L = sum(layer(x) * g)`` the output and the gradients wrt
``x``, every core and the bias are compared componentwise (:mod:`parity_tests.helpers`) with the reference,
which convolves with ``to_dense()`` of the cores tap by tap and maps the kernel's gradient to the cores by the
chain rule. JAX runs NHWC, torch NCHW: torch's arrays are transposed for the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import tt_jax
import tt_torch
from parity_tests.helpers import FLOAT32_RTOL, FLOAT64_RTOL, check_componentwise, tt_core_grads_reference
from tt_common.conv import CONV_ORDERS, TTConvShape
from tt_common.init import core_std
from tt_common.reference import tt_to_dense
from tt_jax import transfer as jax_transfer
from tt_torch import transfer as torch_transfer

QUICK_EXAMPLES = 10  # per dtype: each is a new XLA compile
DTYPES = {"float64": (jnp.float64, torch.float64, FLOAT64_RTOL), "float32": (jnp.float32, torch.float32, FLOAT32_RTOL)}


@dataclass(frozen=True)
class Case:
    shape: TTConvShape
    batch: int
    height: int
    width: int
    order: str
    use_bias: bool
    seed: int


@st.composite
def modes(draw: st.DrawFn, d: int) -> tuple[int, ...]:
    drawn, size = [], 1
    for _ in range(d):
        drawn.append(draw(st.integers(1, min(4, 16 // size))))
        size *= drawn[-1]
    return tuple(drawn)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    d = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride, dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))), (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    ranks = (1, *draw(st.lists(st.integers(1, 6), min_size=d, max_size=d)), 1)
    shape = TTConvShape.create(draw(modes(d)), draw(modes(d)), kernel, ranks, stride=stride, padding=padding,
                               dilation=dilation)
    # the smallest image the dilated kernel fits in, plus up to 4
    size = [max(1, dil * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4)) for k, p, dil in zip(kernel, padding, dilation)]
    return Case(shape, draw(st.integers(1, 2)), *size, draw(st.sampled_from(["auto", *CONV_ORDERS])),
                draw(st.booleans()), draw(st.integers(0, 2**32 - 1)))


def dense_kernel(cores: list[np.ndarray], shape: TTConvShape) -> np.ndarray:
    """The ``(kh, kw, C_in, C_out)`` kernel of the cores, in float64."""
    return tt_to_dense(cores).reshape(shape.in_channels, *shape.kernel_size, shape.out_channels).transpose(1, 2, 0, 3)


def conv_reference(x: np.ndarray, cores: list[np.ndarray], bias: np.ndarray | None, g: np.ndarray,
                   shape: TTConvShape) -> dict[str, np.ndarray]:
    """Output and gradients of ``L = sum(conv(x) * g)`` for NHWC ``x`` in float64, tap by tap; keys as torch's."""
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    kernel = dense_kernel(cores, shape)
    (ph, pw), (sh, sw), (dh, dw) = shape.padding, shape.stride, shape.dilation
    batch, height, width, _ = x.shape
    out_h, out_w = shape.output_hw(height, width)
    padded = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    y = np.zeros((batch, out_h, out_w, shape.out_channels))
    d_padded, d_kernel = np.zeros_like(padded), np.zeros_like(kernel)
    for i in range(shape.kernel_size[0]):
        for j in range(shape.kernel_size[1]):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            patch = padded[:, rows, cols, :]
            y += patch @ kernel[i, j]
            d_kernel[i, j] = np.einsum("bhwc,bhwo->co", patch, g)
            d_padded[:, rows, cols, :] += g @ kernel[i, j].T
    out = {"y": y if bias is None else y + np.asarray(bias, np.float64),
           "x": d_padded[:, ph : ph + height, pw : pw + width, :]}
    d_matrix = d_kernel.transpose(2, 0, 1, 3).reshape(-1, shape.out_channels)
    out.update({f"cores.{k}": dc for k, dc in enumerate(tt_core_grads_reference(cores, d_matrix))})
    if bias is not None:
        out["bias"] = g.sum(axis=(0, 1, 2))
    return out


def random_problem(case: Case, np_dtype: type) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Weights (transfer format, LeCun-scaled cores), NHWC input and cotangent, drawn in float64 and rounded."""
    rng = np.random.default_rng(case.seed)
    s = case.shape
    std = core_std(s.matrix, 1.0 / s.matrix.in_features)
    weights = {f"cores.{k}": std * rng.standard_normal(c) for k, c in enumerate(s.matrix.core_shapes)}
    if case.use_bias:
        weights["bias"] = rng.standard_normal(s.out_channels)
    x = rng.standard_normal((case.batch, case.height, case.width, s.in_channels))
    out_h, out_w = s.output_hw(case.height, case.width)
    g = rng.standard_normal((case.batch, out_h, out_w, s.out_channels))
    return {k: v.astype(np_dtype) for k, v in weights.items()}, x.astype(np_dtype), g.astype(np_dtype)


def _kwargs(case: Case) -> dict:
    s = case.shape
    return dict(stride=s.stride, padding=s.padding, dilation=s.dilation, order=case.order)


def jax_outputs(case: Case, weights: dict, x: np.ndarray, g: np.ndarray, dtype) -> dict[str, np.ndarray]:
    s = case.shape
    layer = tt_jax.TTConv2d(s.in_modes, s.out_modes, s.kernel_size, s.ranks, use_bias=case.use_bias,
                            param_dtype=dtype, rngs=nnx.Rngs(0), **_kwargs(case))
    jax_transfer.load(layer, weights)
    graphdef, params = nnx.split(layer)

    @jax.jit
    def forward_backward(params, x, g):
        y, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
        return (y, *vjp(g))

    y, param_grads, x_grad = forward_backward(params, jnp.asarray(x), jnp.asarray(g))
    assert y.dtype == dtype
    return {"y": np.asarray(y), "x": np.asarray(x_grad), **jax_transfer.export(nnx.merge(graphdef, param_grads))}


def torch_outputs(case: Case, weights: dict, x: np.ndarray, g: np.ndarray, dtype) -> dict[str, np.ndarray]:
    s = case.shape
    layer = tt_torch.TTConv2d(s.in_modes, s.out_modes, s.kernel_size, s.ranks, bias=case.use_bias, dtype=dtype,
                              **_kwargs(case))
    torch_transfer.load(layer, weights)
    x_t = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)  # NCHW
    y = layer(x_t)
    y.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert y.dtype == dtype
    grads = {name: p.grad.numpy() for name, p in layer.named_parameters()}
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1)  # noqa: E731
    return {"y": nhwc(y), "x": nhwc(x_t.grad), **grads}


def check_conv_parity(case: Case, dtype_name: str) -> None:
    jax_dtype, torch_dtype, rtol = DTYPES[dtype_name]
    weights, x, g = random_problem(case, np.dtype(dtype_name).type)
    cores = [weights[f"cores.{k}"] for k in range(case.shape.d + 1)]
    bias = weights.get("bias")
    reference = conv_reference(x, cores, bias, g, case.shape)
    scale = conv_reference(np.abs(x), [np.abs(c) for c in cores], None if bias is None else np.abs(bias), np.abs(g),
                           case.shape)
    got = {"jax": jax_outputs(case, weights, x, g, jax_dtype), "torch": torch_outputs(case, weights, x, g, torch_dtype)}
    for part, keys in (("forward", ["y"]), ("gradients", [k for k in reference if k != "y"])):
        pick = lambda d: {k: d[k] for k in keys}  # noqa: E731
        for framework in ("jax", "torch"):
            check_componentwise(f"conv {dtype_name} {part}: {framework} vs numpy", pick(got[framework]),
                                pick(reference), scale, rtol)
        check_componentwise(f"conv {dtype_name} {part}: jax vs torch", pick(got["jax"]), pick(got["torch"]), scale,
                            rtol)


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@settings(max_examples=QUICK_EXAMPLES)
@given(case=cases())
def test_conv_parity(case: Case, dtype_name: str) -> None:
    check_conv_parity(case, dtype_name)


@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@given(case=cases())
def test_conv_parity_many_shapes(case: Case, dtype_name: str) -> None:
    check_conv_parity(case, dtype_name)


@pytest.mark.parametrize("order", CONV_ORDERS)
def test_both_orders_at_a_fixed_shape(order: str) -> None:
    """Each order on a shape with every feature (rectangular kernel, stride, padding, dilation), in float64."""
    shape = TTConvShape.create((2, 3), (4, 2), (3, 2), (1, 3, 4, 1), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    check_conv_parity(Case(shape, 2, 7, 6, order, True, seed=3), "float64")


def test_conv_weights_move_between_frameworks_bit_exactly(tmp_path: Path) -> None:
    jax_layer = tt_jax.TTConv2d((2, 3), (4, 2), 3, 3, padding=1, rngs=nnx.Rngs(0))
    jax_transfer.save_file(jax_layer, tmp_path / "conv.safetensors")
    torch_layer = tt_torch.TTConv2d((2, 3), (4, 2), 3, 3, padding=1)
    torch_transfer.load_file(torch_layer, tmp_path / "conv.safetensors")
    exported = torch_transfer.export(torch_layer)
    assert sorted(exported) == ["bias", "cores.0", "cores.1", "cores.2"]
    for key, value in jax_transfer.export(jax_layer).items():
        assert exported[key].tobytes() == value.tobytes() and exported[key].dtype == value.dtype
    # the kernels agree in each framework's layout (to float32 rounding: two libraries' products)
    np.testing.assert_allclose(np.asarray(jax_layer.to_dense()).transpose(3, 2, 0, 1),
                               torch_layer.to_dense().detach().numpy(), rtol=1e-5, atol=1e-6)
