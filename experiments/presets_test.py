"""Preset parameter counts against the thesis, and the framework-neutral spec rules."""

import pytest

from experiments.presets import PRESETS, TT, Dense, Network, get_preset


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.thesis_params is not None])
def test_preset_counts_equal_the_thesis(name) -> None:
    assert PRESETS[name].param_count() == PRESETS[name].thesis_params


def test_counts_by_hand() -> None:
    # fc-fc: 784*262144 + 262144 + 2*262144 (batch norm) + 262144*10 + 10 + 2*10.
    assert get_preset("fc-fc").param_count() == 784 * 262144 + 3 * 262144 + 2621440 + 30
    # cifar-fc has no thesis count: 3072->4096->4096->1024->10, biases, batch norm.
    dense = 3072 * 4096 + 4096 * 4096 + 4096 * 1024 + 1024 * 10
    assert get_preset("cifar-fc").param_count() == dense + 3 * (4096 + 4096 + 1024 + 10)


def test_improved_variants_only_drop_the_last_relu() -> None:
    faithful, improved = get_preset("tt-tt"), get_preset("tt-tt-improved")
    assert faithful.relu_after_last and not improved.relu_after_last
    assert faithful.layers == improved.layers and faithful.param_count() == improved.param_count()


def test_bad_specs() -> None:
    with pytest.raises(ValueError, match="unknown model 'tt'"):
        get_preset("tt")
    with pytest.raises(ValueError, match="do not chain"):
        Network("bad", "mnist", (Dense(784, 10), TT((2, 2), (2, 2), 2)))
