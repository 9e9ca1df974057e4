"""Training end to end on a slice of real MNIST, both backends: learning, resume, divergence, transfer.

Uses the small ``tt-tt-tt`` network (30,574 parameters) so that each run is a
few seconds after compilation. Skips when the MNIST files are not available.
"""

import json

import numpy as np
import pytest

from experiments import checkpoint
from experiments.data import DataNotFoundError, load_dataset
from experiments.optim import OptimizerConfig
from experiments.presets import get_preset
from experiments.train import CHECKPOINT, DivergenceError, RunConfig, main, silent_progress, train
from tt_common.transfer import load_metadata, load_weights

LIMIT = 1000



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


def _saved(out) -> checkpoint.Checkpoint:
    return checkpoint.read(out / CHECKPOINT)


@pytest.fixture(scope="module", params=["jax", "torch"])
def runs(request, tmp_path_factory):
    """Two epochs straight, and one epoch then a resumed second, for one backend."""
    backend = request.param
    straight, resumed = tmp_path_factory.mktemp(f"{backend}-straight"), tmp_path_factory.mktemp(f"{backend}-resumed")
    summary = train(_config(backend, 2), straight, progress=silent_progress)
    train(_config(backend, 1), resumed, progress=silent_progress)  # as if killed after epoch 1
    train(_config(backend, 2), resumed, resume=True, progress=silent_progress)
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
    a, b = _saved(straight), _saved(resumed)
    assert a.rows[1]["train_loss"] == b.rows[1]["train_loss"]
    assert a.rows[1]["test_acc"] == b.rows[1]["test_acc"]
    # parameters, batch-norm statistics, optimizer and RNG state, byte for byte
    assert sorted(a.arrays) == sorted(b.arrays) and len(a.arrays) > 20
    for key, value in a.arrays.items():
        assert value.dtype == b.arrays[key].dtype and value.tobytes() == b.arrays[key].tobytes(), key
    assert a.meta == b.meta
    for name in ("weights-final.safetensors", "weights-best-val.safetensors"):
        # (safetensors writes its metadata in no fixed order: compare the contents, not the bytes)
        want, got = load_weights(straight / name), load_weights(resumed / name)
        assert sorted(want) == sorted(got) and all(want[k].tobytes() == got[k].tobytes() for k in want)
        assert load_metadata(straight / name) == load_metadata(resumed / name)


def test_resume_refuses_another_configuration(tmp_path) -> None:
    train(_config("torch", 1), tmp_path, progress=silent_progress)
    message = r"different configuration: optimizer.learning_rate \(--lr\): 0.01 in the checkpoint, 0.5 now"
    with pytest.raises(ValueError, match=message):
        train(_config("torch", 2, lr=0.5), tmp_path, resume=True, progress=silent_progress)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_divergence_stops_with_a_clear_message(backend, tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(DivergenceError, match="diverged at epoch 1"):
        train(_config(backend, 1, lr=1e6), out, progress=silent_progress)
    assert not out.exists()  # it failed in its first epoch: the folder it made is gone, nothing is left


def test_cli_refuses_a_model_of_the_other_dataset_before_loading_data(tmp_path, capsys, monkeypatch) -> None:
    import experiments.train

    monkeypatch.setattr(experiments.train, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(SystemExit) as exit:
        main(["--model", "cifar-tt", "--dataset", "mnist", "--out", str(tmp_path / "run")])
    assert exit.value.code == 1
    assert capsys.readouterr().err == ("error: model 'cifar-tt' (--model) is a cifar10 network, not for "
                                       "--dataset mnist\n")
    assert not (tmp_path / "run").exists()


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


def test_load_model_moves_a_run_to_either_framework(runs) -> None:
    import jax.numpy as jnp
    import torch

    import experiments

    backend, summary, straight, _ = runs
    data = load_dataset("mnist", limit=LIMIT, val_size=1000)
    batches = np.split(data.x_test, 2)  # the run's evaluation batches of 500
    models = {b: experiments.load_model(straight, backend=b, which="best-val") for b in ("jax", "torch")}
    with torch.no_grad():
        logits = {"torch": np.concatenate([models["torch"](torch.from_numpy(x)).numpy() for x in batches]),
                  "jax": np.concatenate([np.asarray(models["jax"](jnp.asarray(x))) for x in batches])}
    assert np.mean(logits[backend].argmax(-1) == data.y_test) == summary["test_acc"]  # the run's own framework
    want = logits[backend]
    other = logits["torch" if backend == "jax" else "jax"]
    np.testing.assert_allclose(other, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())  # float32 rounding only
