"""Training end to end on a slice of real MNIST, both backends: learning, resume, divergence, transfer.

Uses the small ``tt-tt-tt`` network (30,574 parameters) so that each run is a
few seconds after compilation. Skips when the MNIST files are not available.
"""

import json
import pickle

import numpy as np
import pytest

from experiments.data import DataNotFoundError, load_dataset
from experiments.optim import OptimizerConfig
from experiments.presets import get_preset
from experiments.train import CHECKPOINT, DivergenceError, RunConfig, main, train

LIMIT = 1000


def _quiet(**kwargs):
    class Bar:
        def set_postfix(self, **_):
            pass

        def update(self, _):
            pass

        def close(self):
            pass

    return Bar()


@pytest.fixture(scope="module", autouse=True)
def _mnist():
    try:
        load_dataset("mnist", limit=10)
    except DataNotFoundError as error:
        pytest.skip(f"MNIST not available: {error}")


def _config(backend: str, epochs: int, lr: float = 0.01) -> RunConfig:
    return RunConfig(
        dataset="mnist", model="tt-tt-tt", backend=backend, epochs=epochs, batch_size=100,
        eval_batch_size=500, limit=LIMIT, val_size=1000, optimizer=OptimizerConfig("adam", learning_rate=lr),
    )


def _params(out) -> dict:
    return pickle.loads((out / CHECKPOINT).read_bytes())


@pytest.fixture(scope="module", params=["jax", "torch"])
def runs(request, tmp_path_factory):
    """Two epochs straight, and one epoch then a resumed second, for one backend."""
    backend = request.param
    straight, resumed = tmp_path_factory.mktemp(f"{backend}-straight"), tmp_path_factory.mktemp(f"{backend}-resumed")
    summary = train(_config(backend, 2), straight, progress=_quiet)
    train(_config(backend, 1), resumed, progress=_quiet)  # as if killed after epoch 1
    train(_config(backend, 2), resumed, resume=True, progress=_quiet)
    return backend, summary, straight, resumed


def test_smoke_training_learns(runs) -> None:
    _, summary, straight, _ = runs
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert summary["test_acc"] > 0.5  # chance is 0.1
    assert (straight / "curves.png").stat().st_size > 0
    assert summary["params"] == 30_574


def test_resume_gives_identical_results(runs) -> None:
    _, _, straight, resumed = runs
    a, b = _params(straight), _params(resumed)
    assert a["rows"][1]["train_loss"] == b["rows"][1]["train_loss"]
    assert a["rows"][1]["test_acc"] == b["rows"][1]["test_acc"]
    assert a["backend"] == b["backend"]  # parameters, optimizer and RNG state, byte for byte


def test_resume_refuses_another_configuration(tmp_path) -> None:
    train(_config("torch", 1), tmp_path, progress=_quiet)
    with pytest.raises(ValueError, match="different configuration"):
        train(_config("torch", 2, lr=0.5), tmp_path, resume=True, progress=_quiet)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_divergence_stops_with_a_clear_message(backend, tmp_path) -> None:
    with pytest.raises(DivergenceError, match="diverged at epoch 1"):
        train(_config(backend, 1, lr=1e6), tmp_path, progress=_quiet)


def test_cli_refuses_a_model_of_the_other_dataset(tmp_path) -> None:
    with pytest.raises(ValueError, match="is a cifar10 network"):
        main(["--model", "cifar-tt", "--dataset", "mnist", "--out", str(tmp_path)])


def test_models_agree_across_backends_after_transfer() -> None:
    import jax.numpy as jnp
    import torch

    import tt_jax
    import tt_torch
    from experiments import models_jax, models_torch

    spec = get_preset("tt-tt-tt")
    jax_model = models_jax.build(spec, seed=0)
    torch_model = models_torch.build(spec, seed=1)
    tt_torch.transfer.load(torch_model, tt_jax.transfer.export(jax_model))
    jax_model.eval()
    torch_model.eval()
    x = np.random.default_rng(0).standard_normal((8, 784)).astype(np.float32)
    want = np.asarray(jax_model(jnp.asarray(x)))
    got = torch_model(torch.from_numpy(x)).detach().numpy()
    # float32: three layers of float32 rounding, relative to the output scale.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
