"""experiments.compress on a tiny synthetic MNIST: conversion, fine-tuning, the records, refusals, the CLI.

The source is t3f's MLP (784-625-10, no batch norm) trained one epoch with torch on 30 random images; each
conversion and fine-tuning then takes about a second (JAX: plus its compilation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import compress as compress_module
from experiments import data, load_model
from experiments.cli_test import _checksums, _cli, _error
from experiments.compress import Settings, compress, finetune_config, read_source, tensorized_network
from experiments.data_test import _write_mnist
from experiments.optim import OptimizerConfig
from experiments.presets import TT, Dense, get_preset
from experiments.train import RunConfig, silent_progress, train

MODEL = "t3f-784-625-10"


def _source_config(data_dir: Path) -> RunConfig:
    return RunConfig(dataset="mnist", model=MODEL, backend="torch", epochs=1, batch_size=10, eval_batch_size=20,
                     val_size=10, optimizer=OptimizerConfig("adam", 0.001, cosine_epochs=1), data_dir=str(data_dir))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A synthetic MNIST whose checksums ``experiments.data`` accepts, and a finished dense run on it."""
    root = tmp_path_factory.mktemp("compress")
    _write_mnist(root / "data", n_train=30, n_test=20)
    sums = _checksums(root / "data")
    patch = pytest.MonkeyPatch()
    for key, value in sums.items():
        patch.setitem(data.MNIST_FILES, key, tuple(value))
    patch.setenv("TT_CACHE_DIR", str(root / "cache"))
    train(_source_config(root / "data"), root / "dense", progress=silent_progress)
    yield {"root": root, "data": root / "data", "dense": root / "dense", "sums": sums}
    patch.undo()


def test_tensorized_network_takes_the_reports_modes_and_ranks() -> None:
    import tt_torch
    from experiments import models_torch

    spec = get_preset(MODEL)
    _, report = tt_torch.tensorize(models_torch.build(spec), max_rank=4, include=["layers.0"], d=2)
    tt = tensorized_network(spec, report, "small")
    assert isinstance(tt.layers[0], TT) and tt.layers[1] == Dense(625, 10)
    assert tt.layers[0].shape.ranks == report["layers.0"].ranks and not tt.batch_norm
    assert tt.param_count() == report.params_after and tt.thesis_accuracy is None


def test_settings_and_recipe_are_checked_first() -> None:
    with pytest.raises(ValueError, match="give max_rank, rtol, compression or max_params"):
        Settings().check()
    with pytest.raises(ValueError, match=r"compression must be a finite number >= 1"):
        Settings(compression=0.5).check()
    with pytest.raises(ValueError, match="include must be a non-empty tuple"):
        Settings(max_rank=2, include="layers.0").check()
    with pytest.raises(ValueError, match=r"learning_rate \(--lr\)"):
        finetune_config(RunConfig(model=MODEL), 2, lr=-1.0)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_compress_converts_evaluates_fine_tunes_and_records(world, tmp_path, backend) -> None:
    out = tmp_path / "tt"
    summary = compress(world["dense"], Settings(compression=20), out, epochs=2, backend=backend,
                       progress=silent_progress)
    start = summary["start"]
    assert start["source"] == str(world["dense"]) and start["weights"] == "best-val"
    assert start["tensorize"]["params_before"] == get_preset(MODEL).param_count()
    assert summary["params"] == start["tensorize"]["params_after"] < start["tensorize"]["params_before"] / 10
    assert 0 <= start["before_training"]["test_acc"] <= 1 and summary["epochs_run"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == MODEL and config["backend"] == backend and config["epochs"] == 2
    assert config["optimizer"]["cosine_epochs"] == 2  # the run's cosine spanned it: it spans the fine-tuning
    assert isinstance(get_preset(MODEL).layers[0], Dense) and "tt" in config["network"]["layers"][0]
    # The fine-tuned model loads from its folder into either framework (the network comes from config.json).
    import torch

    model = load_model(out, backend="torch", which="final")
    dataset = data.load_dataset("mnist", data_dir=world["data"], val_size=10)
    with torch.no_grad():
        predicted = model(torch.from_numpy(dataset.x_test)).argmax(-1).numpy()
    assert np.mean(predicted == dataset.y_test) == pytest.approx(summary["final_test_acc"])


def test_the_converted_weights_are_the_tensorized_model(world) -> None:
    """What the fine-tuning starts from evaluates as tensorize's own model: nothing is lost between them."""
    import torch

    import tt_torch
    from experiments import models_torch

    _, spec, which = read_source(world["dense"])
    conversion = compress_module.convert(world["dense"], Settings(max_rank=3), backend="torch", which=which,
                                         spec=spec)
    direct, _ = tt_torch.tensorize(load_model(world["dense"], backend="torch", which=which), max_rank=3)
    built = tt_torch.transfer.load(models_torch.build(conversion.spec), conversion.weights).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 784)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(built(x), direct.eval()(x))
    assert conversion.report.params_after == conversion.spec.param_count()


