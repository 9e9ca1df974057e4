"""One TT layer, three ways: NumPy float64 reference, JAX, PyTorch; outputs and gradients.

Hypothesis draws the shape (d from 1 to 6, modes 1..8, ranks 1..8, clipped to the
largest useful ranks), the batch shape ((), (B,) or (A, B, C)), the contraction
direction and whether there is a bias. The weights reach both layers through the
transfer format. For ``L = sum(layer(x) * g)`` with a random cotangent ``g``, the
output and the gradients wrt ``x``, every core and the bias are compared with the
reference (and JAX with torch) componentwise, see :mod:`parity_tests.helpers`.

Every example is a new XLA compile (~1 s on a slow CPU), so the default run draws
few examples; the ``slow`` versions run the hypothesis profile's number
(``HYPOTHESIS_PROFILE=slow``: 300).
"""

from __future__ import annotations

from dataclasses import dataclass

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
from parity_tests.helpers import FLOAT32_RTOL, FLOAT64_RTOL, check_componentwise, layer_reference
from tt_common import TTMatrixShape, choose_direction, core_std
from tt_jax import transfer as jax_transfer
from tt_torch import transfer as torch_transfer

QUICK_EXAMPLES = 12  # per dtype in the default run: up to ~1 s of XLA compile each
MODES_CAP = 128  # prod(in_modes) and prod(out_modes) <= 128: the dense reference stays small
DTYPES = {"float64": (jnp.float64, torch.float64, FLOAT64_RTOL), "float32": (jnp.float32, torch.float32, FLOAT32_RTOL)}


@dataclass(frozen=True)
class Case:
    shape: TTMatrixShape
    batch_shape: tuple[int, ...]
    direction: str
    use_bias: bool
    seed: int


