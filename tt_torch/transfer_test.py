"""The torch side of the transfer format (the cross-framework checks are in parity_tests/transfer_test.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tt_torch import TTLinear, transfer


def _layers() -> nn.Sequential:
    return nn.Sequential(
        TTLinear((2, 3), (2, 2), 2, bias=False), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 3)
    )


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = _layers()
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def test_export_names_layouts_and_copies() -> None:
    model = _model()
    weights = transfer.export(model)
    assert sorted(weights) == ["0.cores.0", "0.cores.1", "1.bias", "1.mean", "1.scale", "1.var", "4.bias", "4.kernel"]
    assert weights["4.kernel"].shape == (4, 3)
    assert np.array_equal(weights["4.kernel"], model[4].weight.detach().numpy().T)
    assert weights["1.var"].dtype == np.float32
    weights["1.mean"][:] = 0.0  # a copy: the model is untouched
    assert torch.count_nonzero(model[1].running_mean) == 4


def test_file_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _model()
    transfer.save_file(model, tmp_path / "w.safetensors")
    other = _layers()
    transfer.load_file(other, tmp_path / "w.safetensors")
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        if not name.endswith("num_batches_tracked"):  # not part of the format
            assert torch.equal(a, b), name


def test_batch_norm_2d_and_untracked_statistics() -> None:
    assert sorted(transfer.export(nn.BatchNorm2d(3))) == ["bias", "mean", "scale", "var"]
    assert sorted(transfer.export(nn.BatchNorm1d(3, affine=False, track_running_stats=False))) == []


def test_errors_name_the_key() -> None:
    weights = transfer.export(_model())
    weights["0.cores.1"] = weights["0.cores.1"][:1]
    message = r"shape mismatch for key '0\.cores\.1': expected \(2, 3, 2, 1\), got \(1, 3, 2, 1\)"
    with pytest.raises(ValueError, match=message):
        transfer.load(_model(), weights)
    with pytest.raises(ValueError, match="cannot export key 'kernel'"):
        transfer.export(nn.Linear(2, 2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="parameter 'weight'"):
        transfer.export(nn.Conv1d(2, 2, 1))


@pytest.mark.parametrize("dtype", [np.int64, np.bool_])
def test_integer_or_bool_weights_are_refused_naming_the_key(dtype) -> None:
    weights = transfer.export(_model())
    weights["4.bias"] = weights["4.bias"].astype(dtype)
    model = _model()
    before = model[4].bias.detach().clone()
    with pytest.raises(ValueError, match=f"key '4.bias' holds {np.dtype(dtype).name} values"):
        transfer.load(model, weights)
    assert torch.equal(model[4].bias, before)  # nothing changed
