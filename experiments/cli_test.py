"""The CLIs fed a new user's mistakes, each run in a subprocess on a tiny synthetic MNIST (no real data needed).

The subprocess runs the real entry point (``python -m experiments.train ...``) after registering the synthetic
files' sha256 in :data:`experiments.data.MNIST_FILES`, so that checksum verification stays on. Training runs use
the small ``tt-tt-tt`` network with torch on 20 training images.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import cli, data
from experiments.data_test import _write_mnist
from experiments.train import silent_progress

REPO = Path(__file__).resolve().parent.parent
RUNNER = """
import json, runpy, sys
from experiments import data
data.MNIST_FILES.update(json.loads(sys.argv.pop(1)))  # the synthetic files' checksums
module = sys.argv.pop(1)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""
TRAIN = ["--recipe", "ours", "--model", "tt-tt-tt", "--backend", "torch", "--device", "cpu", "--epochs", "2", "--batch-size", "10",
         "--eval-batch-size", "20", "--val-size", "10", "--lr", "0.01", "--optimizer", "adam"]


def _checksums(root: Path) -> dict[str, list[str]]:
    return {key: [name, hashlib.sha256((root / "mnist" / name).read_bytes()).hexdigest()]
            for key, (name, _) in data.MNIST_FILES.items()}


