"""Framework-neutral data loading for the experiments (NumPy, the standard library and Pillow only).

Nothing here imports JAX, PyTorch or TensorFlow at import time; ``tensorflow_datasets`` is imported lazily,
and only when the tfds source is used.

Sources
-------
* ``"local"``: offline files under a data directory (see :func:`resolve_data_dir`):

  - ``<data_dir>/mnist/``: the four canonical MNIST IDX ``.gz`` files. Dataset name ``"MNIST"``.
  - ``<data_dir>/cifar10-jpeg/{train,test}.tar``: CIFAR-10 re-encoded as JPEG quality 75, members
    ``<split>/<class>/NNNN.jpg``. Lossy, NOT the canonical pixels: dataset name ``"CIFAR-10 (JPEG q75 copy)"``.
    The decoded arrays are cached as ``.npz`` files (see :func:`cache_dir`), keyed by the tar's sha256.

* ``"tfds"``: canonical data through tensorflow-datasets. Dataset names ``"MNIST"`` and ``"CIFAR-10"``.

Environment variables
---------------------
``TT_DATA_DIR``
    Data directory (the folder holding ``mnist/`` and ``cifar10-jpeg/``) when no ``data_dir`` is given.
``TT_CACHE_DIR``
    Cache directory for decoded arrays; default ``~/.cache/tt_layers``.

Array conventions
-----------------
Images are NHWC (MNIST: (N, 28, 28, 1), CIFAR-10: (N, 32, 32, 3)); with ``flatten=True`` (the default)
each image is flattened in HWC order to (N, 784) or (N, 3072), i.e. the three channels of a pixel are adjacent.
Features are float32, labels int64.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import struct
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image

DatasetName = Literal["mnist", "cifar10"]
Source = Literal["auto", "local", "tfds"]
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test

#: Parent of the ``experiments`` package; the default data directories are searched relative to it.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = Path("~/.cache/tt_layers")
#: Bump when the decoded-array layout or member order changes, so that stale caches are not reused.
CACHE_VERSION = 1
DEFAULT_VAL_SIZE = 5000

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train_labels": ("train-labels-idx1-ubyte.gz",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "test_images": ("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
CIFAR10_JPEG_FILES = {
    "train": ("train.tar", "05225f07d9c5aae26fbae0d8103cd944f6f089bccc9744e42cca8a4aabd257cd"),
    "test": ("test.tar", "3268ff8ef8257e197bd38d7315f68046aa964e122b7c980aea63c4c3cd1bbc48"),
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_CLASSES = tuple(str(d) for d in range(10))


class DataNotFoundError(FileNotFoundError):
    """Neither the local files nor tensorflow-datasets could provide the requested dataset."""


@dataclass(frozen=True)
class _Info:
    subdir: str  # folder under the data directory
    files: tuple[str, ...]  # file names expected in that folder
    local_name: str  # display name of the local copy
    tfds_name: str  # display name of the canonical tfds data
    tfds_builder: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]


_INFO: dict[str, _Info] = {
    "mnist": _Info("mnist", tuple(f for f, _ in MNIST_FILES.values()), "MNIST", "MNIST", "mnist",
                   (28, 28, 1), MNIST_CLASSES),
    "cifar10": _Info("cifar10-jpeg", tuple(f for f, _ in CIFAR10_JPEG_FILES.values()),
                     "CIFAR-10 (JPEG q75 copy)", "CIFAR-10", "cifar10", (32, 32, 3), CIFAR10_CLASSES),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset with train/validation/test splits.

    ``name`` is the label to use in reports: ``"MNIST"``, ``"CIFAR-10"`` (canonical, tfds) or
    ``"CIFAR-10 (JPEG q75 copy)"`` (the local lossy copy). ``mean``/``std`` are the per-channel statistics
    (pixels on [0, 1]) of the training split used for normalisation, or ``None`` when not normalised.
    """

    name: str
    key: str
    source: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example as stored in ``x_*`` (e.g. ``(784,)`` flattened, ``(28, 28, 1)`` not)."""
        return tuple(self.x_train.shape[1:])


# --------------------------------------------------------------------------------------------------
# Locations


def default_data_dirs() -> list[Path]:
    """Candidate data directories, in order: ``<repo>/../shared/data``, ``<cwd>/../shared/data``,
    ``<repo>/shared/data``."""
    return [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data",
            REPO_ROOT / "shared" / "data"]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``data_dir`` if given, else ``$TT_DATA_DIR``, else the first existing
    :func:`default_data_dirs` entry; ``None`` when there is none."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("TT_DATA_DIR"):
        return Path(os.environ["TT_DATA_DIR"]).expanduser()
    return next((d for d in default_data_dirs() if d.is_dir()), None)


def cache_dir() -> Path:
    """Cache directory for decoded arrays: ``$TT_CACHE_DIR``, default ``~/.cache/tt_layers``."""
    return Path(os.environ.get("TT_CACHE_DIR") or DEFAULT_CACHE_DIR).expanduser()


# --------------------------------------------------------------------------------------------------
# Checksums and file formats


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, actual: str | None = None) -> None:
    """Raise ``ValueError`` naming ``path`` when its sha256 (or a precomputed ``actual``) isn't ``expected``."""
    actual = actual or sha256_file(path)
    if actual != expected:
        raise ValueError(f"{path}: bad checksum (sha256 {actual}, expected {expected}); "
                         "the file is corrupt, truncated or not the expected release")


