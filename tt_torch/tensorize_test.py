"""tt_torch.tensorize on nested models: what is replaced, exactness, the input untouched, training, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import tt_torch
from tt_common.reference import tt_to_dense
from tt_common.shapes import TTMatrixShape
from tt_torch import PaddedTTLinear, TTLinear, tensorize

MODES = ((4, 4, 4), (4, 4, 4))


def _low_rank_(linear: nn.Linear, seed: int, ranks: int = 2) -> nn.Linear:
    """Sets a 64 -> 64 layer's weight to a TT matrix of the given ranks (float64), so a TT-SVD recovers it."""
    rng = np.random.default_rng(seed)
    kernel = tt_to_dense([rng.standard_normal(s) for s in TTMatrixShape.create(*MODES, ranks).core_shapes])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(kernel.T))
        linear.bias.normal_()
    return linear


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(64, 64, dtype=torch.float64), nn.Tanh())
        self.skip = nn.ModuleDict({"proj": nn.Linear(64, 64, dtype=torch.float64)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.skip["proj"](x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.stack = nn.ModuleList([nn.Linear(64, 64, dtype=torch.float64) for _ in range(2)])
        self.head = nn.Linear(64, 3, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        for layer in self.stack:
            x = torch.relu(layer(x))
        return self.head(x)


def _net() -> Net:
    torch.manual_seed(0)
    net = Net()
    for k, linear in enumerate([net.block.inner[0], net.block.skip["proj"], *net.stack]):
        _low_rank_(linear, k)
    return net


def test_every_nested_dense_layer_is_replaced_exactly_and_the_input_is_untouched() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    small, report = tensorize(net, max_rank=2, min_size=1000, d=3)
    assert report.tensorized == ["block.inner.0", "block.skip.proj", "stack.0", "stack.1"]
    assert report["head"].status == "dense" and "min_size" in report["head"].note
    for layer in (small.block.inner[0], small.block.skip["proj"], *small.stack):
        assert isinstance(layer, TTLinear) and layer.ranks == (1, 2, 2, 1) and layer.cores[0].dtype == torch.float64
    assert all(r.error < 1e-12 for r in report.layers if r.status == "tt")  # float64 TT-SVD of exact TT rank 2
    x = torch.randn(5, 64, dtype=torch.float64)
    torch.testing.assert_close(small(x), net(x), rtol=1e-10, atol=1e-10)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and isinstance(net.stack[0], nn.Linear)
    assert torch.equal(small.stack[1].bias, net.stack[1].bias) and small.stack[1].bias is not net.stack[1].bias
    assert report.params_after == sum(p.numel() for p in small.parameters())
    assert report.params_before == sum(p.numel() for p in net.parameters())
    assert "| stack.0 | tt | 64 -> 64 | 4x4x4 | 4x4x4 | 1,2,2,1 |" in str(report)


def test_inplace_and_a_root_linear() -> None:
    net = _net()
    same, _ = tensorize(net, max_rank=2, include="stack.*", inplace=True, d=3)
    assert same is net and isinstance(net.stack[0], TTLinear) and isinstance(net.block.inner[0], nn.Linear)
    layer, report = tensorize(_low_rank_(nn.Linear(64, 64, dtype=torch.float64), 0), max_rank=2, d=3)
    assert isinstance(layer, TTLinear) and report.tensorized == [""] and "| model | tt |" in str(report)


def test_fine_tuning_with_torch_optim_lowers_the_loss() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    small, _ = tensorize(model, max_rank=4)
    x, y = torch.randn(128, 64), torch.randn(128, 64)
    optimizer = torch.optim.Adam(small.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(small(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_prime_size_is_skipped_or_padded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(67, 64, dtype=torch.float64))
    with pytest.warns(UserWarning, match="no dense layer is replaced"):
        same, report = tensorize(model, max_rank=4, d=2)
    assert isinstance(same[0], nn.Linear) and "factors badly into d=2: in_features 67" in report["0"].note
    padded, report = tensorize(model, max_rank=4, d=2, pad=True)
    assert isinstance(padded[0], PaddedTTLinear) and padded[0].layer.in_features == 70
    x = torch.randn(3, 67, dtype=torch.float64)
    weight = padded[0].layer.to_dense()[:64, :67]  # the padded TT's block: what the padded layer computes
    torch.testing.assert_close(padded(x), x @ weight.T + model[0].bias, rtol=1e-12, atol=1e-12)
    error = (torch.linalg.norm(weight - model[0].weight) / torch.linalg.norm(model[0].weight)).detach()
    assert abs(report["0"].error - float(error)) < 1e-12 and "zero-padded to 70 -> 64" in report["0"].note
    assert sorted(tt_torch.transfer.export(padded)) == ["0.layer.bias", "0.layer.cores.0", "0.layer.cores.1"]


def test_budget_split_and_float32_error_measured() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    small, report = tensorize(model, compression=10.0)
    assert report.tensorized == ["0", "2"]
    tt = sum(report[n].params_after for n in report.tensorized)
    assert tt <= sum(report[n].params_before for n in report.tensorized) / 10
    for name in report.tensorized:
        weight = model.get_submodule(name).weight.detach().double()
        built = small.get_submodule(name).to_dense().detach().double()
        measured = float(torch.linalg.norm(weight - built) / torch.linalg.norm(weight))
        assert abs(report[name].error - measured) < 1e-6  # float32 cores: the report measures them in float64


def test_bad_input_raises_and_leaves_the_model_unchanged() -> None:
    with pytest.raises(ValueError, match="model has no dense layer"):
        tensorize(nn.Sequential(nn.ReLU()), max_rank=2)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        tensorize("model", max_rank=2)
    shared = nn.Linear(64, 64)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ValueError, match=r"dense layer '0' is shared: the model holds it at \['0', '2'\]"):
        tensorize(model, max_rank=2, inplace=True)
    assert model[0] is shared and model[2] is shared
    nested = nn.Sequential(nn.Sequential(shared), nn.Sequential(shared))
    with pytest.raises(ValueError, match="is shared"):
        tensorize(nested, max_rank=2)
    ints = nn.Linear(64, 64)
    ints.weight = nn.Parameter(torch.ones(64, 64, dtype=torch.int32), requires_grad=False)
    with pytest.raises(ValueError, match="dense layer 'model' has int32 weights"):
        tensorize(ints, max_rank=2)
    model = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(ValueError, match="include='x' matches no dense layer"):
        tensorize(model, max_rank=2, include="x", inplace=True)
    with pytest.raises(ValueError, match="below the smallest TT"):
        tensorize(model, max_params=5, inplace=True)
    with pytest.raises(ValueError, match="batch_size"):
        tensorize(model, max_rank=2, batch_size=0)
    assert isinstance(model[0], nn.Linear)


def test_include_predicate_sees_the_layer_and_subclasses_stay_dense() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    small, report = tensorize(model, max_rank=2, include=lambda name, linear: linear.out_features == 32)
    assert report.tensorized == ["1"]
    attention = nn.Sequential(nn.MultiheadAttention(64, 4), nn.Linear(64, 64))
    _, report = tensorize(attention, max_rank=2)
    assert report.tensorized == ["1"] and "subclass of nn.Linear" in report["0.out_proj"].note


def test_from_linear_chooses_modes_when_none_are_given() -> None:
    layer = TTLinear.from_linear(nn.Linear(4096, 4096), max_rank=4, d=4)
    assert layer.in_modes == (8, 8, 8, 8) and layer.ranks == (1, 4, 4, 4, 1)
    with pytest.raises(ValueError, match="both in_modes and out_modes"):
        TTLinear.from_linear(nn.Linear(16, 9), (4, 4))
