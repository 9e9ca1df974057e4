"""Tests of experiments.data: real files when present (skipped otherwise), synthetic files for corruption."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from experiments import data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# --------------------------------------------------------------------------------------------------
# Helpers


def _real_dir(name: str) -> Path:
    """The real local folder of dataset ``name``, or skip the test."""
    info = data._INFO[name]
    root = data.resolve_data_dir()
    if root is None or not all((root / info.subdir / f).is_file() for f in info.files):
        pytest.skip(f"local {info.local_name} files not found (set TT_DATA_DIR)")
    return root / info.subdir


def _idx_bytes(array: np.ndarray, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    dims = array.shape if dims is None else dims
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">{len(dims) + 1}I", magic, *dims) + array.astype(np.uint8).tobytes()


def _write_gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def _write_mnist(directory: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> Path:
    """Tiny MNIST-format files (random pixels, labels cycling 0..9) under ``directory / "mnist"``."""
    rng = np.random.default_rng(seed)
    folder = directory / "mnist"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        names = data.MNIST_FILES
        _write_gz(folder / names[f"{split}_images"][0], _idx_bytes(rng.integers(0, 256, (n, 28, 28))))
        _write_gz(folder / names[f"{split}_labels"][0], _idx_bytes(np.arange(n) % 10))
    return folder


def _jpeg(color: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _color(label: int, index: int) -> tuple[int, int, int]:
    return (20 * label + 10, 200 - 10 * index, 128)


def _write_jpeg_tar(path: Path, split: str, classes: tuple[str, ...], per_class: int) -> Path:
    """A tar laid out like the CIFAR-10 JPEG copy, of solid :func:`_color` images, members in scrambled order."""
    with tarfile.open(path, "w") as tar:
        for index in reversed(range(per_class)):
            for label, name in enumerate(classes):
                _add_member(tar, f"{split}/{name}/{index:04d}.jpg", _jpeg(_color(label, index)))
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --------------------------------------------------------------------------------------------------
# Real MNIST


@pytest.fixture(scope="module")
def mnist() -> data.Dataset:
    _real_dir("mnist")
    return data.load_dataset("mnist")


def test_mnist_shapes_and_name(mnist: data.Dataset) -> None:
    assert (mnist.name, mnist.key, mnist.source) == ("MNIST", "mnist", "local")
    assert mnist.x_train.shape == (55000, 784) and mnist.y_train.shape == (55000,)
    assert mnist.x_val.shape == (5000, 784) and mnist.x_test.shape == (10000, 784)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert mnist.num_classes == 10 and mnist.input_shape == (784,) and mnist.image_shape == (28, 28, 1)


def test_mnist_normalised_train_split(mnist: data.Dataset) -> None:
    assert abs(float(mnist.x_train.mean())) < 1e-4
    assert abs(float(mnist.x_train.std()) - 1) < 1e-4
    assert abs(float(mnist.x_val.mean())) < 0.05  # same statistics, other examples


def test_mnist_raw_statistics() -> None:
    x_train, y_train, x_test, y_test = data.read_mnist(_real_dir("mnist"))
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert len(x_test) == len(y_test) == 10000
    mean, std = data.channel_stats(x_train)
    assert mean == pytest.approx([0.1307], abs=1e-4) and std == pytest.approx([0.3081], abs=1e-4)


# --------------------------------------------------------------------------------------------------
# Real CIFAR-10 JPEG copy


def test_cifar_first_members_of_real_test_tar() -> None:
    path = _real_dir("cifar10") / "test.tar"
    data.verify_sha256(path, data.CIFAR10_JPEG_FILES["test"][1])
    x, y = data.read_jpeg_tar(path, limit=20)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert y.tolist() == list(range(10)) * 2  # members sorted by (index, class): classes interleave
    assert 40 < x.mean() < 200 and x.std() > 20  # real photographs, not blank


@pytest.mark.slow
def test_cifar_full_load() -> None:
    """Decodes all 60k JPEGs on the first run (seconds to a minute); later runs use the cache."""
    folder = _real_dir("cifar10")
    x_train, y_train, x_test, y_test = data.read_cifar10_jpeg(folder)
    assert x_train.shape == (50000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(y_train).tolist() == [5000] * 10 and np.bincount(y_test).tolist() == [1000] * 10
    mean, std = data.channel_stats(x_train)
    assert mean == pytest.approx([0.4913, 0.4821, 0.4465], abs=2e-4)
    assert std == pytest.approx([0.2452, 0.2428, 0.2606], abs=2e-4)
    ds = data.load_dataset("cifar10")
    assert (ds.name, ds.source) == ("CIFAR-10 (JPEG q75 copy)", "local")
    assert ds.x_train.shape == (45000, 3072) and ds.x_val.shape == (5000, 3072)
    assert ds.x_test.shape == (10000, 3072)
    assert np.abs(ds.x_train.reshape(-1, 3).mean(axis=0)).max() < 1e-4


# --------------------------------------------------------------------------------------------------
# IDX parsing and corruption


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    path = _write_gz(tmp_path / "x.gz", _idx_bytes(images))
    np.testing.assert_array_equal(data.read_idx(path, ndim=3), images)


def test_bad_magic(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "labels.gz", _idx_bytes(np.arange(5), magic=2051, dims=(5,)))
    with pytest.raises(ValueError, match=r"labels\.gz.*bad IDX magic 2051"):
        data.read_idx(path, ndim=1)


def test_wrong_count(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "labels.gz", _idx_bytes(np.arange(5), dims=(6,)))
    with pytest.raises(ValueError, match=r"labels\.gz.*wrong count"):
        data.read_idx(path, ndim=1)


def test_truncated_header(tmp_path: Path) -> None:
    path = _write_gz(tmp_path / "images.gz", b"\x00\x00\x08\x03\x00")
    with pytest.raises(ValueError, match=r"images\.gz.*truncated IDX header"):
        data.read_idx(path, ndim=3)


def test_truncated_gzip(tmp_path: Path) -> None:
    payload = gzip.compress(_idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28))))
    path = tmp_path / "images.gz"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match=r"images\.gz.*corrupt or truncated gzip"):
        data.read_idx(path, ndim=3)


def test_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match=r"images\.gz.*gzip"):
        data.read_idx(path, ndim=3)


def test_bad_checksum(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    first = data.MNIST_FILES["train_images"][0]
    with pytest.raises(ValueError, match=rf"{first}.*bad checksum"):
        data.read_mnist(folder)
    with pytest.raises(ValueError, match=rf"{first}.*bad checksum"):
        data.load_dataset("mnist", data_dir=tmp_path, val_size=5)  # present but corrupt: no tfds fallback


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    _write_gz(folder / data.MNIST_FILES["test_labels"][0], _idx_bytes(np.arange(9) % 10))
    with pytest.raises(ValueError, match=r"t10k-images.*wrong count: 10 images but 9 labels"):
        data.read_mnist(folder, verify=False)


def test_labels_out_of_range(tmp_path: Path) -> None:
    folder = _write_mnist(tmp_path)
    _write_gz(folder / data.MNIST_FILES["test_labels"][0], _idx_bytes(np.full(10, 10)))
    with pytest.raises(ValueError, match="labels outside 0..9"):
        data.read_mnist(folder, verify=False)


def test_load_synthetic_mnist(tmp_path: Path) -> None:
    _write_mnist(tmp_path, n_train=30, n_test=10)
    ds = data.load_dataset("mnist", data_dir=tmp_path, source="local", val_size=6, seed=1, verify=False)
    assert (ds.name, ds.source) == ("MNIST", "local")
    assert ds.x_train.shape == (24, 784) and ds.x_val.shape == (6, 784) and ds.x_test.shape == (10, 784)
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-4
    assert sorted(ds.y_train.tolist() + ds.y_val.tolist()) == sorted((np.arange(30) % 10).tolist())
    small = data.load_dataset("mnist", data_dir=tmp_path, val_size=6, seed=1, verify=False, limit=4,
                              normalize=False, flatten=False)
    assert small.x_train.shape == (4, 28, 28, 1) and small.x_test.shape == (4, 28, 28, 1)
    assert small.mean is None and 0 <= small.x_train.min() and small.x_train.max() <= 1
    np.testing.assert_array_equal(small.y_train, ds.y_train[:4])


# --------------------------------------------------------------------------------------------------
# CIFAR tar reader and cache


def test_read_synthetic_jpeg_tar(tmp_path: Path) -> None:
    classes = ("bird", "cat", "dog")
    path = _write_jpeg_tar(tmp_path / "train.tar", "train", classes, per_class=3)
    x, y = data.read_jpeg_tar(path, classes)
    assert x.shape == (9, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert y.tolist() == [0, 1, 2] * 3
    for i, (label, index) in enumerate((label, index) for index in range(3) for label in range(3)):
        np.testing.assert_allclose(x[i].reshape(-1, 3).mean(axis=0), _color(label, index), atol=3)
    x2, y2 = data.read_jpeg_tar(path, classes, limit=4)
    np.testing.assert_array_equal(x2, x[:4])
    assert y2.tolist() == [0, 1, 2, 0]


def test_jpeg_tar_corruption(tmp_path: Path) -> None:
    classes = ("cat", "dog")
    good = _write_jpeg_tar(tmp_path / "good.tar", "train", classes, per_class=2).read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good[:1000])
    with pytest.raises(ValueError, match=r"truncated\.tar"):
        data.read_jpeg_tar(truncated, classes)
    with tarfile.open(tmp_path / "badjpeg.tar", "w") as tar:
        _add_member(tar, "train/cat/0000.jpg", b"not a jpeg")
    with pytest.raises(ValueError, match=r"badjpeg\.tar:train/cat/0000\.jpg: cannot decode"):
        data.read_jpeg_tar(tmp_path / "badjpeg.tar", classes)
    with tarfile.open(tmp_path / "badname.tar", "w") as tar:
        _add_member(tar, "train/cow/0000.jpg", _jpeg((0, 0, 0)))
    with pytest.raises(ValueError, match=r"badname\.tar: unexpected member 'train/cow/0000\.jpg'"):
        data.read_jpeg_tar(tmp_path / "badname.tar", classes)
    with tarfile.open(tmp_path / "badsize.tar", "w") as tar:
        _add_member(tar, "train/cat/0000.jpg", _jpeg((0, 0, 0), size=16))
    with pytest.raises(ValueError, match=r"badsize\.tar.*shape \(16, 16, 3\)"):
        data.read_jpeg_tar(tmp_path / "badsize.tar", classes)


def _write_cifar(directory: Path) -> Path:
    folder = directory / "cifar10-jpeg"
    folder.mkdir(parents=True)
    _write_jpeg_tar(folder / "train.tar", "train", data.CIFAR10_CLASSES, per_class=2)
    _write_jpeg_tar(folder / "test.tar", "test", data.CIFAR10_CLASSES, per_class=1)
    return folder


def test_cifar_cache(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write_cifar(tmp_path)
    first = data.read_cifar10_jpeg(folder, verify=False)
    assert len(list(cache.glob("cifar10-jpeg-*.npz"))) == 2 and not list(cache.glob(".*tmp"))
    monkeypatch.setattr(data, "read_jpeg_tar", lambda *a, **k: pytest.fail("cache not used"))
    second = data.read_cifar10_jpeg(folder, verify=False)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    ds = data.load_dataset("cifar10", data_dir=tmp_path, val_size=5, verify=False)
    assert (ds.name, ds.source) == ("CIFAR-10 (JPEG q75 copy)", "local")
    assert ds.x_train.shape == (15, 3072) and ds.x_test.shape == (10, 3072) and len(ds.mean) == 3


def test_cifar_corrupt_cache_is_rebuilt(tmp_path: Path, cache: Path) -> None:
    folder = _write_cifar(tmp_path)
    first = data.read_cifar10_jpeg(folder, verify=False)
    for path in cache.glob("*.npz"):
        path.write_bytes(b"garbage")
    second = data.read_cifar10_jpeg(folder, verify=False)
    np.testing.assert_array_equal(first[0], second[0])


def test_cifar_bad_checksum(tmp_path: Path, cache: Path) -> None:
    folder = _write_cifar(tmp_path)
    with pytest.raises(ValueError, match=r"train\.tar.*bad checksum"):
        data.read_cifar10_jpeg(folder)
    assert not cache.exists()


# --------------------------------------------------------------------------------------------------
# Sources: tfds and missing data


def _fake_tfds(calls: list[tuple]) -> types.ModuleType:
    module = types.ModuleType("tensorflow_datasets")
    shapes = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}

    def load(name: str, *, split: str, batch_size: int, as_supervised: bool) -> tuple[np.ndarray, np.ndarray]:
        calls.append((name, split, batch_size, as_supervised))
        n = 20 if split == "train" else 7
        x = np.random.default_rng(len(calls)).integers(0, 256, (n, *shapes[name]), dtype=np.uint8)
        return x, np.arange(n) % 10

    module.load, module.as_numpy = load, lambda tree: tree
    return module


def test_tfds_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(calls))
    ds = data.load_dataset("cifar10", data_dir=tmp_path, val_size=4)  # auto: no local files -> tfds
    assert (ds.name, ds.source) == ("CIFAR-10", "tfds")
    assert ds.x_train.shape == (16, 3072) and ds.x_test.shape == (7, 3072)
    assert calls == [("cifar10", "train", -1, True), ("cifar10", "test", -1, True)]
    _write_mnist(tmp_path)
    assert data.load_dataset("mnist", data_dir=tmp_path, source="tfds", val_size=4).source == "tfds"


def test_missing_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(data.DataNotFoundError, match="TT_DATA_DIR") as info:
        data.load_dataset("cifar10", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar10-jpeg") in message and "tensorflow-datasets" in message
    assert "CIFAR-10 (JPEG q75 copy)" in message
    with pytest.raises(data.DataNotFoundError, match="source='local'"):
        data.load_dataset("mnist", data_dir=tmp_path, source="local")
    with pytest.raises(data.DataNotFoundError, match="source='tfds' needs tensorflow-datasets"):
        data.load_dataset("mnist", source="tfds")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("imagenet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown source"):
        data.load_dataset("mnist", source="web")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Data directory resolution


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TT_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"  # explicit argument wins
    monkeypatch.delenv("TT_DATA_DIR")
    repo, cwd = tmp_path / "repo", tmp_path / "work" / "run"
    cwd.mkdir(parents=True)
    monkeypatch.setattr(data, "REPO_ROOT", repo)
    monkeypatch.chdir(cwd)
    assert data.resolve_data_dir() is None
    (repo / "shared" / "data").mkdir(parents=True)
    assert data.resolve_data_dir() == repo / "shared" / "data"
    (tmp_path / "work" / "shared" / "data").mkdir(parents=True)  # <cwd>/../shared/data beats <repo>/shared/data
    assert data.resolve_data_dir() == tmp_path / "work" / "shared" / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)  # <repo>/../shared/data beats both
    assert data.resolve_data_dir() == tmp_path / "shared" / "data"


def test_env_data_dir_is_used_by_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_mnist(tmp_path)
    monkeypatch.setenv("TT_DATA_DIR", str(tmp_path))
    assert data.load_dataset("mnist", val_size=5, verify=False).x_test.shape == (10, 784)


# --------------------------------------------------------------------------------------------------
# Splits, statistics and batching


def test_split_train_val() -> None:
    x, y = np.arange(100).reshape(50, 2), np.arange(50)
    a = data.split_train_val(x, y, 10, seed=3)
    b = data.split_train_val(x, y, 10, seed=3)
    c = data.split_train_val(x, y, 10, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert a[3].tolist() != c[3].tolist()
    assert sorted(a[1].tolist() + a[3].tolist()) == list(range(50)) and len(a[3]) == 10
    with pytest.raises(ValueError, match="val_size"):
        data.split_train_val(x, y, 50)


def test_channel_stats_exact() -> None:
    x = np.random.default_rng(0).integers(0, 256, (37, 5, 4, 3), dtype=np.uint8)
    mean, std = data.channel_stats(x, chunk=8)
    flat = x.reshape(-1, 3) / 255
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(axis=0), rtol=1e-10)


def _batches(n: int = 23, **kwargs) -> list[np.ndarray]:
    x, y = np.arange(2 * n).reshape(n, 2), np.arange(n)
    out = []
    for xb, yb in data.iterate_batches(x, y, 5, **kwargs):
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)  # x and y stay aligned
        out.append(yb)
    return out


def test_batches_deterministic_per_seed_and_epoch() -> None:
    same = _batches(seed=7, epoch=2), _batches(seed=7, epoch=2)
    assert [b.tolist() for b in same[0]] == [b.tolist() for b in same[1]]
    assert np.concatenate(_batches(seed=7, epoch=3)).tolist() != np.concatenate(same[0]).tolist()
    assert np.concatenate(_batches(seed=8, epoch=2)).tolist() != np.concatenate(same[0]).tolist()


def test_batches_resume_mid_epoch() -> None:
    full = _batches(seed=1, epoch=4)
    resumed = _batches(seed=1, epoch=4, start_batch=2)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in full[2:]]


@given(n=st.integers(0, 40), batch_size=st.integers(1, 12), drop_last=st.booleans(), shuffle=st.booleans(),
       epoch=st.integers(0, 5))
def test_batches_cover_epoch(n: int, batch_size: int, drop_last: bool, shuffle: bool, epoch: int) -> None:
    x, y = np.arange(n) * 10, np.arange(n)
    batches = list(data.iterate_batches(x, y, batch_size, shuffle=shuffle, epoch=epoch, drop_last=drop_last))
    assert len(batches) == data.num_batches(n, batch_size, drop_last=drop_last)
    seen = np.concatenate([yb for _, yb in batches]) if batches else np.array([], int)
    if drop_last:
        assert all(len(yb) == batch_size for _, yb in batches) and len(seen) == n - n % batch_size
    else:
        assert sorted(seen.tolist()) == list(range(n))  # every example exactly once
    assert len(set(seen.tolist())) == len(seen)
    if not shuffle:
        assert seen.tolist() == list(range(len(seen)))


def test_batch_argument_errors() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        data.iterate_batches(np.zeros(3), np.zeros(3), 0)
    with pytest.raises(ValueError, match="differ in length"):
        data.iterate_batches(np.zeros(3), np.zeros(4), 2)


# --------------------------------------------------------------------------------------------------
# Module hygiene


def test_no_framework_imports() -> None:
    code = ("import sys, experiments.data; "
            "print([m for m in ('jax', 'torch', 'tensorflow', 'tensorflow_datasets') if m in sys.modules])")
    repo = Path(data.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.stdout.strip() == "[]"
