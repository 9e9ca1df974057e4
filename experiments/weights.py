"""The weights a training run writes, and :func:`load_model`, which loads them into either framework's model.

Every run of :func:`experiments.train.train` writes its weights as safetensors files in the neutral naming of
:mod:`tt_common.transfer` (TT cores, dense kernels, batch-norm scale, bias and running statistics):

========================================  =================================================================
file                                      model
========================================  =================================================================
``weights-final.safetensors``             after the last epoch (written when the run finishes)
``weights-best-val.safetensors``          at the epoch of best validation accuracy, the one the run reports
                                          (runs with a validation holdout; rewritten whenever it improves)
``weights-best-test.safetensors``         at the epoch of best test accuracy, the thesis's protocol (runs
                                          without a validation holdout, ``val_size`` 0, only)
========================================  =================================================================

A JAX run's weights load into the torch model of the same preset and vice versa::

    model = experiments.load_model("runs/mnist-tt-tt-jax-ours-s0", backend="torch", which="best-val")

This module imports neither JAX nor PyTorch until :func:`load_model` is called for one of them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from experiments.presets import Network, get_preset, network_from_dict
from tt_common.transfer import load_metadata, save_weights

__all__ = ["WEIGHTS_FILES", "load_model", "run_network", "write_weights"]

WEIGHTS_FILES = {
    "final": "weights-final.safetensors",
    "best-val": "weights-best-val.safetensors",
    "best-test": "weights-best-test.safetensors",
}


def write_weights(path: Path, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Writes a weights file through a temporary file and a rename, so that a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    save_weights(tmp, weights, metadata)
    os.replace(tmp, path)


def _weights_path(run_dir: Path, which: str) -> Path:
    if which not in WEIGHTS_FILES:
        raise ValueError(f"which must be one of {sorted(WEIGHTS_FILES)}, got {which!r}")
    path = run_dir / WEIGHTS_FILES[which]
    if not path.is_file():
        present = [name for name, file in WEIGHTS_FILES.items() if (run_dir / file).is_file()]
        why = {"final": "the run has not finished", "best-val": "the run has no validation holdout (val_size 0)",
               "best-test": "only runs without a validation holdout keep it"}[which]
        raise ValueError(f"{run_dir} has no {WEIGHTS_FILES[which]} ({why} or is not a run); "
                         f"it has which={present}")
    return path


def run_network(run_dir: str | os.PathLike) -> tuple[dict, Network]:
    """A run's ``config.json`` and the network it trained: its preset, or the ``"network"`` it records (a run of
    :class:`experiments.train.Start`, such as a tensorized model's fine-tuning). A ``ValueError`` says what is
    missing."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
        model_name = config["model"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{run_dir}/config.json does not name the run's model ({error!r}); is {run_dir} a "
                         "run folder?") from None
    spec = network_from_dict(config["network"]) if "network" in config else get_preset(model_name)
    return config, spec


def load_model(run_dir: str | os.PathLike, backend: str = "jax", which: str = "final"):
    """The trained model of the run in ``run_dir`` in ``backend``'s framework, in eval mode.

    ``which`` is ``"final"``, ``"best-val"`` or ``"best-test"`` (see the module table). The model is the run's
    network (:func:`run_network`: its preset, or the network its ``config.json`` records) built by :mod:`experiments.models_jax` or :mod:`experiments.models_torch`
    (on the CPU), with every weight and batch-norm statistic from the file; either backend's run loads into
    either framework. (Building the torch model reseeds torch's global RNG, as every ``models_torch.build``.)
    """
    run_dir = Path(run_dir)
    if backend not in ("jax", "torch"):
        raise ValueError(f"backend must be 'jax' or 'torch', got {backend!r}")
    path = _weights_path(run_dir, which)
    config, spec = run_network(run_dir)
    model_name = config["model"]
    if load_metadata(path).get("model", model_name) != model_name:
        raise ValueError(f"{path} holds a {load_metadata(path)['model']} model, config.json names {model_name}")
    if backend == "torch":
        import tt_torch
        from experiments import models_torch

        model = models_torch.build(spec)
        tt_torch.transfer.load_file(model, path)
    else:
        import tt_jax
        from experiments import models_jax

        model = models_jax.build(spec)
        tt_jax.transfer.load_file(model, path)
    model.eval()
    return model
