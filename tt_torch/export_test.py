"""tt_torch.export: torch.export with a dynamic batch, ONNX checked in onnxruntime, torch.compile; bad input."""

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

import tt_torch
from tt_torch import export, inference

# float32 throughout: onnxruntime's and torch's kernels round differently.
ATOL = 1e-5


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = tt_torch.TTLinear((4, 2, 3), (2, 3, 2), 3, bias=False)
        self.norm = nn.BatchNorm1d(12)
        self.drop = nn.Dropout(0.5)
        self.head = tt_torch.TTLinear((3, 4), (5, 1), 2)
        with torch.no_grad():  # as after training
            self.norm.running_mean.copy_(torch.linspace(-1, 1, 12))
            self.norm.running_var.copy_(torch.linspace(0.5, 2, 12))

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.norm(self.body(x)))))


def _x(batch: int) -> torch.Tensor:
    return torch.randn(batch, 24, generator=torch.Generator().manual_seed(batch))


@pytest.mark.parametrize("form", ["cores", "dense"])
@torch.no_grad()
def test_dynamic_batch_gives_the_models_outputs(form: str) -> None:
    model = Net().eval()
    inference.prepare_inference(model, 16, form)
    program = export.export(model, _x(3))
    for batch in (1, 2, 33):
        got = program.module()(_x(batch))
        assert got.dtype == torch.float32 and got.shape == (batch, 5)
        torch.testing.assert_close(got, model(_x(batch)), atol=ATOL, rtol=ATOL)


def test_dense_form_is_in_the_graph() -> None:
    model = Net().eval()
    inference.prepare_inference(model, 16, "dense")
    program = export.export(model, _x(3))
    assert {k: tuple(v.shape) for k, v in program.constants.items()} == {"body.dense_kernel": (24, 12),
                                                                         "head.dense_kernel": (12, 5)}


@torch.no_grad()
def test_save_and_load(tmp_path) -> None:
    model = Net().eval()
    torch.export.save(export.export(model, _x(3)), tmp_path / "net.pt2")
    loaded = torch.export.load(tmp_path / "net.pt2")
    torch.testing.assert_close(loaded.module()(_x(9)), model(_x(9)), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("form", ["cores", "dense"])
@torch.no_grad()
def test_onnx_in_onnxruntime(tmp_path, form: str) -> None:
    model = Net().eval()
    inference.prepare_inference(model, 16, form)
    path = tmp_path / "net.onnx"
    export.to_onnx(model, _x(3), path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (feed,), (out,) = session.get_inputs(), session.get_outputs()
    assert (feed.name, out.name, feed.type) == ("input", "output", "tensor(float)")
    assert isinstance(feed.shape[0], str) and feed.shape[1] == 24  # a symbolic batch
    for batch in (1, 2, 33):
        (got,) = session.run(None, {"input": _x(batch).numpy()})
        assert got.dtype == np.float32 and got.shape == (batch, 5)
        np.testing.assert_allclose(got, model(_x(batch)).numpy(), atol=ATOL, rtol=ATOL)


@torch.no_grad()
def test_onnx_float64(tmp_path) -> None:
    model = Net().eval().to(torch.float64)
    export.to_onnx(model, _x(3).double(), tmp_path / "net.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": _x(4).double().numpy()})
    np.testing.assert_allclose(got, model(_x(4).double()).numpy(), rtol=1e-12, atol=1e-12)


@torch.no_grad()
def test_compile_fullgraph_dynamic() -> None:
    model = Net().eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for batch in (2, 7):
        torch.testing.assert_close(compiled(_x(batch)), model(_x(batch)), atol=ATOL, rtol=ATOL)


def test_training_mode_batch_norm_is_refused(tmp_path) -> None:
    model = Net().train()
    with pytest.raises(ValueError, match="batch norm 'norm' is in training mode"):
        export.export(model, _x(3))
    with pytest.raises(ValueError, match="batch norm 'norm' is in training mode"):
        export.to_onnx(model, _x(3), tmp_path / "m.onnx")
    model.eval().drop.train()
    with pytest.raises(ValueError, match="dropout 'drop' is in training mode"):
        export.export(model, _x(3))


@pytest.mark.parametrize("x, kwargs, match", [
    (torch.ones(3, 24), {"dynamic_axes": (1,)}, "dynamic axis 1 is the feature axis"),
    (torch.ones(3, 24), {"dynamic_axes": (-1,)}, "dynamic axis -1 is the feature axis"),
    (torch.ones(3, 24), {"dynamic_axes": (2,)}, "dynamic axis 2 is out of range"),
    (torch.ones(1, 24), {}, "dynamic axis 0 has size 1"),
    (torch.ones(3, 24, dtype=torch.int32), {}, "input dtype int32"),
    (torch.ones(3, 24, dtype=torch.complex64), {}, "input dtype complex64"),
    (torch.ones(()), {"dynamic_axes": ()}, "0-d example input"),
    (np.ones((3, 24), np.float32), {}, "example_input must be a torch.Tensor"),
])
def test_bad_input_names_the_problem(x, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        export.export(Net().eval(), x, **kwargs)


def test_onnx_refuses_bfloat16(tmp_path) -> None:
    model = Net().eval().to(torch.bfloat16)
    with pytest.raises(ValueError, match="input dtype bfloat16: supported float32, float64"):
        export.to_onnx(model, _x(3).to(torch.bfloat16), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
