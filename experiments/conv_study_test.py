"""experiments.conv_study on a tiny synthetic CIFAR-10: both backends train the same network to the same
records, a finished run is skipped, the report section states the goal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import conv_study, data
from experiments.conv_net import ConvNet, Recipe
from experiments.data_test import _write_cifar

RECIPE = Recipe(epochs=2, batch_size=5)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> data.Dataset:
    root = tmp_path_factory.mktemp("cifar")
    _write_cifar(root)
    patch = pytest.MonkeyPatch()
    patch.setenv("TT_CACHE_DIR", str(root / "cache"))
    yield data.load_dataset("cifar10", data_dir=root, val_size=5, verify=False, flatten=False)
    patch.undo()


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_tt_setting_trains_and_records(backend: str, cifar: data.Dataset, tmp_path: Path) -> None:
    lines: list[str] = []
    summary = conv_study.run_setting("tt-r4", backend, recipe=RECIPE, results=tmp_path, data=cifar, log=lines.append)
    out = tmp_path / "conv-cifar" / f"tt-r4-{backend}"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and len(lines) == 2
    assert summary["params"] == ConvNet(4).param_count() == json.loads((out / "config.json").read_text())["params"]
    assert summary["test_acc"] == metrics[summary["chosen_epoch"] - 1]["test_acc"]
    assert all(0 <= m["test_acc"] <= 1 and m["train_loss"] > 0 for m in metrics)
    again = conv_study.run_setting("tt-r4", backend, recipe=RECIPE, results=tmp_path, data=cifar, log=lines.append)
    assert again == summary and lines[-1].endswith("finished, skipped")


def test_the_section_states_the_goal(cifar: data.Dataset, tmp_path: Path) -> None:
    for setting in ("dense", "tt-r8"):
        conv_study.run_setting(setting, "torch", recipe=RECIPE, results=tmp_path, data=cifar, log=lambda _: None)
    text = "\n".join(conv_study.section(tmp_path))
    assert "| tt-r8 | torch | 14,882 | 26.3x |" in text and "- torch: `tt-r8` (26x fewer parameters)" in text
    assert "- jax: not measured" in text and conv_study.plot(tmp_path).exists()


def test_a_batch_larger_than_the_data_is_refused(cifar: data.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size 128 is larger than the 15 training images"):
        conv_study.run_setting("dense", "torch", results=tmp_path, data=cifar)
    assert not (tmp_path / "conv-cifar").exists()