def test_an_existing_output_is_refused_before_any_work(world, tmp_path, monkeypatch) -> None:
    out = tmp_path / "tt"
    compress(world["dense"], Settings(max_rank=2), out, epochs=1, progress=silent_progress)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(compress_module, "convert", lambda *a, **k: pytest.fail("converted"))
    with pytest.raises(ValueError, match="holds a run"):
        compress(world["dense"], Settings(max_rank=2), out, epochs=1, progress=silent_progress)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_folder_that_is_no_run_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such folder"):
        read_source(tmp_path / "missing")
    with pytest.raises(ValueError, match="config.json does not name the run's model"):
        read_source(tmp_path)


def test_the_cli_prints_the_report_and_refuses_mistakes(world, tmp_path) -> None:
    root, sums = world["root"], world["sums"]
    out = tmp_path / "cli"
    result = _cli("experiments.compress", "--from", str(world["dense"]), "--compression", "10", "--epochs", "1",
                  "--device", "cpu", "--out", str(out), root=root, sums=sums)
    assert result.returncode == 0, result.stderr
    assert "| total | 2 of 2 layers |" in result.stdout or "| total | 1 of 2 layers |" in result.stdout
    assert "after conversion" in result.stdout and (out / "summary.json").exists()
    again = _cli("experiments.compress", "--from", str(world["dense"]), "--compression", "10", "--out", str(out),
                 root=root, sums=sums)
    assert _error(again).startswith(f"error: {out} holds a run")
    bad = _cli("experiments.compress", "--from", str(world["dense"]), "--compression", "0.5", "--out",
               str(tmp_path / "bad"), root=root, sums=sums)
    assert _error(bad) == ("error: compression must be a finite number >= 1 (dense parameters over TT "
                           "parameters), got 0.5")
    assert not (tmp_path / "bad").exists()
    missing = _cli("experiments.compress", "--from", str(tmp_path / "nothing"), "--max-rank", "4", root=root)
    assert _error(missing) == f"error: --from {tmp_path / 'nothing'}: no such folder"


