"""Framework-neutral weights: one naming scheme, NumPy arrays, safetensors files.

A model's weights travel between JAX and PyTorch as a flat ``dict[str, np.ndarray]``.
A layer at module path ``P`` (dotted: the JAX path ``('layers', 0)`` and the
PyTorch path ``layers.0`` are both written ``layers.0``; the root layer has the
empty path) contributes these keys:

============  ===============================  ====================================
layer         keys                             layout
============  ===============================  ====================================
TT layer      ``P.cores.K``, ``P.bias``        core ``(r_{k-1}, m_k, n_k, r_k)``; a TT
                                               convolution's last core is its spatial
                                               core ``(r_d, kh kw, 1, 1)``, a TT
                                               embedding has no bias
dense layer   ``P.kernel``, ``P.bias``         kernel ``(in, out)`` (PyTorch's
                                               ``nn.Linear.weight`` transposed)
batch norm    ``P.scale``, ``P.bias``,         ``(features,)``; ``mean``/``var``
              ``P.mean``, ``P.var``            are the running statistics
dropout       (none)
============  ===============================  ====================================

The ``export`` / ``load`` functions of both packages take a ``prefix`` that is
prepended to every path, e.g. ``prefix="layers"`` reads the keys of an
``nnx.Sequential`` (whose layers are ``layers.0``, ``layers.1``, ...) into a
``torch.nn.Sequential`` (whose layers are ``0``, ``1``, ...).

Arrays keep their dtype, so a round trip through a file is bit-exact. Loading
casts each array to the dtype of the variable it fills (as ``load_state_dict``
does): bit-exact when the dtypes agree. One asymmetry: ``nnx.BatchNorm`` keeps
its running statistics in float32 whatever its ``param_dtype``, torch in the
parameter dtype, so float64 statistics from torch are rounded to float32 when
loaded into Flax (JAX -> torch -> JAX stays bit-exact). This module needs NumPy only; :func:`save_weights` and :func:`load_weights` import
``safetensors`` when called.

>>> tt_keys("layers.0", 2, use_bias=True)
['layers.0.cores.0', 'layers.0.cores.1', 'layers.0.bias']
>>> import numpy as np
>>> check_mapping({"bias": (3,)}, {"bias": np.zeros(4)})
Traceback (most recent call last):
...
ValueError: shape mismatch for key 'bias': expected (3,), got (4,)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "BATCH_NORM_KEYS",
    "DENSE_KEYS",
    "FORMAT_METADATA",
    "check_mapping",
    "join",
    "load_metadata",
    "load_weights",
    "path_name",
    "save_weights",
    "tt_keys",
]

# Key suffixes of each kind of layer (TT cores are "cores.0", "cores.1", ...).
DENSE_KEYS = ("kernel", "bias")
BATCH_NORM_KEYS = ("scale", "bias", "mean", "var")
# Written into every file's safetensors metadata.
FORMAT_METADATA = {"format": "tt-layers-weights", "version": "1"}


def path_name(path: Sequence[object]) -> str:
    """The dotted name of a module path: ``('layers', 0)`` -> ``'layers.0'``.

    >>> path_name(("layers", 0)), path_name(())
    ('layers.0', '')
    """
    return ".".join(str(p) for p in path)


def join(*parts: object) -> str:
    """Joins a module path and key parts with dots, skipping empty parts (the root's path is ``''``).

    >>> join("", "layers.0", "cores", 1), join("layers", ""), join("", "kernel")
    ('layers.0.cores.1', 'layers', 'kernel')
    """
    return ".".join(text for text in map(str, parts) if text)


def tt_keys(prefix: str, d: int, use_bias: bool) -> list[str]:
    """The keys of a TT layer with ``d`` cores at ``prefix``.

    >>> tt_keys("fc", 2, True)
    ['fc.cores.0', 'fc.cores.1', 'fc.bias']
    """
    return [join(prefix, "cores", k) for k in range(d)] + ([join(prefix, "bias")] if use_bias else [])


def _is_floating(value: object) -> bool:
    """Whether an array (NumPy, JAX, torch, or anything ``np.asarray`` takes) holds floating-point values."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and hasattr(dtype, "is_floating_point"):  # a torch dtype, which NumPy cannot read
        return bool(dtype.is_floating_point)
    dtype = np.dtype(dtype) if dtype is not None else np.asarray(value).dtype
    # kind "f": NumPy's floats; ml_dtypes' bfloat16 and float8 types (JAX's) have kind "V" but a float name.
    return dtype.kind == "f" or (dtype.kind == "V" and "float" in dtype.name)


def check_mapping(expected: Mapping[str, Sequence[int]], mapping: Mapping[str, object]) -> None:
    """Raises a ``ValueError`` naming the key unless ``mapping`` has exactly the expected keys and shapes.

    ``expected`` maps each key to its shape; ``mapping`` maps keys to arrays, which must hold floating-point
    values: every weight of the format is one, and an integer or bool array is not cast silently.

    >>> check_mapping({"fc.bias": (2,)}, {"fc.bias": np.array([1, 2])})
    Traceback (most recent call last):
    ...
    ValueError: key 'fc.bias' holds int64 values; weights must be floating point (cast them first if intended)
    """
    missing = [k for k in expected if k not in mapping]
    if missing:
        raise ValueError(f"missing key {missing[0]!r} (all missing: {missing})")
    unexpected = [k for k in mapping if k not in expected]
    if unexpected:
        raise ValueError(f"unexpected key {unexpected[0]!r} (all unexpected: {unexpected})")
    for key, shape in expected.items():
        got = tuple(np.shape(mapping[key]))
        if got != tuple(shape):
            raise ValueError(f"shape mismatch for key {key!r}: expected {tuple(shape)}, got {got}")
        if not _is_floating(mapping[key]):
            dtype = getattr(mapping[key], "dtype", None) or np.asarray(mapping[key]).dtype
            raise ValueError(
                f"key {key!r} holds {str(dtype).removeprefix('torch.')} values; "
                "weights must be floating point (cast them first if intended)"
            )


def _check_arrays(mapping: Mapping[str, object]) -> dict[str, np.ndarray]:
    arrays = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"keys must be non-empty strings, got {key!r}")
        if not isinstance(value, np.ndarray):
            raise ValueError(f"value of key {key!r} must be a NumPy array, got {type(value).__name__}")
        arrays[key] = np.ascontiguousarray(value)
    return arrays


def save_weights(
    path: str | os.PathLike, mapping: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Writes ``mapping`` to a safetensors file; dtypes and shapes are kept exactly.

    ``metadata`` (strings to strings) is stored beside :data:`FORMAT_METADATA`.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> save_weights(path, {"fc.kernel": np.eye(2, dtype=np.float32)})
    >>> w = load_weights(path)
    >>> w["fc.kernel"].dtype, w["fc.kernel"].shape
    (dtype('float32'), (2, 2))
    """
    from safetensors.numpy import save_file

    meta = dict(FORMAT_METADATA)
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata must map strings to strings, got {key!r}: {value!r}")
        meta[key] = value
    save_file(_check_arrays(mapping), os.fspath(path), metadata=meta)


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a safetensors file into a ``dict`` of NumPy arrays."""
    from safetensors.numpy import load_file

    return dict(load_file(os.fspath(path)))


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata stored in a safetensors file (empty if none)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="np") as f:
        return dict(f.metadata() or {})
