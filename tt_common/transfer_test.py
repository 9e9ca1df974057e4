"""The framework-neutral weight files: exact dtypes and shapes, checks that name the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tt_common.transfer import FORMAT_METADATA, check_mapping, load_metadata, load_weights, save_weights, tt_keys


def test_save_load_keeps_every_dtype_bit_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = {
        "a.cores.0": rng.standard_normal((1, 2, 3, 2)),
        "a.bias": rng.standard_normal(3).astype(np.float32),
        "b.kernel": np.asfortranarray(rng.standard_normal((4, 5)).astype(np.float16)),  # not C-contiguous
        "b.special": np.array([np.nan, -0.0, np.inf, 5e-324]),
    }
    save_weights(tmp_path / "w.safetensors", weights, metadata={"note": "test"})
    loaded = load_weights(tmp_path / "w.safetensors")
    assert sorted(loaded) == sorted(weights)
    for key, value in weights.items():
        assert loaded[key].dtype == value.dtype and loaded[key].tobytes() == np.ascontiguousarray(value).tobytes()
    assert load_metadata(tmp_path / "w.safetensors") == {**FORMAT_METADATA, "note": "test"}


def test_bad_values_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="value of key 'x' must be a NumPy array"):
        save_weights(tmp_path / "w.safetensors", {"x": [1.0]})
    with pytest.raises(ValueError, match="metadata must map strings to strings"):
        save_weights(tmp_path / "w.safetensors", {"x": np.ones(1)}, metadata={"n": 1})


def test_check_mapping_names_the_key() -> None:
    expected = {k: (2,) for k in tt_keys("fc", 2, True)}
    with pytest.raises(ValueError, match="missing key 'fc.bias'"):
        check_mapping(expected, {"fc.cores.0": np.ones(2), "fc.cores.1": np.ones(2)})
    with pytest.raises(ValueError, match="unexpected key 'fc.kernel'"):
        check_mapping(expected, {**{k: np.ones(2) for k in expected}, "fc.kernel": np.ones(2)})
    check_mapping(expected, {k: np.ones(2) for k in expected})


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.complex64])
def test_check_mapping_refuses_non_float_arrays_naming_the_key(dtype) -> None:
    expected = {"fc.kernel": (2, 2), "fc.bias": (2,)}
    mapping = {"fc.kernel": np.ones((2, 2), np.float32), "fc.bias": np.ones(2, dtype)}
    with pytest.raises(ValueError, match=f"key 'fc.bias' holds {np.dtype(dtype).name} values; weights must be floating"):
        check_mapping(expected, mapping)


def test_check_mapping_accepts_every_float_dtype() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")  # JAX's; absent from a torch-only install
    for dtype in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16):
        check_mapping({"x": (2,)}, {"x": np.ones(2, dtype)})