def _cli(module: str, *args: str, root: Path, sums: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TT_RETAIN_MEMORY": "0",
           "JAX_PLATFORMS": "cpu", "TT_CACHE_DIR": str(root / "cache")}
    command = [sys.executable, "-c", RUNNER, json.dumps(sums or {}), module, *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _error(result: subprocess.CompletedProcess) -> str:
    """The one error line of a refused command (and that there is no traceback)."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A synthetic MNIST under ``data/`` and a finished two-epoch run of the training CLI in ``run/``."""
    root = tmp_path_factory.mktemp("world")
    _write_mnist(root / "data", n_train=30, n_test=20)
    sums = _checksums(root / "data")
    result = _cli("experiments.train", *TRAIN, "--data-dir", str(root / "data"), "--out", str(root / "run"),
                  root=root, sums=sums)
    assert result.returncode == 0, result.stderr
    return {"root": root, "data": root / "data", "run": root / "run", "sums": sums}


def _train(world: dict, *args: str, out: Path | None = None, sums: bool = True) -> subprocess.CompletedProcess:
    out_args = ["--out", str(out)] if out is not None else []
    return _cli("experiments.train", *TRAIN, "--data-dir", str(world["data"]), *out_args, *args,
                root=world["root"], sums=world["sums"] if sums else None)


def _copy(world: dict, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    return run


# --------------------------------------------------------------------------------------------------
# 1. Runs are never overwritten by accident


def test_a_run_writes_its_files(world) -> None:
    assert sorted(_files(world["run"])) == ["checkpoint.safetensors", "config.json", "curves.png", "metrics.jsonl",
                                            "summary.json", "weights-best-val.safetensors",
                                            "weights-final.safetensors"]
    assert len((world["run"] / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_new_run_into_a_folder_holding_a_run_is_refused_and_touches_nothing(world, tmp_path) -> None:
    run = _copy(world, tmp_path)
    before = _files(run)
    line = _error(_train(world, "--epochs", "1", out=run))
    assert line.startswith(f"error: {run} holds a run (config.json, metrics.jsonl, summary.json, curves.png, ")
    assert f"continue it with --resume, replace it with --overwrite, or write elsewhere with --out (e.g. --out {run}-2)" \
        in line
    assert _files(run) == before


def test_a_rerun_that_fails_leaves_the_run_as_it_was(world, tmp_path) -> None:
    run = _copy(world, tmp_path)
    before = _files(run)
    line = _error(_train(world, "--batch-size", "0", "--overwrite", out=run))
    assert line == "error: batch_size (--batch-size) must be a positive integer, got 0"
    assert _files(run) == before
    # a replacement that fails later (here on the data, bad checksums) leaves the old run whole too
    assert "bad checksum" in _error(_train(world, "--overwrite", out=run, sums=False))
    assert _files(run) == before


def test_overwrite_replaces_the_run(world, tmp_path) -> None:
    run = _copy(world, tmp_path)
    result = _train(world, "--epochs", "1", "--overwrite", out=run)
    assert result.returncode == 0, result.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run / "config.json").read_text())["epochs"] == 1
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 1


def test_a_rerun_into_the_default_folder_goes_to_a_fresh_one_and_says_so(world, tmp_path) -> None:
    """Without --out, a second run (make train twice) writes to <default>-2 and leaves the first run whole."""
    root = tmp_path / "cwd"
    root.mkdir()

    def run():
        return _cli("experiments.train", *TRAIN, "--epochs", "1", "--data-dir", str(world["data"]), root=root,
                    sums=world["sums"])

    default = root / "runs" / "mnist-tt-tt-tt-torch-ours-s0"
    first = run()
    assert first.returncode == 0, first.stderr
    before = _files(default)
    second = run()
    assert second.returncode == 0, second.stderr
    assert f"{default.relative_to(root)} holds a run: writing to {default.relative_to(root)}-2" in second.stderr
    assert _files(default) == before
    assert json.loads((default.with_name(default.name + "-2") / "summary.json").read_text())["epochs_run"] == 1


def test_a_run_that_fails_before_its_first_epoch_leaves_no_trace(world, tmp_path) -> None:
    empty = tmp_path / "mine"
    empty.mkdir()
    (empty / "notes.txt").write_text("the user's")
    # bad checksums: the data are refused after the folders are checked
    assert "bad checksum" in _error(_train(world, out=empty, sums=False))
    assert _files(empty) == {"notes.txt": b"the user's"}
    new = tmp_path / "new" / "run"
    assert "bad checksum" in _error(_train(world, out=new, sums=False))
    assert not (tmp_path / "new").exists()  # the folders it made are gone


# --------------------------------------------------------------------------------------------------
# 2. --resume


def test_resume_without_a_checkpoint_is_an_error(world, tmp_path) -> None:
    line = _error(_train(world, "--resume", out=tmp_path / "typo"))
    assert line == (f"error: --resume: no checkpoint in {tmp_path / 'typo'} (no checkpoint.safetensors); "
                    "check --out, or start a new run without --resume")
    assert not (tmp_path / "typo").exists()


def test_a_refused_resume_names_each_differing_setting(world, tmp_path) -> None:
    run = _copy(world, tmp_path)
    line = _error(_train(world, "--resume", "--lr", "0.5", "--seed", "3", out=run))
    assert "was written by a different configuration: seed (--seed): 0 in the checkpoint, 3 now; " in line
    assert ("optimizer.learning_rate (--lr): 0.01 in the checkpoint, 0.5 now (only --epochs and --devices may "
            "change)") in line


def test_resuming_a_cosine_run_for_more_epochs_says_how_to_keep_its_schedule(world, tmp_path) -> None:
    run = _copy(world, tmp_path)  # the world's run has no cosine decay: start one of 2 epochs
    assert _train(world, "--cosine-epochs", "2", "--overwrite", out=run).returncode == 0
    line = _error(_train(world, "--resume", "--epochs", "3", "--cosine-epochs", "3", out=run))
    assert line.endswith("A cosine decay spans the run it was started for: resume with --cosine-epochs 2 to keep it.")
    assert _train(world, "--resume", "--epochs", "3", "--cosine-epochs", "2", out=run).returncode == 0


def test_resume_accepts_another_spelling_of_the_data_dir_and_continues(world, tmp_path) -> None:
    run = _copy(world, tmp_path)
    spelled = os.path.relpath(world["data"], world["root"]) + "/../data/"  # relative to the CLI's working folder
    result = _cli("experiments.train", *TRAIN, "--data-dir", spelled, "--out", str(run), "--resume",
                  "--epochs", "3", root=world["root"], sums=world["sums"])
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr
    assert [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_truncated_checkpoint_is_an_error_line(world, tmp_path) -> None:
    run = _copy(world, tmp_path)
    path = run / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    line = _error(_train(world, "--resume", "--epochs", "3", out=run))
    assert line.startswith(f"error: cannot read the checkpoint {path} (")
    assert line.endswith("start the run again with --overwrite")


def test_an_old_pickle_checkpoint_is_refused_without_unpickling_it(world, tmp_path) -> None:
    run = tmp_path / "old"
    run.mkdir()
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling it would create the marker file

    (run / "checkpoint.pkl").write_bytes(pickle.dumps(Payload()))
    line = _error(_train(world, "--resume", out=run))
    assert "checkpoint.pkl is a checkpoint of the earlier pickle format, which is not loaded" in line
    assert not marker.exists()
    assert "holds a run (checkpoint.pkl)" in _error(_train(world, out=run))  # and no new run over it by accident


# --------------------------------------------------------------------------------------------------
# 3. Every setting checked before any data is loaded (the data here are absent: a later check would say so)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--eval-batch-size", "0"], "eval_batch_size (--eval-batch-size) must be a positive integer, got 0"),
        (["--epochs", "0"], "epochs (--epochs) must be a positive integer, got 0"),
        (["--max-batches", "0"], "max_batches (--max-batches) must be a positive integer or None (every batch), got 0"),
        (["--limit", "0"], "limit (--limit) must be a positive integer or None (all examples), got 0"),
        (["--val-size", "-1"],
         "val_size (--val-size) must be a non-negative integer (0: no validation holdout), got -1"),
        (["--lr", "-1"], "learning_rate (--lr) must be a positive finite number, got -1.0"),
        (["--momentum", "1.5"], "momentum (--momentum) must be a number in [0, 1), got 1.5"),
        (["--label-smoothing", "1"], "label_smoothing (--label-smoothing) must be a number in [0, 1), got 1.0"),
        (["--model", "cifar-tt"], "model 'cifar-tt' (--model) is a cifar10 network, not for --dataset mnist"),
    ],
)
def test_bad_settings_are_refused_naming_the_flag_before_any_data(args, message, tmp_path) -> None:
    result = _cli("experiments.train", *TRAIN, "--data-dir", str(tmp_path / "nothing"), "--out",
                  str(tmp_path / "run"), *args, root=tmp_path)
    assert _error(result) == f"error: {message}"
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# 4. error: lines, --debug


def test_missing_data_is_an_error_line(tmp_path) -> None:
    line = _error(_cli("experiments.train", *TRAIN, "--data-dir", str(tmp_path / "nothing"), "--out",
                       str(tmp_path / "run"), root=tmp_path))
    assert line.startswith("error: MNIST: local files not found") and "TT_DATA_DIR" in line


def test_a_corrupt_data_file_is_an_error_line(world, tmp_path) -> None:
    shutil.copytree(world["data"], tmp_path / "data")
    labels = tmp_path / "data" / "mnist" / data.MNIST_FILES["test_labels"][0]
    labels.write_bytes(labels.read_bytes()[:20])
    sums = {**world["sums"], "test_labels": [labels.name, hashlib.sha256(labels.read_bytes()).hexdigest()]}
    result = _cli("experiments.train", *TRAIN, "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                  root=tmp_path, sums=sums)
    assert _error(result).startswith(f"error: {labels}: corrupt or truncated gzip file")


def test_an_unwritable_out_is_an_error_line(world, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _error(_train(world, out=blocker)) == f"error: --out {blocker} is a file, not a folder"
    line = _error(_train(world, out=blocker / "run"))
    assert line == f"error: --out {blocker / 'run'}: cannot write there (Not a directory)"


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = _cli("experiments.train", *TRAIN, "--lr", "-1", "--debug", "--out", str(tmp_path / "run"),
                  root=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "ValueError: learning_rate (--lr) must be a positive finite number" in result.stderr


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(TypeError):
        with cli.user_errors(debug=False):
            raise TypeError("a bug")


def test_study_cli_refuses_a_bad_override_with_an_error_line(tmp_path) -> None:
    result = _cli("experiments.study", "mnist-table", "--only", "tt-tt-tt", "--epochs", "0", "--results",
                  str(tmp_path / "results"), root=tmp_path)
    assert _error(result) == "error: epochs (--epochs) must be a positive integer, got 0"
    assert not (tmp_path / "results").exists()


def test_report_cli_names_an_unreadable_file(tmp_path) -> None:
    run = tmp_path / "results" / "mnist-table" / "tt-tt-jax"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{truncated")
    result = _cli("experiments.report", "--results", str(tmp_path / "results"), "--output",
                  str(tmp_path / "RESULTS.md"), root=tmp_path)
    assert _error(result).startswith(f"error: {run / 'summary.json'}: not valid JSON (")


def test_timing_cli_refuses_an_unknown_model_with_an_error_line(tmp_path) -> None:
    result = _cli("experiments.timing", "--models", "tt-tt-nope", root=tmp_path)
    assert _error(result).startswith("error: unknown model 'tt-tt-nope'; known: ")
    result = _cli("experiments.timing", "--steps", "0", root=tmp_path)
    assert result.returncode == 2 and "argument --steps: must be a positive integer, got 0" in result.stderr


# --------------------------------------------------------------------------------------------------
# 5. Weights out of a run


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_load_model_gives_the_runs_best_val_model_in_either_framework(world, backend) -> None:
    import experiments

    summary = json.loads((world["run"] / "summary.json").read_text())
    ds = data.load_dataset("mnist", data_dir=world["data"], val_size=10, seed=0, verify=False)
    model = experiments.load_model(world["run"], backend=backend, which="best-val")
    if backend == "torch":
        import torch

        assert not model.training
        with torch.no_grad():
            logits = model(torch.from_numpy(ds.x_test)).numpy()
    else:
        import jax.numpy as jnp

        logits = np.asarray(model(jnp.asarray(ds.x_test)))  # eval mode: running statistics, no dropout
    # the run was torch's: its test accuracy at the epoch chosen on validation, reproduced from the file
    assert np.mean(logits.argmax(-1) == ds.y_test) == summary["test_acc"]


def test_load_model_refuses_weights_the_run_does_not_have(world) -> None:
    import experiments

    with pytest.raises(ValueError, match=r"has no weights-best-test.safetensors .*which=\['final', 'best-val'\]"):
        experiments.load_model(world["run"], backend="torch", which="best-test")
    with pytest.raises(ValueError, match="which must be one of"):
        experiments.load_model(world["run"], backend="torch", which="best")


def test_a_run_without_validation_keeps_the_best_test_weights(world, tmp_path, monkeypatch) -> None:
    import experiments
    from experiments.optim import OptimizerConfig
    from experiments.train import RunConfig, train

    for key, entry in world["sums"].items():
        monkeypatch.setitem(data.MNIST_FILES, key, tuple(entry))
    config = RunConfig(model="tt-tt-tt", backend="torch", epochs=2, batch_size=10, eval_batch_size=20, val_size=0,
                       optimizer=OptimizerConfig("adam", 0.01), data_dir=str(world["data"]))
    summary = train(config, tmp_path / "run", progress=silent_progress)
    names = sorted(p.name for p in (tmp_path / "run").glob("weights-*"))
    assert names == ["weights-best-test.safetensors", "weights-final.safetensors"]
    with pytest.raises(ValueError, match=r"no weights-best-val.safetensors \(the run has no validation holdout"):
        experiments.load_model(tmp_path / "run", backend="torch", which="best-val")
    model = experiments.load_model(tmp_path / "run", backend="torch", which="best-test")
    ds = data.load_dataset("mnist", data_dir=world["data"], val_size=0, seed=0, verify=False)
    import torch

    with torch.no_grad():
        accuracy = np.mean(model(torch.from_numpy(ds.x_test)).numpy().argmax(-1) == ds.y_test)
    assert accuracy == summary["best_test_acc_thesis_protocol"]



@pytest.mark.parametrize("held, resume", [(None, False), ("checkpoint.safetensors", True), ("checkpoint.pkl", True)])
def test_a_study_resumes_from_a_checkpoint_and_otherwise_owns_its_folders(held, resume, tmp_path, monkeypatch) -> None:
    from experiments import study
    from experiments.studies import STUDIES

    calls = []
    monkeypatch.setattr(study, "train", lambda config, out, **kwargs: calls.append(kwargs) or {"test_acc": 0.5})
    out = tmp_path / "mnist-table" / "tt-tt-tt-torch"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"epochs_run": 1, "limit": None}))  # a shortened earlier run
    if held:
        (out / held).write_bytes(b"")
    study.run_study(STUDIES["mnist-table"], "torch", only=["tt-tt-tt"], results=tmp_path, progress=silent_progress)
    assert [(c["resume"], c["overwrite"]) for c in calls] == [(resume, not resume)]
