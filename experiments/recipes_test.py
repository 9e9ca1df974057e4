"""Recipes and the CLI's flags over them: a flag replaces one field, the rest stays the recipe's."""

from __future__ import annotations

from dataclasses import replace

import pytest

from experiments.recipes import RECIPES, get_recipe, recipe_config
from experiments.train import _parser, config_from_args


def _config(*argv: str):
    return config_from_args(_parser().parse_args(list(argv)))


def test_the_thesis_recipe_is_its_code() -> None:
    mnist, cifar = _config("--recipe", "thesis", "--model", "tt-tt-tt"), get_recipe("thesis", "cifar10")
    assert (mnist.tt_init, mnist.dense_init, mnist.normalize, mnist.val_size) == ("thesis", "torch", False, 0)
    assert (mnist.optimizer.name, mnist.optimizer.learning_rate, mnist.optimizer.momentum) == ("sgd", 0.001, 0.8)
    assert (cifar.optimizer.name, cifar.optimizer.rho, cifar.optimizer.eps, cifar.epochs) == ("adadelta", 0.9, 1e-6, 100)


def test_a_flag_changes_one_factor_only() -> None:
    base = _config("--recipe", "ours", "--model", "tt-tt-tt")
    changed = _config("--recipe", "ours", "--model", "tt-tt-tt", "--tt-init", "thesis")
    assert changed.tt_init == "thesis" and replace(changed, tt_init="lecun") == base
    assert _config("--recipe", "ours", "--model", "tt-tt-tt", "--no-normalize").normalize is False
    assert _config("--recipe", "ours", "--model", "tt-tt-tt", "--momentum", "0.8").optimizer.momentum == 0.8


def test_the_improved_cosine_spans_the_epochs_asked_for() -> None:
    assert _config("--model", "tt-tt-tt-improved").recipe == "improved"  # the CLI's default
    assert _config("--model", "tt-tt-tt-improved", "--epochs", "5").optimizer.cosine_epochs == 5
    assert _config("--model", "tt-tt-tt-improved", "--epochs", "5", "--cosine-epochs", "9").optimizer.cosine_epochs == 9
    assert _config("--recipe", "ours", "--epochs", "3").optimizer.cosine_epochs == 0


def test_another_optimizer_starts_from_its_usual_settings() -> None:
    config = _config("--model", "tt-tt-tt-improved", "--optimizer", "sgd")
    assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.cosine_epochs) == ("sgd", 0.001, 0)


@pytest.mark.parametrize("name, dataset", [("best", "mnist"), ("thesis", "imagenet")])
def test_unknown_recipes_and_datasets_are_refused_naming_them(name, dataset) -> None:
    with pytest.raises(ValueError, match="recipe must be one of" if name == "best" else "dataset must be one of"):
        recipe_config(name, dataset, "tt-tt-tt")
    assert set(RECIPES) == {"ours", "thesis", "improved"}