def test_the_study_runs_its_rows_and_renders_its_section(world, tmp_path, monkeypatch) -> None:
    from dataclasses import replace

    from experiments import compress_study, report

    small = replace(compress_study.DENSE[MODEL], epochs=1, batch_size=10, eval_batch_size=20, val_size=10,
                    data_dir=str(world["data"]))
    monkeypatch.setattr(compress_study, "DENSE", {MODEL: small})
    monkeypatch.setattr(compress_study, "SETTINGS", {MODEL: {"r16": compress_study.SETTINGS[MODEL]["r16"],
                                                            "1e9x": Settings(compression=1e9)}})
    monkeypatch.setattr(compress_study, "JAX_ROWS", ())
    statuses = dict(compress_study.run_study("torch", results=tmp_path, kinds=["dense", "ft", "scratch"],
                                             progress=silent_progress))
    assert statuses[f"{MODEL}-r16-torch"].startswith("test acc")
    assert statuses[f"{MODEL}-1e9x-torch"].startswith("failed: ")  # no TT is that small: recorded, not raised
    ft = json.loads((tmp_path / "compress" / f"{MODEL}-r16-torch" / "summary.json").read_text())
    layer = ft["start"]["tensorize"]["layers"][0]
    assert (layer["in_modes"], layer["out_modes"], max(layer["ranks"])) == ([7, 4, 7, 4], [5, 5, 5, 5], 16)
    scratch = json.loads((tmp_path / "compress" / f"{MODEL}-r16-scratch-torch" / "summary.json").read_text())
    assert scratch["params"] == ft["params"] and scratch["start"]["before_training"] is None
    again = dict(compress_study.run_study("torch", results=tmp_path, kinds=["dense", "ft", "scratch"],
                                          progress=silent_progress))
    assert again[f"{MODEL}-r16-torch"] == "skipped"
    text = "\n".join(compress_study.section(tmp_path))
    assert "| r16 | torch |" in text and "failed: " in text and "Goals:" in text
    assert compress_study.plot(tmp_path).stat().st_size > 0
    assert "## compress: trained dense MLPs tensorized" in report.render(tmp_path)


def test_torch_mpo_conversion_computes_what_torch_mpo_does(world) -> None:
    pytest.importorskip("torch_mpo", reason="torch-mpo is a study-only dependency (experiments/peer_mpo.py)")
    from experiments.peer_mpo import mpo_conversion, mpo_rank_for

    _, spec, which = read_source(world["dense"])
    model = load_model(world["dense"], backend="torch", which=which)
    budget = 20_000
    rank = mpo_rank_for(model, ["layers.0"], budget)
    conversion = mpo_conversion(world["dense"], ["layers.0"], budget, which=which, spec=spec, name="mpo")
    assert conversion.info["rank"] == rank and conversion.info["params"] <= budget
    assert isinstance(conversion.spec.layers[0], TT) and conversion.spec.layers[1] == Dense(625, 10)
    assert conversion.spec.param_count() == conversion.info["params"]  # the copied network counts as torch-mpo's
    with pytest.raises(ValueError, match="rank 1 needs more than"):
        mpo_rank_for(model, ["layers.0"], 6_000)  # the dense 625 -> 10 layer alone holds 6,260


def test_distillation_is_the_same_loss_in_both_backends(world, tmp_path) -> None:
    """The dense run as the teacher (weight 1: the loss is the KL term alone): the converted model's first
    epoch has the same loss in both frameworks (the same cores, data and steps), and not the plain one."""
    losses = {}
    for backend in ("torch", "jax"):
        summary = compress(world["dense"], Settings(max_rank=2), tmp_path / backend, epochs=1, backend=backend,
                           progress=silent_progress, distill=1.0, temperature=3.0)
        assert summary["start"]["distill"] == {"weight": 1.0, "temperature": 3.0, "teacher": "best-val"}
        losses[backend] = json.loads((tmp_path / backend / "metrics.jsonl").read_text())["train_loss"]
    compress(world["dense"], Settings(max_rank=2), tmp_path / "plain", epochs=1, backend="torch",
             progress=silent_progress)
    plain = json.loads((tmp_path / "plain" / "metrics.jsonl").read_text())["train_loss"]
    assert losses["torch"] == pytest.approx(losses["jax"], rel=1e-4)
    assert 0 < losses["torch"] and losses["torch"] != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize("weight, temperature, message", [(0.0, 2.0, "distill weight must be in"),
                                                          (0.5, -1.0, "distill temperature must be positive")])
def test_a_bad_distillation_is_refused_before_any_work(world, tmp_path, weight, temperature, message) -> None:
    with pytest.raises(ValueError, match=message):
        compress(world["dense"], Settings(max_rank=2), tmp_path / "out", epochs=1, distill=weight,
                 temperature=temperature, progress=silent_progress)
    assert not (tmp_path / "out").exists()
