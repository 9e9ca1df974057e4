"""tensorize in both frameworks: the same dense weights give the same plans and cores (one sign convention), and a
model tensorized in one framework, transferred, gives the other's outputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

import tt_jax
import tt_torch
from parity_tests.helpers import record

SIZES = [(64, 48), (48, 48), (48, 10)]


def _models(seed: int, dtype: str):
    """The same dense MLP in both frameworks (nnx.Sequential's layers.K is nn.Sequential's K)."""
    rng = np.random.default_rng(seed)
    jdt, tdt = {"float32": (jnp.float32, torch.float32), "float64": (jnp.float64, torch.float64)}[dtype]
    weights = {}
    for k, (m, n) in enumerate(SIZES):
        # A decaying spectrum, as trained layers have, so truncations matter and the budget has choices.
        kernel = rng.standard_normal((m, n)) * np.exp(-np.arange(n) / 6.0)
        weights[f"layers.{2 * k}.kernel"] = (rng.standard_normal((m, m)) @ kernel / np.sqrt(m)).astype(dtype)
        weights[f"layers.{2 * k}.bias"] = rng.standard_normal(n).astype(dtype)
    rngs = nnx.Rngs(0)
    layers = [nnx.Linear(m, n, param_dtype=jdt, rngs=rngs) for m, n in SIZES]
    jax_model = nnx.Sequential(layers[0], nnx.relu, layers[1], nnx.relu, layers[2])
    tt_jax.transfer.load(jax_model, weights)
    torch_model = nn.Sequential(*[mod for m, n in SIZES for mod in (nn.Linear(m, n, dtype=tdt), nn.ReLU())][:-1])
    tt_torch.transfer.load(torch_model, weights, prefix="layers")
    return jax_model, torch_model


@pytest.mark.parametrize("kwargs", [{"max_rank": 3}, {"rtol": 0.3}, {"compression": 4.0}])
def test_same_weights_give_the_same_plans_and_cores(kwargs) -> None:
    jax_model, torch_model = _models(0, "float64")
    jax_small, jax_report = tt_jax.tensorize(jax_model, **kwargs)
    torch_small, torch_report = tt_torch.tensorize(torch_model, **kwargs)
    assert jax_report.tensorized == [f"layers.{n}" for n in torch_report.tensorized] and jax_report.tensorized
    for jax_row, torch_row in zip(jax_report.layers, torch_report.layers):
        assert (jax_row.ranks, jax_row.in_modes, jax_row.params_after) == (torch_row.ranks, torch_row.in_modes,
                                                                          torch_row.params_after)
        assert abs(jax_row.error - torch_row.error) < 1e-12
    jax_weights = tt_jax.transfer.export(jax_small)
    torch_weights = tt_torch.transfer.export(torch_small, prefix="layers")
    assert sorted(jax_weights) == sorted(torch_weights)
    worst = max(float(np.abs(jax_weights[k] - torch_weights[k]).max() / np.abs(torch_weights[k]).max())
                for k in jax_weights)
    record("tensorize float64 cores, jax vs torch", worst)
    assert worst < 1e-10  # the same cores, not only the same matrices: no sign flips


def test_float32_cores_agree_to_float32_rounding() -> None:
    jax_model, torch_model = _models(1, "float32")
    jax_small, _ = tt_jax.tensorize(jax_model, max_rank=3)
    torch_small, _ = tt_torch.tensorize(torch_model, max_rank=3)
    jax_weights = tt_jax.transfer.export(jax_small)
    torch_weights = tt_torch.transfer.export(torch_small, prefix="layers")
    worst = max(float(np.abs(jax_weights[k] - torch_weights[k]).max() / np.abs(torch_weights[k]).max())
                for k in jax_weights)
    record("tensorize float32 cores, jax vs torch", worst)
    assert worst < 1e-4  # float32 SVDs of two LAPACK callers; singular-value gaps here are far above 1e-4


@pytest.mark.parametrize("source", ["jax", "torch"])
def test_a_tensorized_model_transferred_gives_the_others_outputs(source: str) -> None:
    """The twin is tensorized from other weights (same modes and ranks), then loaded with the source's."""
    jax_model, torch_model = _models(2, "float64")
    other_jax, other_torch = _models(5, "float64")
    x = np.random.default_rng(3).standard_normal((7, SIZES[0][0]))
    if source == "jax":
        small, _ = tt_jax.tensorize(jax_model, max_rank=3)
        twin, _ = tt_torch.tensorize(other_torch, max_rank=3)
        tt_torch.transfer.load(twin, tt_jax.transfer.export(small), prefix="layers")
        want, got = np.asarray(small(jnp.asarray(x))), twin(torch.from_numpy(x)).detach().numpy()
    else:
        small, _ = tt_torch.tensorize(torch_model, max_rank=3)
        twin, _ = tt_jax.tensorize(other_jax, max_rank=3)
        tt_jax.transfer.load(twin, tt_torch.transfer.export(small, prefix="layers"))
        want, got = small(torch.from_numpy(x)).detach().numpy(), np.asarray(twin(jnp.asarray(x)))
    error = float(np.abs(got - want).max() / np.abs(want).max())
    record("tensorized model after transfer, float64", error)
    assert error < 1e-13