@st.composite
def modes(draw: st.DrawFn, d: int) -> tuple[int, ...]:
    drawn, size = [], 1
    for _ in range(d):
        m = draw(st.integers(1, min(8, MODES_CAP // size)))
        drawn.append(m)
        size *= m
    return tuple(draw(st.permutations(drawn)))  # large modes anywhere, not only first


@st.composite
def cases(draw: st.DrawFn) -> Case:
    d = draw(st.integers(1, 6))
    inner = draw(st.lists(st.integers(1, 8), min_size=d - 1, max_size=d - 1))
    shape = TTMatrixShape.create(draw(modes(d)), draw(modes(d)), (1, *inner, 1))
    batch_shape = draw(
        st.one_of(
            st.just(()),
            st.tuples(st.integers(1, 6)),
            st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
        )
    )
    return Case(
        shape,
        batch_shape,
        draw(st.sampled_from(["auto", "ltr", "rtl"])),
        draw(st.booleans()),
        draw(st.integers(0, 2**32 - 1)),
    )


def random_problem(case: Case, np_dtype: type) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Weights (in the transfer format), input and cotangent, drawn in float64 and rounded to ``np_dtype``.

    Cores use the LeCun std of :func:`tt_common.core_std`, so outputs are O(1) for any shape.
    """
    rng = np.random.default_rng(case.seed)
    shape = case.shape
    std = core_std(shape, 1.0 / shape.in_features)
    weights = {f"cores.{k}": std * rng.standard_normal(s) for k, s in enumerate(shape.core_shapes)}
    if case.use_bias:
        weights["bias"] = rng.standard_normal(shape.out_features)
    x = rng.standard_normal(case.batch_shape + (shape.in_features,))
    g = rng.standard_normal(case.batch_shape + (shape.out_features,))
    cast = lambda a: a.astype(np_dtype)  # noqa: E731
    return {k: cast(v) for k, v in weights.items()}, cast(x), cast(g)


def _no_draws(key, shape, dtype):
    return tuple(jnp.asarray(np.zeros(s), dtype) for s in shape.core_shapes)


def jax_outputs(case: Case, weights: dict, x: np.ndarray, g: np.ndarray, dtype) -> dict[str, np.ndarray]:
    """``y``, ``dL/dx`` and the parameter gradients (keyed as in the transfer format) of the JAX layer."""
    s = case.shape
    layer = tt_jax.TTLinear(
        s.in_modes, s.out_modes, s.ranks, use_bias=case.use_bias, direction=case.direction,
        param_dtype=dtype, cores_init=_no_draws, rngs=nnx.Rngs(0),
    )  # fmt: skip
    jax_transfer.load(layer, weights)
    graphdef, params = nnx.split(layer)

    @jax.jit
    def forward_backward(params, x, g):
        y, vjp = jax.vjp(lambda p, x: nnx.merge(graphdef, p)(x), params, x)
        return (y, *vjp(g))

    y, param_grads, x_grad = forward_backward(params, jnp.asarray(x), jnp.asarray(g))
    assert y.dtype == dtype and layer.direction == _direction(case)
    return {"y": np.asarray(y), "x": np.asarray(x_grad), **jax_transfer.export(nnx.merge(graphdef, param_grads))}


def torch_outputs(case: Case, weights: dict, x: np.ndarray, g: np.ndarray, dtype) -> dict[str, np.ndarray]:
    """The same for the torch layer (autograd)."""
    s = case.shape
    layer = tt_torch.TTLinear(
        s.in_modes, s.out_modes, s.ranks, bias=case.use_bias, direction=case.direction, dtype=dtype
    )
    torch_transfer.load(layer, weights)
    x_t = torch.tensor(x, requires_grad=True)
    y = layer(x_t)
    y.backward(torch.tensor(g))
    assert y.dtype == dtype and layer.direction == _direction(case)
    grads = {name: p.grad.numpy() for name, p in layer.named_parameters()}
    return {"y": y.detach().numpy(), "x": x_t.grad.numpy(), **grads}


def _direction(case: Case) -> str:
    """The direction both layers must pick: the shared FLOP rule for ``"auto"``."""
    return choose_direction(case.shape) if case.direction == "auto" else case.direction


def check_layer_parity(case: Case, dtype_name: str) -> None:
    jax_dtype, torch_dtype, rtol = DTYPES[dtype_name]
    weights, x, g = random_problem(case, np.dtype(dtype_name).type)
    cores = [weights[f"cores.{k}"] for k in range(case.shape.d)]
    bias = weights.get("bias")
    reference = layer_reference(x, cores, bias, g)
    scale = layer_reference(np.abs(x), [np.abs(c) for c in cores], None if bias is None else np.abs(bias), np.abs(g))
    got = {"jax": jax_outputs(case, weights, x, g, jax_dtype), "torch": torch_outputs(case, weights, x, g, torch_dtype)}
    for part, keys in (("forward", ["y"]), ("gradients", [k for k in reference if k != "y"])):
        pick = lambda d: {k: d[k] for k in keys}  # noqa: E731
        for framework in ("jax", "torch"):
            check_componentwise(
                f"layer {dtype_name} {part}: {framework} vs numpy", pick(got[framework]), pick(reference), scale, rtol
            )
        check_componentwise(
            f"layer {dtype_name} {part}: jax vs torch", pick(got["jax"]), pick(got["torch"]), scale, rtol
        )


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@settings(max_examples=QUICK_EXAMPLES)
@given(case=cases())
def test_layer_parity(case: Case, dtype_name: str) -> None:
    check_layer_parity(case, dtype_name)


@pytest.mark.slow
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@given(case=cases())
def test_layer_parity_many_shapes(case: Case, dtype_name: str) -> None:
    check_layer_parity(case, dtype_name)


@pytest.mark.parametrize(
    "in_modes, out_modes, ranks, batch_shape",
    [
        ((8, 8, 8, 8, 8, 8), (1, 1, 1, 1, 1, 2), 8, (2,)),  # d = 6, M = 8**6 = 262144: the largest modes
        ((1,), (1,), 1, ()),  # the smallest layer: a scalar
        ((1, 1, 1), (7, 1, 5), 8, (3, 1, 2)),  # unit modes everywhere but the outputs
    ],
)
def test_extreme_shapes(in_modes, out_modes, ranks, batch_shape) -> None:
    """Shapes at the corners of the drawn ranges (the first far beyond ``MODES_CAP``), in float64."""
    shape = TTMatrixShape.create(in_modes, out_modes, ranks)
    check_layer_parity(Case(shape, batch_shape, "auto", True, seed=shape.in_features), "float64")
