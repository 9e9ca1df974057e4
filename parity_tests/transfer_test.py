"""Weight transfer between the frameworks: bit-exact round trips through safetensors files, clear errors."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import tt_jax
import tt_torch
from parity_tests.models import JaxNet, TorchNet, randomize_batch_norm
from tt_common.transfer import load_metadata, load_weights
from tt_jax import transfer as jax_transfer
from tt_torch import transfer as torch_transfer

DTYPES = {"float32": (jnp.float32, torch.float32), "float64": (jnp.float64, torch.float64)}


def assert_bit_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].shape == want[key].shape, key
        assert got[key].tobytes() == want[key].tobytes(), key  # bit-exact, NaN payloads and -0.0 included


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_jax_file_torch_file_jax_is_bit_exact(tmp_path: Path, dtype_name: str) -> None:
    jax_dtype, torch_dtype = DTYPES[dtype_name]
    source = JaxNet(param_dtype=jax_dtype, rngs=nnx.Rngs(0))
    jax_transfer.load(source, randomize_batch_norm(jax_transfer.export(source), 0))
    original = jax_transfer.export(source)
    jax_transfer.save_file(source, tmp_path / "from_jax.safetensors", metadata={"model": "JaxNet"})

    torch_model = torch_transfer.load_file(TorchNet(dtype=torch_dtype), tmp_path / "from_jax.safetensors")
    torch_transfer.save_file(torch_model, tmp_path / "from_torch.safetensors")
    target = JaxNet(param_dtype=jax_dtype, rngs=nnx.Rngs(1))
    jax_transfer.load_file(target, tmp_path / "from_torch.safetensors")

    assert_bit_equal(load_weights(tmp_path / "from_jax.safetensors"), original)
    assert_bit_equal(load_weights(tmp_path / "from_torch.safetensors"), original)
    assert_bit_equal(jax_transfer.export(target), original)
    assert load_metadata(tmp_path / "from_jax.safetensors")["model"] == "JaxNet"
    # The torch tensors themselves hold the same bits, nn.Linear's weight transposed.
    state = torch_model.state_dict()
    assert state["layers.0.cores.2"].numpy().tobytes() == original["layers.0.cores.2"].tobytes()
    assert np.array_equal(state["layers.3.weight"].numpy().T, original["layers.3.kernel"])
    assert np.array_equal(state["layers.1.running_var"].numpy(), original["layers.1.var"])


def test_torch_file_jax_file_torch_is_bit_exact(tmp_path: Path) -> None:
    source = TorchNet(dtype=torch.float64)
    with torch.no_grad():
        source.layers[1].running_mean.normal_()
    original = torch_transfer.export(source)
    torch_transfer.save_file(source, tmp_path / "a.safetensors")
    jax_model = jax_transfer.load_file(JaxNet(param_dtype=jnp.float64, rngs=nnx.Rngs(0)), tmp_path / "a.safetensors")
    jax_transfer.save_file(jax_model, tmp_path / "b.safetensors")
    target = torch_transfer.load_file(TorchNet(dtype=torch.float64), tmp_path / "b.safetensors")
    assert_bit_equal(torch_transfer.export(target), original)


def test_single_layers_move_both_ways(tmp_path: Path) -> None:
    jax_layer = tt_jax.TTLinear((2, 3, 4), (3, 1, 2), (1, 2, 3, 1), rngs=nnx.Rngs(0))
    torch_layer = tt_torch.TTLinear((2, 3, 4), (3, 1, 2), (1, 2, 3, 1))
    jax_transfer.save_file(jax_layer, tmp_path / "tt.safetensors")
    assert sorted(load_weights(tmp_path / "tt.safetensors")) == ["bias", "cores.0", "cores.1", "cores.2"]
    torch_transfer.load_file(torch_layer, tmp_path / "tt.safetensors")
    assert_bit_equal(torch_transfer.export(torch_layer), jax_transfer.export(jax_layer))

    dense = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    linear = torch_transfer.load(torch.nn.Linear(5, 3), jax_transfer.export(dense))
    assert np.array_equal(linear.weight.detach().numpy(), np.asarray(dense.kernel[...]).T)
    back = jax_transfer.load(nnx.Linear(5, 3, rngs=nnx.Rngs(1)), torch_transfer.export(linear))
    assert_bit_equal(jax_transfer.export(back), jax_transfer.export(dense))


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda w: w.pop("layers.4.cores.1"), "missing key 'layers.4.cores.1'"),
        (lambda w: w.update({"layers.2.scale": np.ones(12, np.float32)}), "unexpected key 'layers.2.scale'"),
        (lambda w: w.update({"layers.3.kernel": np.ones((8, 12), np.float32)}), "shape mismatch for key 'layers.3.k"),
        (lambda w: w.update({"layers.1.var": np.ones(11, np.float32)}), "shape mismatch for key 'layers.1.var'"),
    ],
)
def test_mismatched_keys_and_shapes_raise_and_change_nothing(framework: str, edit, message: str) -> None:
    weights = jax_transfer.export(JaxNet(rngs=nnx.Rngs(0)))
    edit(weights)
    if framework == "jax":
        model, package = JaxNet(rngs=nnx.Rngs(1)), jax_transfer
    else:
        model, package = TorchNet(), torch_transfer
    before = package.export(model)
    with pytest.raises(ValueError, match=message):
        package.load(model, weights)
    assert_bit_equal(package.export(model), before)


def test_unsupported_layers_raise() -> None:
    with pytest.raises(ValueError, match="parameter '1.weight'"):
        torch_transfer.export(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)))

    class WithNorm(nnx.Module):
        def __init__(self):
            self.norm = nnx.LayerNorm(2, rngs=nnx.Rngs(0))

    with pytest.raises(ValueError, match=r"Param 'norm\.(scale|bias)'"):
        jax_transfer.export(WithNorm())


def test_flax_batch_norm_statistics_are_float32() -> None:
    """A documented limit: ``nnx.BatchNorm`` stores running statistics in float32 whatever ``param_dtype``,
    so float64 statistics from torch are rounded on load (``parity_tests.models.JaxNet`` widens them)."""
    norm = nnx.BatchNorm(3, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    stats = {"scale": np.ones(3), "bias": np.zeros(3), "mean": np.full(3, 0.1), "var": np.ones(3)}
    jax_transfer.load(norm, stats)
    assert norm.mean[...].dtype == jnp.float32 and norm.scale[...].dtype == jnp.float64
    assert float(norm.mean[0]) == float(np.float32(0.1)) != 0.1


def test_prefix_maps_nnx_sequential_to_torch_sequential(tmp_path: Path) -> None:
    """``nnx.Sequential`` names its layers ``layers.K`` (functions take an index too), ``nn.Sequential`` ``K``."""
    import jax

    rngs = nnx.Rngs(0)
    jax_model = nnx.Sequential(tt_jax.TTLinear((4, 2), (2, 3), 2, rngs=rngs), jax.nn.relu, nnx.Linear(6, 3, rngs=rngs))
    torch_model = torch.nn.Sequential(tt_torch.TTLinear((4, 2), (2, 3), 2), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    jax_transfer.save_file(jax_model, tmp_path / "seq.safetensors")
    torch_transfer.load_file(torch_model, tmp_path / "seq.safetensors", prefix="layers")
    assert_bit_equal(torch_transfer.export(torch_model, prefix="layers"), jax_transfer.export(jax_model))
    assert sorted(torch_transfer.export(torch_model)) == ["0.bias", "0.cores.0", "0.cores.1", "2.bias", "2.kernel"]
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jax_model(jnp.asarray(x))), torch_model(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
