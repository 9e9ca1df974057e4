"""TTLinear (PyTorch) against the NumPy float64 reference; nn.Linear drop-in behaviour, torch.compile, torch.func."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from tt_common.contraction import choose_direction
from tt_common.reference import tt_matmul_reference, tt_svd, tt_to_dense
from tt_torch import TTLinear

# The small layer of tt_jax/layer_test.py: unequal modes and ranks.
IN_MODES, OUT_MODES, RANKS = (2, 3, 4), (3, 1, 2), (1, 2, 3, 1)
FLOAT64_RTOL = 1e-12


def _assert_float64_close(got: torch.Tensor, want: np.ndarray) -> None:
    """Within FLOAT64_RTOL, also of the output's scale: an entry near zero after cancellation carries the others'
    rounding (one such entry was 1.2e-12 off in relative terms on an AMD EPYC VM)."""
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=FLOAT64_RTOL, atol=FLOAT64_RTOL * np.abs(want).max())


def _layer(direction: str = "auto", **kwargs) -> TTLinear:
    kwargs.setdefault("dtype", torch.float64)
    torch.manual_seed(0)
    layer = TTLinear(IN_MODES, OUT_MODES, RANKS, direction=direction, **kwargs)
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.normal_()
    return layer


def _numpy(layer: TTLinear) -> tuple[list[np.ndarray], np.ndarray | None]:
    cores = [c.detach().numpy() for c in layer.cores]
    return cores, None if layer.bias is None else layer.bias.detach().numpy()


def _x(*shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("direction", ["ltr", "rtl"])
@pytest.mark.parametrize("batch_shape", [(), (5,), (2, 3)])
def test_forward_matches_the_float64_reference(direction: str, batch_shape: tuple[int, ...]) -> None:
    layer = _layer(direction)
    cores, bias = _numpy(layer)
    x = _x(*batch_shape, 24)
    y = layer(x)
    assert y.shape == (*batch_shape, 6) and y.dtype == torch.float64
    _assert_float64_close(y, tt_matmul_reference(x.numpy(), cores, bias))


@pytest.mark.parametrize("direction", ["ltr", "rtl"])
@pytest.mark.parametrize("in_modes, out_modes", [((2, 2, 7), (8, 16, 4)), ((7, 4, 2), (2, 3, 2))])
def test_outputs_are_row_major_and_exact(direction: str, in_modes, out_modes) -> None:
    """Wide and narrow first output modes take the two forms of the last step; both hand on a contiguous tensor."""
    torch.manual_seed(0)
    layer = TTLinear(in_modes, out_modes, 3, direction=direction, dtype=torch.float64)
    x = _x(5, layer.in_features).requires_grad_()
    y = layer(x)
    assert y.is_contiguous()  # the next layer (bias, batch norm, TT) reads it without a copy
    cores, bias = _numpy(layer)
    _assert_float64_close(y, tt_matmul_reference(x.detach().numpy(), cores, bias))
    g = _x(5, layer.out_features)
    got = torch.autograd.grad((y * g).sum(), [x, *layer.cores])
    want = torch.autograd.grad(((x @ layer.to_dense().T) * g).sum(), [x, *layer.cores])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_direction_rule_is_the_shared_one() -> None:
    for in_modes, out_modes in [((2, 2, 7, 4, 7), (8, 16, 16, 16, 8)), ((8, 16, 16, 16, 8), (2, 2, 7, 4, 7))]:
        layer = TTLinear(in_modes, out_modes, 4, device="meta")
        assert layer.direction == choose_direction(layer.shape)
    assert {TTLinear((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4, device="meta").direction,
            TTLinear((8, 16, 16, 16, 8), (2, 2, 7, 4, 7), 4, device="meta").direction} == {"ltr", "rtl"}  # fmt: skip


def test_gradients_equal_those_of_the_dense_reconstruction() -> None:
    layer = _layer()
    x = _x(5, 24).requires_grad_()
    g = _x(5, 6) * 0.5
    (layer(x) * g).sum().backward()
    got = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone()]
    layer.zero_grad()
    x.grad = None
    (((x @ layer.to_dense().T) + layer.bias) * g).sum().backward()
    want = [p.grad for p in layer.parameters()] + [x.grad]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_to_dense_is_the_transposed_reference_kernel() -> None:
    layer = _layer()
    cores, _ = _numpy(layer)
    dense = layer.to_dense()
    assert dense.shape == (6, 24)  # nn.Linear's (out, in)
    _assert_float64_close(dense, tt_to_dense(cores).T)


def test_from_dense_round_trip_and_truncation() -> None:
    layer = _layer()
    cores, bias = _numpy(layer)
    rebuilt = TTLinear.from_dense(layer.to_dense().detach(), IN_MODES, OUT_MODES, rtol=1e-12,
                                  bias=layer.bias.detach(), dtype=torch.float64)  # fmt: skip
    assert rebuilt.ranks == RANKS
    np.testing.assert_allclose(rebuilt.to_dense().detach().numpy(), tt_to_dense(cores).T, atol=1e-10)
    np.testing.assert_array_equal(rebuilt.bias.detach().numpy(), bias)

    weight = np.random.default_rng(4).standard_normal((6, 24))  # NumPy works too
    truncated = TTLinear.from_dense(weight, IN_MODES, OUT_MODES, max_rank=2, dtype=torch.float64)
    bound = tt_svd(weight.T, IN_MODES, OUT_MODES, max_rank=2).error_bound
    assert max(truncated.ranks) <= 2
    assert np.linalg.norm(truncated.to_dense().detach().numpy() - weight) <= bound * (1 + 1e-9)
    rounded = TTLinear.from_dense(weight, IN_MODES, OUT_MODES, dtype=torch.float64).round(max_rank=2)
    assert rounded.ranks == truncated.ranks
    torch.testing.assert_close(rounded.to_dense(), truncated.to_dense(), rtol=0, atol=1e-10)


def test_from_linear_keeps_bias_dtype_and_function() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(24, 6, dtype=torch.float64)
    layer = TTLinear.from_linear(dense, IN_MODES, OUT_MODES)  # exact: largest useful ranks
    assert layer.cores[0].dtype == torch.float64 and torch.equal(layer.bias, dense.bias)
    x = _x(7, 24)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-10, atol=1e-12)
    no_bias = TTLinear.from_linear(nn.Linear(24, 6, bias=False), IN_MODES, OUT_MODES, max_rank=2)
    assert no_bias.bias is None and no_bias.cores[0].dtype == torch.float32 and max(no_bias.ranks) == 2


def test_round_keeps_settings() -> None:
    layer = _layer(bias=False)
    small = layer.round(max_rank=1)
    assert small.ranks == (1, 1, 1, 1) and small.bias is None and small.cores[0].dtype == torch.float64


def test_state_dict_round_trip() -> None:
    layer = _layer()
    assert list(layer.state_dict()) == ["bias", "cores.0", "cores.1", "cores.2"]
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    other = TTLinear(IN_MODES, OUT_MODES, RANKS, dtype=torch.float64)
    other.load_state_dict(torch.load(buffer))
    x = _x(3, 24)
    assert torch.equal(other(x), layer(x))
    with pytest.raises(RuntimeError, match="size mismatch"):
        TTLinear(IN_MODES, OUT_MODES, 2, dtype=torch.float64).load_state_dict(layer.state_dict())


def test_whole_module_pickles_and_deepcopies() -> None:
    layer = _layer()
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    clone = copy.deepcopy(layer)
    x = _x(2, 24)
    assert torch.equal(loaded(x), layer(x)) and torch.equal(clone(x), layer(x))
    loaded.reset_parameters()  # the initializer survived pickling
    assert not torch.equal(loaded.cores[0], layer.cores[0])


def test_drop_in_for_nn_linear_in_a_trained_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(TTLinear((4, 8), (4, 4), 4), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 32), torch.randint(0, 3, (64,))
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert model[0].in_features == 32 and model[0].out_features == 16


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph_forward_and_backward(backend: str) -> None:
    """``aot_eager`` traces forward and backward without graph breaks; ``inductor`` also generates code
    (the first compile on a cold cache takes a while on a slow CPU)."""
    layer = _layer("rtl", dtype=torch.float32)
    compiled = torch.compile(layer, backend=backend, fullgraph=True)
    x = _x(2, 5, 24, dtype=torch.float32).requires_grad_()
    compiled(x).square().sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    x.grad = None
    layer(x).square().sum().backward()
    want = [x.grad] + [p.grad for p in layer.parameters()]
    torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_torch_func_grad_vmap_and_functional_call() -> None:
    layer = _layer()
    params = {name: p.detach() for name, p in layer.named_parameters()}
    x = _x(4, 24)

    def loss(params, x):
        return torch.func.functional_call(layer, params, (x,)).square().sum()

    grads = torch.func.grad(loss)(params, x)
    loss(dict(layer.named_parameters()), x).backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.func.vmap(layer)(x), layer(x), rtol=1e-12, atol=1e-12)
    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    assert per_example["cores.1"].shape == (4, *layer.cores[1].shape)
    torch.testing.assert_close(per_example["cores.1"].sum(0), grads["cores.1"], rtol=1e-10, atol=1e-12)


def test_no_bias_repr_reset_and_devices() -> None:
    layer = TTLinear((2, 2), (3, 3), 2, bias=False)
    assert layer.bias is None and list(layer.state_dict()) == ["cores.0", "cores.1"]
    assert repr(layer).startswith(
        "TTLinear(\n  in_features=4, out_features=9, in_modes=(2, 2), out_modes=(3, 3), ranks=(1, 2, 1), bias=False,"
    )
    a = TTLinear((2, 2), (3, 3), 2)
    b = TTLinear((2, 2), (3, 3), 2)
    a.reset_parameters(torch.Generator().manual_seed(3))
    b.reset_parameters(torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.count_nonzero(a.bias) == 0  # zeros, as in JAX
    meta = TTLinear((2, 2), (3, 3), 2, device="meta", dtype=torch.float16)
    assert meta.cores[0].device.type == "meta" and meta.bias.dtype == torch.float16


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
        TTLinear(**kwargs)


def test_bad_inputs_raise() -> None:
    layer = _layer()
    with pytest.raises(ValueError, match="last dimension is 23"):
        layer(torch.ones(2, 23, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected \\(out, in\\) shape \\(6, 24\\)"):
        TTLinear.from_dense(np.ones((24, 6)), IN_MODES, OUT_MODES)  # the (in, out) kernel layout
    with pytest.raises(ValueError, match="bias must have shape"):
        TTLinear.from_dense(np.ones((6, 24)), IN_MODES, OUT_MODES, bias=np.ones(5))
    with pytest.raises(ValueError, match="must be an nn.Linear"):
        TTLinear.from_linear(nn.Conv1d(24, 6, 1), IN_MODES, OUT_MODES)
    with pytest.raises(ValueError, match="rtol"):
        layer.round(rtol=-1.0)


def test_an_input_of_another_dtype_is_refused_as_nn_linear_does() -> None:
    layer = _layer(dtype=torch.float32)
    with pytest.raises(RuntimeError):  # the rule followed: nn.Linear refuses too (with torch's own message)
        nn.Linear(24, 6)(torch.ones(2, 24, dtype=torch.float64))
    with pytest.raises(ValueError, match="input dtype float64 does not match the layer's dtype float32"):
        layer(torch.ones(2, 24, dtype=torch.float64))
    with pytest.raises(ValueError, match="input dtype int64 does not match"):
        layer(torch.ones(2, 24, dtype=torch.int64))
    assert layer(torch.ones(2, 24)).dtype == torch.float32


def test_autocast_casts_instead_of_refusing() -> None:
    layer = _layer(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.ones(2, 24, dtype=torch.bfloat16))
    assert y.shape == (2, 6)


def test_a_0d_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one axis.*0-d input"):
        _layer()(torch.tensor(1.0, dtype=torch.float64))


def test_from_dense_refuses_nan() -> None:
    weight = np.ones((6, 24))
    weight[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        TTLinear.from_dense(weight, IN_MODES, OUT_MODES)
