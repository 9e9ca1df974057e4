"""Training parity: same initial weights, same batches, k steps of SGD-momentum / Adam in optax and torch.optim.

The network is :class:`parity_tests.models.JaxNet` / ``TorchNet`` in training mode
(batch norm on batch statistics; dropout off, since the two frameworks draw
different masks). Hyperparameters go through :mod:`experiments.conventions`; the
test uses a large Adam ``eps`` and non-default betas, so a wrong mapping (``eps``
inside the root, swapped betas) changes the parameters by far more than the
tolerance. After ``k`` steps every parameter must agree, relative to how far it
moved; running means agree the same way, running variances after torch's
unbiased correction (:func:`experiments.conventions.torch_running_var`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

from parity_tests.helpers import TRAIN_FLOAT32_RTOL, TRAIN_FLOAT64_RTOL, check_close, check_normwise, normwise_err
from parity_tests.models import CLASSES, IN_FEATURES, JaxNet, TorchNet
from experiments.conventions import SGD, Adam, torch_running_var
from tt_jax import transfer as jax_transfer
from tt_torch import transfer as torch_transfer

STEPS, BATCH = 5, 16
BN_MOMENTUM = 0.8  # Flax convention; far from both defaults so the mapping matters
OPTIMIZERS = {
    "sgd-momentum": SGD(learning_rate=0.05, momentum=0.9),
    "adam": Adam(learning_rate=0.01, b1=0.8, b2=0.95, eps=1e-3),
}
DTYPES = {
    "float64": (jnp.float64, torch.float64, TRAIN_FLOAT64_RTOL),
    "float32": (jnp.float32, torch.float32, TRAIN_FLOAT32_RTOL),
}


def batches(dtype_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal((BATCH, IN_FEATURES)).astype(dtype_name), rng.integers(0, CLASSES, BATCH))
        for _ in range(STEPS)
    ]


def _jax_net(dtype) -> JaxNet:
    return JaxNet(param_dtype=dtype, dropout=0.0, bn_momentum=BN_MOMENTUM, rngs=nnx.Rngs(0))


def train_jax(model: JaxNet, tx: optax.GradientTransformation, data) -> list[float]:
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    return [float(step(model, optimizer, jnp.asarray(x), jnp.asarray(y))) for x, y in data]


def train_torch(model: TorchNet, optimizer: torch.optim.Optimizer, data) -> list[float]:
    losses = []
    for x, y in data:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_parameters_agree_after_k_steps(name: str, dtype_name: str) -> None:
    jax_dtype, torch_dtype, rtol = DTYPES[dtype_name]
    config = OPTIMIZERS[name]
    jax_model = _jax_net(jax_dtype)
    torch_model = TorchNet(dtype=torch_dtype, dropout=0.0, bn_momentum=BN_MOMENTUM)
    initial = jax_transfer.export(jax_model)
    torch_transfer.load(torch_model, initial)
    optax_fn, torch_cls = (optax.sgd, torch.optim.SGD) if isinstance(config, SGD) else (optax.adam, torch.optim.Adam)
    tx = optax_fn(**config.optax_kwargs())
    optimizer = torch_cls(torch_model.parameters(), **config.torch_kwargs())

    data = batches(dtype_name)
    jax_losses = train_jax(jax_model, tx, data)
    torch_losses = train_torch(torch_model, optimizer, data)
    check_normwise(f"training {dtype_name} {name}: losses", {"loss": jax_losses}, {"loss": torch_losses}, rtol)

    got, want = jax_transfer.export(jax_model), torch_transfer.export(torch_model)
    for key in sorted(initial):
        moved = np.max(np.abs(want[key].astype(np.float64) - initial[key]))
        assert moved > 1e-3, f"{key} barely moved ({moved:.1e}): the comparison would say little"
        if key.endswith(".var"):  # torch's running variance uses the unbiased batch variance
            expected = torch_running_var(got[key].astype(np.float64), initial[key], BN_MOMENTUM, STEPS, BATCH)
            err = normwise_err(expected, want[key]) * np.max(np.abs(want[key])) / moved
        else:
            err = np.max(np.abs(got[key].astype(np.float64) - want[key])) / moved
        check_close(f"training {dtype_name} {name}: parameters (relative to their change)", float(err), rtol, key)


def test_wrong_mappings_would_be_caught() -> None:
    """The test can tell the conventions apart: torch's defaults or eps inside the root move the parameters
    by much more than the float32 tolerance."""
    data = batches("float64")
    reference_model = _jax_net(jnp.float64)
    initial = jax_transfer.export(reference_model)
    config = OPTIMIZERS["adam"]
    train_jax(reference_model, optax.adam(**config.optax_kwargs()), data)
    reference = jax_transfer.export(reference_model)
    kw = config.optax_kwargs()
    for wrong in ({**kw, "eps": 0.0, "eps_root": config.eps**2}, {**kw, "b1": kw["b2"], "b2": kw["b1"]}):
        model = jax_transfer.load(_jax_net(jnp.float64), initial)
        train_jax(model, optax.adam(**wrong), data)
        got = jax_transfer.export(model)
        worst = max(
            np.max(np.abs(got[k] - reference[k])) / np.max(np.abs(reference[k] - initial[k]))
            for k in reference
            if not k.endswith((".mean", ".var"))
        )
        assert worst > 100 * TRAIN_FLOAT32_RTOL, (wrong, worst)