def _gunzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from e


def read_idx(path: str | os.PathLike, *, ndim: int) -> np.ndarray:
    """Read a gzipped uint8 IDX file with ``ndim`` dims (magic ``0x0800 + ndim``: 2049 labels, 2051 images).

    The header and the byte count are checked strictly; any mismatch raises ``ValueError`` naming the file.
    """
    path = Path(path)
    raw = _gunzip(path)
    header = 4 * (ndim + 1)
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    magic, *dims = struct.unpack(f">{ndim + 1}I", raw[:header])
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path}: bad IDX magic {magic}, expected {0x0800 + ndim} (uint8, {ndim} dims)")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise ValueError(f"{path}: wrong count: header declares dims {tuple(dims)} ({expected} bytes) "
                         f"but the file holds {len(raw)} bytes")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _check_examples(x: np.ndarray, y: np.ndarray, info: _Info, where: str) -> None:
    if x.shape[1:] != info.image_shape:
        raise ValueError(f"{where}: image shape {x.shape[1:]}, expected {info.image_shape}")
    if len(x) != len(y):
        raise ValueError(f"{where}: wrong count: {len(x)} images but {len(y)} labels")
    if len(y) and not 0 <= y.min() <= y.max() < len(info.class_names):
        raise ValueError(f"{where}: labels outside 0..{len(info.class_names) - 1}")


def read_mnist(directory: str | os.PathLike, *, verify: bool = True) -> Arrays:
    """Read the four MNIST IDX files in ``directory`` to uint8 NHWC images and int64 labels.

    With ``verify`` the files' sha256 must match the canonical release.
    """
    directory = Path(directory)
    paths = {k: directory / name for k, (name, _) in MNIST_FILES.items()}
    if verify:
        for key, (_, sha) in MNIST_FILES.items():
            verify_sha256(paths[key], sha)
    arrays: list[np.ndarray] = []
    for split in ("train", "test"):
        images, labels = paths[f"{split}_images"], paths[f"{split}_labels"]
        x = read_idx(images, ndim=3)[..., None]
        y = read_idx(labels, ndim=1).astype(np.int64)
        _check_examples(x, y, _INFO["mnist"], f"{images} + {labels.name}")
        arrays += [x, y]
    return tuple(arrays)


_JPEG_NAME = re.compile(r"(\d+)\.jpe?g", re.IGNORECASE)


def _member_key(member: tarfile.TarInfo, labels: dict[str, int], path: Path) -> tuple[int, int, str]:
    parts = PurePosixPath(member.name).parts
    match = _JPEG_NAME.fullmatch(parts[-1])
    if len(parts) < 2 or parts[-2] not in labels or not match:
        raise ValueError(f"{path}: unexpected member {member.name!r} (expected <split>/<class>/<index>.jpg "
                         f"with <class> one of {sorted(labels)})")
    return int(match.group(1)), labels[parts[-2]], member.name


