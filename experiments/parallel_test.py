"""Data parallel is one device's training: 2 devices with global batch B end where 1 device with batch B ends.

JAX runs on 2 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, which must be set
before JAX starts: in a subprocess), torch on 2 gloo processes, started by ``--devices 2`` itself
(``torch.multiprocessing``) and by a torchrun-style environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, a free
port). The network is the thesis's ``tt-tt-tt`` (batch norm after every layer: the global batch's statistics
matter) on a synthetic MNIST of 40 training images, batch 10, two epochs of SGD with momentum at the recipe's
learning rate 0.001 (8 steps).

Tolerance (float32): ``rtol=1e-5, atol=1e-5`` (:data:`RTOL`, :data:`ATOL`) on every float array of the state
(parameters of scale ~1, batch-norm statistics, optimizer state); integer state (step counts, RNG keys, batch
counts) must be equal. On two devices the sums over the batch (gradients, batch-norm statistics) are taken in
another order; measured here after the 8 steps: torch at most 3e-8, JAX 4.8e-7 in the parameters and 1.8e-6 in
the momentum traces. The margin is for ReLU kinks: a pre-activation within rounding of 0 passes its gradient on
one side and not on the other. At lr 0.01 one came within 4.7e-8 of 0 and the parameters jumped by ~4e-5 (the
momentum trace by the gradient's ~4e-3); one device alone, its input perturbed by 1e-7, jumps as much (4.0e-5
at lr 0.05): float32, not the sharding. On this test's trajectory (lr 0.001) the pre-activation nearest to 0
stays 1.1e-6 away, beyond the runs' differences. What the test must catch is far larger: per-replica batch-norm
statistics (DDP's default) put the state 1.7e-2 away after these 8 steps.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import checkpoint, data
from experiments.cli_test import RUNNER, _checksums, _error
from experiments.data_test import _write_mnist
from experiments.parallel import launcher_world, requested_devices
from experiments.train import CHECKPOINT, DivergenceError, _parser, config_from_args, silent_progress, train

REPO = Path(__file__).resolve().parent.parent
RTOL, ATOL = 1e-5, 1e-5
ARGS = ["--recipe", "ours", "--model", "tt-tt-tt", "--epochs", "2", "--batch-size", "10", "--eval-batch-size", "20",
        "--val-size", "20", "--optimizer", "sgd", "--lr", "0.001", "--momentum", "0.9"]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> dict:
    """A synthetic MNIST (60 training images: 40 train, 20 val; 20 test) and its checksums, registered here."""
    root = tmp_path_factory.mktemp("parallel")
    _write_mnist(root / "data", n_train=60, n_test=20)
    sums = _checksums(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        for key, entry in sums.items():
            patch.setitem(data.MNIST_FILES, key, tuple(entry))
        yield {"root": root, "data": root / "data", "sums": sums}


def _config(mnist: dict, backend: str, *args: str):
    return config_from_args(_parser().parse_args([*ARGS, "--backend", backend, "--data-dir", str(mnist["data"]),
                                                  *args]))


def _assert_same_state(one: Path, two: Path, skip: tuple[str, ...] = ()) -> None:
    """The checkpoints in ``one`` and ``two`` hold the same state: floats within the tolerance, integers equal."""
    a, b = (checkpoint.read(folder / CHECKPOINT).arrays for folder in (one, two))
    keys = sorted(k for k in a if not k.startswith(skip))
    assert keys == sorted(k for k in b if not k.startswith(skip)) and len(keys) > 20
    for key in keys:
        want, got = a[key], b[key]
        assert want.dtype == got.dtype and want.shape == got.shape, key
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=key)
        else:
            np.testing.assert_array_equal(got, want, err_msg=key)


def _assert_same_rows(one: Path, two: Path) -> None:
    rows = [[json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()] for folder in (one, two)]
    assert len(rows[0]) == len(rows[1])
    for a, b in zip(*rows):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=RTOL), key
        for key in ("train_acc", "val_acc", "test_acc"):  # counts of argmaxes: equal unless a logit ties by rounding
            assert b[key] == pytest.approx(a[key], abs=0.051), key


# --------------------------------------------------------------------------------------------------
# torch: two gloo processes


@pytest.fixture(scope="module")
def torch_runs(mnist, tmp_path_factory) -> dict:
    """The same two epochs on 1 device and on 2 (processes started by train itself)."""
    runs = {}
    for devices in (1, 2):
        out = tmp_path_factory.mktemp(f"torch-{devices}")
        runs[devices] = train(_config(mnist, "torch", "--devices", str(devices)), out, progress=silent_progress)
        runs[f"out{devices}"] = out
    return runs


def test_torch_two_processes_give_one_devices_parameters(torch_runs) -> None:
    # rng/: each rank draws its dropout from its own stream (this network has none)
    _assert_same_state(torch_runs["out1"], torch_runs["out2"], skip=("rng/",))
    _assert_same_rows(torch_runs["out1"], torch_runs["out2"])
    assert torch_runs[2]["devices"] == 2 and torch_runs[2]["device"] == "torch cpu: 2 processes (DDP, gloo)"
    assert json.loads((torch_runs["out2"] / "config.json").read_text())["devices"] == 2
    assert torch_runs[1]["devices"] == 1 and torch_runs[1]["device"] == "torch cpu"


def test_torch_resumes_on_another_device_count(mnist, torch_runs, tmp_path) -> None:
    """The 2-process run continued on 1 device, and the 1-device run on 2: the same third epoch."""
    import shutil

    two_on_one, one_on_two = tmp_path / "two-on-one", tmp_path / "one-on-two"
    shutil.copytree(torch_runs["out2"], two_on_one)
    shutil.copytree(torch_runs["out1"], one_on_two)
    train(_config(mnist, "torch", "--epochs", "3", "--devices", "1"), two_on_one, resume=True,
          progress=silent_progress)
    train(_config(mnist, "torch", "--epochs", "3", "--devices", "2"), one_on_two, resume=True,
          progress=silent_progress)
    _assert_same_state(two_on_one, one_on_two, skip=("rng/",))
    assert len((two_on_one / "metrics.jsonl").read_text().splitlines()) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_style_processes_train_as_spawned_ones_and_only_rank_0_reports(mnist, torch_runs, tmp_path) -> None:
    """Two CLI processes as torchrun starts them (no --devices: WORLD_SIZE says 2), one output folder."""
    out = tmp_path / "run"
    port = str(_free_port())
    command = [sys.executable, "-c", RUNNER, json.dumps(mnist["sums"]), "experiments.train", *ARGS, "--backend",
               "torch", "--device", "cpu", "--data-dir", str(mnist["data"]), "--out", str(out)]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TT_RETAIN_MEMORY": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}
        procs.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    (out0, err0), (out1, err1) = (p.communicate(timeout=300) for p in procs)
    assert procs[0].returncode == 0 and procs[1].returncode == 0, err0 + err1
    assert out0.count("\nepoch ") == 2 and "test accuracy" in out0 and "results in" in out0
    assert out1 == ""  # rank 1 trains silently
    assert json.loads((out / "summary.json").read_text())["devices"] == 2
    _assert_same_state(torch_runs["out2"], out)  # rng/ too: the same per-rank streams


def test_a_spawned_rank_s_error_is_the_cli_error(mnist, tmp_path) -> None:
    """A divergence in the spawned processes comes back as itself (one error line in the CLI), folder removed."""
    with pytest.raises(DivergenceError, match="diverged at epoch 1"):
        train(_config(mnist, "torch", "--devices", "2", "--lr", "1e6"), tmp_path / "run", progress=silent_progress)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# JAX: two simulated CPU devices, in a subprocess

JAX_SCRIPT = """
import json, shutil, sys
from experiments import data
data.MNIST_FILES.update(json.loads(sys.argv[1]))
from experiments.train import main
args, root = json.loads(sys.argv[2]), sys.argv[3]
for devices in ("1", "2"):
    main([*args, "--devices", devices, "--out", f"{root}/jax-{devices}"])
    shutil.copytree(f"{root}/jax-{devices}", f"{root}/jax-{devices}-epoch-2")  # before the resumes below
