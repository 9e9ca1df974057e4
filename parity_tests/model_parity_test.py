"""Whole networks (TT, dense, batch norm, dropout) in eval mode: built in JAX, moved to torch, same outputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from parity_tests.helpers import MODEL_FLOAT32_RTOL, MODEL_FLOAT64_RTOL, check_normwise, normwise_err
from parity_tests.models import IN_FEATURES, JaxNet, TorchNet, numpy_forward, randomize_batch_norm
from tt_jax import transfer as jax_transfer
from tt_torch import transfer as torch_transfer

DTYPES = {
    "float64": (jnp.float64, torch.float64, MODEL_FLOAT64_RTOL),
    "float32": (jnp.float32, torch.float32, MODEL_FLOAT32_RTOL),
}


def transferred_models(dtype_name: str, seed: int) -> tuple[JaxNet, TorchNet, dict[str, np.ndarray]]:
    """A JAX network with random batch-norm statistics, its weights, and a torch network loaded with them."""
    jax_dtype, torch_dtype, _ = DTYPES[dtype_name]
    jax_model = JaxNet(param_dtype=jax_dtype, rngs=nnx.Rngs(seed))
    jax_transfer.load(jax_model, randomize_batch_norm(jax_transfer.export(jax_model), seed))
    torch_model = TorchNet(dtype=torch_dtype)
    weights = jax_transfer.export(jax_model)
    assert sorted(torch_transfer.export(torch_model)) == sorted(weights)  # one naming scheme
    torch_transfer.load(torch_model, weights)
    jax_model.eval()
    torch_model.eval()
    return jax_model, torch_model, weights


def outputs(jax_model: JaxNet, torch_model: TorchNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        return np.asarray(jax_model(jnp.asarray(x))), torch_model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("seed", [0, 1])
def test_eval_mode_outputs_agree_after_transfer(dtype_name: str, seed: int) -> None:
    jax_model, torch_model, weights = transferred_models(dtype_name, seed)
    x = np.random.default_rng(seed).standard_normal((16, IN_FEATURES)).astype(dtype_name)
    jax_y, torch_y = outputs(jax_model, torch_model, x)
    reference = numpy_forward(weights, x)
    rtol = DTYPES[dtype_name][2]
    assert jax_y.dtype == torch_y.dtype == np.dtype(dtype_name)
    check_normwise(f"model {dtype_name} eval: jax vs numpy", {"y": jax_y}, {"y": reference}, rtol)
    check_normwise(f"model {dtype_name} eval: torch vs numpy", {"y": torch_y}, {"y": reference}, rtol)
    check_normwise(f"model {dtype_name} eval: jax vs torch", {"y": jax_y}, {"y": torch_y}, rtol)


def test_a_wrong_batch_norm_eps_would_be_caught() -> None:
    """The float32 tolerance is tight enough to see a convention slip (eps 1e-3 instead of 1e-5)."""
    jax_model, torch_model, _ = transferred_models("float32", 0)
    torch_model.layers[1].eps = 1e-3
    x = np.random.default_rng(0).standard_normal((16, IN_FEATURES)).astype(np.float32)
    jax_y, torch_y = outputs(jax_model, torch_model, x)
    assert normwise_err(torch_y, jax_y) > 10 * MODEL_FLOAT32_RTOL


def test_train_mode_is_not_eval_mode() -> None:
    """Sanity check of the mode switch: in train mode (dropout, batch statistics) the outputs change."""
    jax_model, torch_model, _ = transferred_models("float32", 0)
    x = np.random.default_rng(0).standard_normal((16, IN_FEATURES)).astype(np.float32)
    eval_jax, eval_torch = outputs(jax_model, torch_model, x)
    jax_model.train()
    torch_model.train()
    train_jax, train_torch = outputs(jax_model, torch_model, x)
    assert normwise_err(eval_jax, eval_torch) <= MODEL_FLOAT32_RTOL
    assert normwise_err(train_jax, eval_jax) > 0.1 and normwise_err(train_torch, eval_torch) > 0.1
