"""Checkpoints of training runs: one safetensors file of arrays plus JSON, never a pickle.

A checkpoint holds everything a resumed run needs to continue bit for bit: the backend's state as named NumPy
arrays (parameters, batch-norm statistics, optimizer state, RNG state) and, in the file's metadata, JSON for the
rest (the run's configuration, its per-epoch rows, the backend's non-array state such as torch's parameter
groups). Loading it runs no code from the file, unlike ``pickle``: a checkpoint from elsewhere is data only.

>>> import tempfile, pathlib
>>> import numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / CHECKPOINT
>>> arrays = {"w": np.ones(2, np.float32), "step": np.array(3, np.uint32)}
>>> write(path, Checkpoint({"seed": 0}, [{"epoch": 1}], "jax", arrays, {"note": [1, 2]}))
>>> saved = read(path)
>>> saved.config, saved.rows, saved.backend, saved.arrays["w"].tolist(), saved.arrays["step"].shape, saved.meta
({'seed': 0}, [{'epoch': 1}], 'jax', [1.0, 1.0], (), {'note': [1, 2]})
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CHECKPOINT", "LEGACY_CHECKPOINT", "Checkpoint", "CheckpointError", "read", "write", "write_atomic"]

CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pkl"  # the earlier pickle format: refused, never unpickled
FORMAT = {"format": "tt-layers-checkpoint", "version": "1"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupt, of another format or of another model."""


@dataclass(frozen=True)
class Checkpoint:
    config: dict  # RunConfig.to_dict() of the run that wrote it
    rows: list[dict]  # one per finished epoch, as in metrics.jsonl
    backend: str  # "jax" or "torch"
    arrays: dict[str, np.ndarray]  # the backend's state
    meta: dict  # the backend's state that is not arrays (JSON)


def write_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename: a kill leaves the old file or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write(path: Path, checkpoint: Checkpoint) -> None:
    """Writes ``checkpoint`` to ``path`` atomically."""
    from safetensors.numpy import save

    metadata = {**FORMAT, "backend": checkpoint.backend, "config": json.dumps(checkpoint.config),
                "rows": json.dumps(checkpoint.rows), "meta": json.dumps(checkpoint.meta)}
    # Not np.ascontiguousarray: it makes 0-d arrays (step counters) 1-d.
    arrays = {key: np.asarray(value).copy(order="C") for key, value in checkpoint.arrays.items()}
    write_atomic(path, save(arrays, metadata=metadata))


def read(path: Path) -> Checkpoint:
    """Reads a checkpoint; a :class:`CheckpointError` names the file if it is not a whole checkpoint."""
    from safetensors import safe_open

    hint = "it is truncated, corrupt or not a checkpoint of this code; start the run again with --overwrite"
    try:
        with safe_open(os.fspath(path), framework="np") as f:
            metadata = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # safetensors raises its own error type (no ValueError) on a bad file
        raise CheckpointError(f"cannot read the checkpoint {path} ({error}): {hint}") from None
    if {k: metadata.get(k) for k in FORMAT} != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of format {FORMAT}: {hint}")
    try:
        parsed = {key: json.loads(metadata[key]) for key in ("config", "rows", "meta")}
        return Checkpoint(parsed["config"], parsed["rows"], metadata["backend"], arrays, parsed["meta"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"the checkpoint {path} has unreadable metadata ({error!r}): {hint}") from None