for devices, other in (("1", "2"), ("2", "1")):  # each run resumed for a third epoch on the other count
    main([*args, "--devices", other, "--epochs", "3", "--resume", "--out", f"{root}/jax-{devices}"])
try:
    main([*args, "--devices", "5", "--out", f"{root}/jax-5"])  # batch 10 splits over 5, but there are 2
except SystemExit as exit:
    print("exit", exit.code)
"""


@pytest.fixture(scope="module")
def jax_runs(mnist) -> subprocess.CompletedProcess:
    root = mnist["root"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TT_RETAIN_MEMORY": "0",
           "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           # conftest.py's persistent compilation cache (most of this process's time is compiling the init)
           "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                                       os.path.expanduser("~/.cache/tt_layers/jax")),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    args = [*ARGS, "--backend", "jax", "--data-dir", str(mnist["data"])]
    command = [sys.executable, "-c", JAX_SCRIPT, json.dumps(mnist["sums"]), json.dumps(args), str(root)]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def test_jax_two_devices_give_one_devices_parameters(mnist, jax_runs) -> None:
    root = mnist["root"]
    _assert_same_state(root / "jax-1-epoch-2", root / "jax-2-epoch-2")
    _assert_same_rows(root / "jax-1-epoch-2", root / "jax-2-epoch-2")
    one, two = root / "jax-1", root / "jax-2"
    _assert_same_state(one, two)  # after the cross resumes: 2 epochs on 1 device + 1 on 2, and the reverse
    _assert_same_rows(one, two)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["devices"] == 1  # its last leg ran on one device
    assert "2 x cpu (sharded batch)" in jax_runs.stdout  # the first leg's report line
    assert jax_runs.stdout.count("resumed from") == 0 and jax_runs.stderr.count("resumed from") == 2


def test_jax_refuses_more_devices_than_present(mnist, jax_runs) -> None:
    assert "exit 1" in jax_runs.stdout
    assert ("error: devices (--devices) is 5, but JAX sees 2 cpu devices; on a CPU, "
            "XLA_FLAGS=--xla_force_host_platform_device_count=5 (set before JAX starts) simulates 5") in jax_runs.stderr
    assert not (mnist["root"] / "jax-5").exists()


# --------------------------------------------------------------------------------------------------
# Bad input: refused with the numbers, before any data is loaded


@pytest.fixture
def no_data(monkeypatch):
    import experiments.train

    monkeypatch.setattr(experiments.train, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_batch_that_does_not_split_over_the_devices_is_refused(mnist, no_data, backend, tmp_path) -> None:
    message = (r"batch_size \(--batch-size\) 15 does not split over devices \(--devices\) 2: every device takes an "
               r"equal share of each global batch, so the batch size must be a multiple of 2 \(or the device count "
               r"one of \[1, 3, 5, 15\]\)")
    with pytest.raises(ValueError, match=message):
        train(_config(mnist, backend, "--devices", "2", "--batch-size", "15"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_more_torch_devices_than_present_are_refused(mnist, no_data, tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        present, what = torch.cuda.device_count(), "CUDA GPUs on this machine"
    else:
        present, what = os.cpu_count(), "CPU cores on this machine (torch on a CPU runs one gloo process per device)"
    devices = present + 1
    message = f"devices (--devices) is {devices}, but there are {present} {what}"
    with pytest.raises(ValueError, match=re.escape(message)):
        train(_config(mnist, "torch", "--devices", str(devices), "--batch-size", str(10 * devices)),
              tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_resume_whose_batch_does_not_split_over_the_new_count_is_refused(mnist, torch_runs, no_data) -> None:
    out = torch_runs["out2"]  # written on 2 devices, batch 10
    with pytest.raises(ValueError) as error:
        train(_config(mnist, "torch", "--epochs", "3", "--devices", "4"), out, resume=True)
    assert str(error.value) == (f"--resume: the checkpoint in {out} was written on 2 devices with a global batch of "
                                "10 (--batch-size, which a resume keeps); 10 examples do not split over 4 devices: "
                                "resume on one of [1, 2, 5, 10] devices")


def test_a_launcher_s_world_must_agree_with_devices(mnist, no_data, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert requested_devices(None, "torch") == 2 and _config(mnist, "torch").devices == 2
    with pytest.raises(ValueError, match=r"devices \(--devices\) is 3, but torchrun started 2 processes "
                                         r"\(WORLD_SIZE=2\), one per device: leave --devices out or give --devices 2"):
        train(_config(mnist, "torch", "--devices", "3", "--batch-size", "30"), tmp_path / "run")
    with pytest.raises(ValueError, match="torchrun started 2 processes .WORLD_SIZE., but the JAX backend runs one "
                                         "process per machine"):
        train(_config(mnist, "jax", "--devices", "2"), tmp_path / "run")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2, LOCAL_RANK=2 do not fit WORLD_SIZE=2"):
        launcher_world()
    assert not (tmp_path / "run").exists()


def test_devices_must_be_a_positive_integer(mnist) -> None:
    with pytest.raises(ValueError, match=r"^devices \(--devices\) must be a positive integer, got 0$"):
        _config(mnist, "torch", "--devices", "0")


def test_cli_names_the_split_in_an_error_line(tmp_path) -> None:
    from experiments.cli_test import _cli

    result = _cli("experiments.train", *ARGS, "--backend", "torch", "--devices", "3", "--data-dir",
                  str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), root=tmp_path)
    assert _error(result).startswith("error: batch_size (--batch-size) 10 does not split over devices (--devices) 3")