def _decode_jpeg(data: bytes, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: cannot decode image ({e})") from e
    if array.shape != shape:
        raise ValueError(f"{where}: image shape {array.shape}, expected {shape}")
    return array


def read_jpeg_tar(path: str | os.PathLike, classes: tuple[str, ...] = CIFAR10_CLASSES, *,
                  image_size: tuple[int, int] = (32, 32),
                  limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a tar of ``<split>/<class>/<index>.jpg`` members, without extracting it, to uint8 (N, H, W, 3)
    images and int64 labels.

    The label is the position of ``<class>`` in ``classes``. Members are sorted by (index, label), so classes
    interleave and every prefix (e.g. ``limit`` members) is class-balanced; ``limit`` decodes only the first
    ``limit`` members in that order.
    """
    path = Path(path)
    labels = {c: i for i, c in enumerate(classes)}
    shape = (*image_size, 3)
    try:
        with tarfile.open(path) as tar:
            keyed = sorted(((_member_key(m, labels, path), m) for m in tar.getmembers() if m.isfile()),
                           key=lambda pair: pair[0])[:limit]
            x = np.empty((len(keyed), *shape), np.uint8)
            for i, (_, member) in enumerate(keyed):
                x[i] = _decode_jpeg(tar.extractfile(member).read(), shape, f"{path}:{member.name}")
    except tarfile.TarError as e:
        raise ValueError(f"{path}: corrupt or truncated tar ({e})") from e
    return x, np.array([key[1] for key, _ in keyed], np.int64)


# --------------------------------------------------------------------------------------------------
# Cache


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as f:
            return {k: f[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def cached_arrays(name: str, keys: tuple[str, ...],
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load ``<cache_dir>/<name>.npz``, or ``build()`` the arrays and save them there atomically.

    An unreadable cache file is rebuilt; a cache directory that cannot be written only warns.
    """
    path = cache_dir() / f"{name}.npz"
    if path.exists() and (arrays := _load_npz(path, keys)) is not None:
        return arrays
    arrays = build()
    try:
        _atomic_savez(path, arrays)
    except OSError as e:
        warnings.warn(f"could not write the data cache {path}: {e}", stacklevel=2)
    return arrays


def read_cifar10_jpeg(directory: str | os.PathLike, *, verify: bool = True) -> Arrays:
    """Read ``train.tar`` and ``test.tar`` of the CIFAR-10 JPEG copy in ``directory`` (uint8 NHWC, int64).

    Decoded arrays are cached under :func:`cache_dir`, keyed by each tar's sha256. With ``verify`` the sha256
    must match the known copy.
    """
    arrays: list[np.ndarray] = []
    for split, (file_name, expected) in CIFAR10_JPEG_FILES.items():
        path = Path(directory) / file_name
        sha = sha256_file(path)
        if verify:
            verify_sha256(path, expected, sha)
        cached = cached_arrays(f"cifar10-jpeg-{split}-{sha[:16]}-v{CACHE_VERSION}", ("x", "y"),
                               lambda: dict(zip(("x", "y"), read_jpeg_tar(path))))
        _check_examples(cached["x"], cached["y"], _INFO["cifar10"], str(path))
        arrays += [cached["x"], cached["y"]]
    return tuple(arrays)


# --------------------------------------------------------------------------------------------------
# Sources


_LOCAL_READERS: dict[str, Callable[..., Arrays]] = {"mnist": read_mnist, "cifar10": read_cifar10_jpeg}
_FIX_HINT = ("Set TT_DATA_DIR (or pass data_dir=) to a folder containing '{subdir}/' with {files}, "
             "or `pip install tensorflow-datasets` to use the canonical data (source='tfds').")


def _looked_in(data_dir: str | os.PathLike | None) -> list[Path]:
    resolved = resolve_data_dir(data_dir)
    return [resolved] if resolved is not None else default_data_dirs()


def _local_dir(info: _Info, data_dir: str | os.PathLike | None) -> Path | None:
    root = resolve_data_dir(data_dir)
    if root is None or not all((root / info.subdir / f).is_file() for f in info.files):
        return None
    return root / info.subdir


def _not_found(info: _Info, data_dir: str | os.PathLike | None, reason: str) -> DataNotFoundError:
    looked = ", ".join(str(d / info.subdir) for d in _looked_in(data_dir))
    hint = _FIX_HINT.format(subdir=info.subdir, files=", ".join(info.files))
    return DataNotFoundError(f"{info.local_name}: {reason} Looked for local files in: {looked}. {hint}")


def _load_tfds(info: _Info) -> Arrays:
    import tensorflow_datasets as tfds  # lazy: heavy, optional

    arrays: list[np.ndarray] = []
    for split in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load(info.tfds_builder, split=split, batch_size=-1, as_supervised=True))
        x, y = np.asarray(x, np.uint8), np.asarray(y, np.int64)
        _check_examples(x, y, info, f"tfds {info.tfds_builder}[{split}]")
        arrays += [x, y]
    return tuple(arrays)


def load_arrays(name: DatasetName, *, data_dir: str | os.PathLike | None = None, source: Source = "auto",
                verify: bool = True) -> tuple[Arrays, str, str]:
    """Raw uint8 NHWC arrays ``(x_train, y_train, x_test, y_test)``, the source used and the display name.

    ``source="auto"`` uses the local files when all are present, else tensorflow-datasets.
    """
    if name not in _INFO:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_INFO)}")
    if source not in ("auto", "local", "tfds"):
        raise ValueError(f"unknown source {source!r}; expected 'auto', 'local' or 'tfds'")
    info = _INFO[name]
    local = _local_dir(info, data_dir) if source != "tfds" else None
    if local is not None:
        return _LOCAL_READERS[name](local, verify=verify), "local", info.local_name
    if source == "local":
        raise _not_found(info, data_dir, "local files not found (source='local').")
    try:
        return _load_tfds(info), "tfds", info.tfds_name
    except ImportError as e:
        if source == "tfds":
            raise DataNotFoundError(f"{info.tfds_name}: source='tfds' needs tensorflow-datasets ({e}).") from e
        reason = f"local files not found and tensorflow-datasets is unavailable ({e})."
        raise _not_found(info, data_dir, reason) from e


