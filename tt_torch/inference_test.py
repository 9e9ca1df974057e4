"""The inference mode of tt_torch.TTLinear: the dense form, its cached kernel and its invalidation."""

import pytest
import torch
from torch import nn

from tt_common.contraction import choose_inference_form
from tt_torch import TTLinear, inference

IN_MODES, OUT_MODES, RANKS = (2, 3, 4), (3, 1, 2), (1, 2, 3, 1)
# float32: the dense product and the core-by-core product round differently; float64 agrees to 1e-12.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _layer(dtype=torch.float32) -> TTLinear:
    torch.manual_seed(0)
    return TTLinear(IN_MODES, OUT_MODES, RANKS, bias_init=nn.init.normal_, dtype=dtype).eval()


def _x(dtype=torch.float32, batch=(5,)) -> torch.Tensor:
    return torch.randn(*batch, 24, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _reference(layer: TTLinear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.to_dense().T + layer.bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(5,), (2, 3), ()])
@torch.no_grad()
def test_dense_form_equals_the_cores(dtype, batch) -> None:
    layer = _layer(dtype)
    x = _x(dtype, batch)
    want = layer(x)
    assert layer.prepare_inference(5, "dense").form == "dense"
    assert layer.dense_kernel.dtype == dtype and tuple(layer.dense_kernel.shape) == (24, 6)
    got = layer(x)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype])


def test_auto_is_the_models_choice_and_reset_returns_to_training_form() -> None:
    layer = TTLinear((32, 32), (32, 32), 32)
    for batch in (1, 32):
        want = choose_inference_form(layer.shape, batch, direction=layer.direction)
        assert layer.prepare_inference(batch) == want == layer.inference_choice
        assert (layer.dense_kernel is None) == (want.form == "cores")
    layer.reset_inference()
    assert layer.inference_choice is None and layer.dense_kernel is None and layer.inference_form == "cores"


@torch.no_grad()
def test_kernel_is_rebuilt_when_the_cores_change() -> None:
    layer, x = _layer(), _x()
    layer.prepare_inference(5, "dense")
    kernel = layer.dense_kernel
    layer(x)
    assert layer.dense_kernel is kernel  # unchanged cores: no rebuild
    layer.cores[1].mul_(2)  # in place, as an optimizer step: the parameter's _version
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)
    assert layer.dense_kernel is not kernel
    layer.load_state_dict({k: 3 * v for k, v in layer.state_dict().items()})
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)
    layer.to(torch.float64)
    assert layer.dense_kernel.dtype == torch.float32  # not a buffer: rebuilt on the next call
    x64 = x.to(torch.float64)
    torch.testing.assert_close(layer(x64), _reference(layer, x64), rtol=1e-12, atol=1e-12)
    assert layer.dense_kernel.dtype == torch.float64


def test_kernel_is_rebuilt_after_an_optimizer_step() -> None:
    layer, x = _layer(), _x()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.prepare_inference(5, "dense")
    layer.to_dense().square().sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-5, atol=1e-5)


def test_training_with_the_dense_form_is_refused() -> None:
    layer = _layer().train()
    layer.prepare_inference(5, "dense")
    with pytest.raises(ValueError, match="dense inference form, whose output has no gradient"):
        layer(_x())
    with torch.no_grad():
        layer(_x())  # inference in training mode is fine
    layer.eval()(_x())


def test_the_cache_is_no_state() -> None:
    layer = _layer()
    layer.prepare_inference(5, "dense")
    assert list(layer.state_dict()) == ["bias", "cores.0", "cores.1", "cores.2"]
    assert not list(layer.buffers())


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
        layer(torch.ones(2, 7))
    with pytest.raises(ValueError, match="input dtype float64 does not match"):
        layer(torch.ones(2, 24, dtype=torch.float64))


@pytest.mark.parametrize("form", ["cores", "dense"])
@torch.no_grad()
def test_compile_fullgraph(form: str) -> None:
    model = nn.Sequential(_layer(), nn.ReLU(), TTLinear((2, 3), (2, 2), 2)).eval()
    inference.prepare_inference(model, 5, form)
    compiled = torch.compile(model, fullgraph=True)
    x = _x()
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_model_helpers_and_report() -> None:
    model = nn.Sequential(_layer(), nn.ReLU(), TTLinear((2, 3), (2, 2), 2))
    choices = inference.prepare_inference(model, 8, "dense")
    assert list(choices) == ["0", "2"] and {c.form for c in choices.values()} == {"dense"}
    report = inference.inference_report(model)
    assert "| 0 | dense | 8 |" in report and "forced by the user" in report
    inference.reset_inference(model)
    assert set(inference.inference_choices(model).values()) == {None}