# --------------------------------------------------------------------------------------------------
# Splits and normalisation


def split_train_val(x: np.ndarray, y: np.ndarray, val_size: int, seed: int = 0) -> Arrays:
    """Hold out ``val_size`` random examples: ``(x_train, y_train, x_val, y_val)``, a pure function of ``seed``.

    Both parts come out in the random order of the permutation (so any prefix is a random sample).
    """
    if not 0 <= val_size < len(x):
        raise ValueError(f"val_size must be in [0, {len(x)}), got {val_size}")
    perm = np.random.default_rng(seed).permutation(len(x))
    train, val = perm[val_size:], perm[:val_size]
    return x[train], y[train], x[val], y[val]


def channel_stats(x: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images, on the [0, 1] scale.

    Sums are exact integers, accumulated per position over chunks of images (fast contiguous reductions).
    """
    channels = x.shape[-1]
    flat = x.reshape(len(x), -1)
    total = np.zeros(flat.shape[1], np.uint64)
    total_sq = np.zeros(flat.shape[1], np.uint64)
    for start in range(0, len(x), chunk):
        block = flat[start:start + chunk]
        total += block.sum(axis=0, dtype=np.uint64)
        total_sq += np.square(block, dtype=np.uint16).sum(axis=0, dtype=np.uint64)
    count = max(x.size // channels, 1)
    mean = total.reshape(-1, channels).sum(axis=0) / count
    mean_sq = total_sq.reshape(-1, channels).sum(axis=0) / count
    return mean / 255, np.sqrt(np.maximum(mean_sq - mean**2, 0.0)) / 255


def _to_float(x: np.ndarray, mean: np.ndarray, std: np.ndarray, flatten: bool) -> np.ndarray:
    """``(x / 255 - mean) / std`` as float32, in two passes: ``x * scale + shift``."""
    out = np.multiply(x, (1 / (255 * std)).astype(np.float32), dtype=np.float32)
    out += (-mean / std).astype(np.float32)
    return out.reshape(len(out), int(np.prod(out.shape[1:]))) if flatten else out  # -1 fails on an empty split


def load_dataset(name: DatasetName, *, data_dir: str | os.PathLike | None = None, source: Source = "auto",
                 val_size: int = DEFAULT_VAL_SIZE, seed: int = 0, normalize: bool = True, flatten: bool = True,
                 limit: int | None = None, verify: bool = True) -> Dataset:
    """Load MNIST or CIFAR-10 with a validation split held out from the training data.

    Args:
        name: ``"mnist"`` or ``"cifar10"`` (locally the CIFAR-10 JPEG q75 copy, named accordingly).
        data_dir: folder holding ``mnist/`` and ``cifar10-jpeg/``; default ``$TT_DATA_DIR`` or
            :func:`default_data_dirs`.
        source: ``"auto"`` (local files if present, else tensorflow-datasets), ``"local"`` or ``"tfds"``.
        val_size: examples held out from the training data, chosen by ``seed``.
        seed: seed of the train/validation split.
        normalize: standardise with the per-channel mean/std of the training split (after the holdout and
            ``limit``); otherwise scale pixels to [0, 1]. Output is float32 either way.
        flatten: flatten each image in HWC order to a vector (784 or 3072); otherwise keep NHWC.
        limit: keep only the first ``limit`` examples of each split (after the split), for smoke tests.
        verify: check the local files' sha256 against the known releases.

    Example (needs the data, so not a doctest)::

        ds = load_dataset("mnist", limit=100)
        ds.name, ds.x_train.shape, ds.x_val.shape, ds.x_test.shape
        # -> ('MNIST', (100, 784), (100, 784), (100, 784))
    """
    (x_train, y_train, x_test, y_test), used, display = load_arrays(name, data_dir=data_dir, source=source,
                                                                     verify=verify)
    x_train, y_train, x_val, y_val = split_train_val(x_train, y_train, val_size, seed)
    splits = [(x_train, y_train), (x_val, y_val), (x_test, y_test)]
    if limit is not None:
        splits = [(x[:limit], y[:limit]) for x, y in splits]
    if normalize:
        mean, std = channel_stats(splits[0][0])
        std = np.where(std > 0, std, 1.0)
    else:
        mean, std = np.zeros(x_train.shape[-1]), np.ones(x_train.shape[-1])
    arrays = [array for x, y in splits for array in (_to_float(x, mean, std, flatten), y)]
    stats = (tuple(mean.tolist()), tuple(std.tolist())) if normalize else (None, None)
    info = _INFO[name]
    return Dataset(display, name, used, *arrays, info.class_names, info.image_shape, *stats)


# --------------------------------------------------------------------------------------------------
# Batching


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``: a pure function of ``(n, seed, epoch)``, so resumed runs repeat it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """Number of batches per epoch over ``n`` examples.

    >>> num_batches(5, 2), num_batches(5, 2, drop_last=True)
    (3, 2)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                    epoch: int = 0, drop_last: bool = False,
                    start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` NumPy batches of one epoch.

    With ``shuffle`` the order is :func:`epoch_permutation` ``(len(x), seed, epoch)``; ``start_batch`` skips the
    first batches, to resume an epoch mid-way with exactly the batches an uninterrupted run would see.

    >>> x, y = np.arange(10).reshape(5, 2), np.arange(5)
    >>> [yb.tolist() for _, yb in iterate_batches(x, y, 2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> [yb.tolist() for _, yb in iterate_batches(x, y, 2, shuffle=False, drop_last=True, start_batch=1)]
    [[2, 3]]
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    count = num_batches(len(x), batch_size, drop_last=drop_last)
    order = epoch_permutation(len(x), seed, epoch) if shuffle else np.arange(len(x))
    return _batches(x, y, order, batch_size, range(start_batch, count))


def _batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int,
             batch_ids: range) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for b in batch_ids:
        idx = order[b * batch_size:(b + 1) * batch_size]
        yield x[idx], y[idx]
