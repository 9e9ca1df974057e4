"""JAX backend of the experiments: an NNX model, an optax optimizer, jitted steps."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import tt_jax
from experiments.models_jax import build
from experiments.optim import OptimizerConfig
from experiments.presets import Network

__all__ = ["JaxBackend"]


def _optax(cfg: OptimizerConfig) -> optax.GradientTransformation:
    def make(learning_rate):
        convention = cfg.convention()
        kwargs = {**convention.optax_kwargs(), "learning_rate": learning_rate}
        factory = {"sgd": optax.sgd, "adam": optax.adam, "rmsprop": optax.rmsprop, "adadelta": optax.adadelta}
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), factory[cfg.name](**kwargs))

    return optax.inject_hyperparams(make)(learning_rate=cfg.lr_at(0))


def _loss_and_correct(model, x, y, label_smoothing: float = 0.0):
    logits = model(x)
    if label_smoothing:  # as torch's cross_entropy(label_smoothing=): (1 - a) one-hot + a / classes
        targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.sum(jnp.argmax(logits, -1) == y)


@functools.partial(nnx.jit, static_argnames="label_smoothing")
def _train_step(model, optimizer, x, y, label_smoothing: float = 0.0):
    (loss, correct), grads = nnx.value_and_grad(_loss_and_correct, has_aux=True)(model, x, y, label_smoothing)
    optimizer.update(model, grads)
    return loss, correct


@nnx.jit
def _eval_step(model, x, y):
    loss, correct = _loss_and_correct(model, x, y)
    return loss * x.shape[0], correct


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """A nested dict of arrays as ``{"0/layers/1/mean": array, ...}``; a typed PRNG key as its raw key data."""
    flat = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "/"))
        else:
            flat[key] = np.asarray(jax.random.key_data(value) if _is_key(value) else value)
    return flat


def _unflatten_like(template: dict, flat: dict[str, np.ndarray], prefix: str = "") -> dict:
    """The inverse of :func:`_flatten` into the structure (and PRNG-key types) of ``template``."""
    if not prefix:
        expected = set(_flatten(template))
        if expected != set(flat):
            missing, unexpected = sorted(expected - set(flat)), sorted(set(flat) - expected)
            raise ValueError(f"the saved state does not fit this model: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
    tree = {}
    for name, value in template.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            tree[name] = _unflatten_like(value, flat, key + "/")
            continue
        array = flat[key]
        want = jax.random.key_data(value) if _is_key(value) else value
        if array.shape != want.shape or array.dtype != want.dtype:
            raise ValueError(f"saved state {key!r} is {array.dtype}{list(array.shape)}, "
                             f"the model's {want.dtype}{list(want.shape)}")
        tree[name] = jax.random.wrap_key_data(array, impl=jax.random.key_impl(value)) if _is_key(value) else array
    return tree


class JaxBackend:
    """Trains one :class:`experiments.presets.Network` with JAX (GPU when JAX has one)."""

    name = "jax"

    def __init__(self, spec: Network, optimizer: OptimizerConfig, seed: int, *, tt_init: str = "lecun",
                 dense_init: str = "lecun", label_smoothing: float = 0.0):
        self.model = build(spec, seed=seed, tt_init=tt_init, dense_init=dense_init)
        self.optimizer = nnx.Optimizer(self.model, _optax(optimizer), wrt=nnx.Param)
        self.label_smoothing = label_smoothing

    @property
    def device(self) -> str:
        d = jax.devices()[0]
        return f"jax {d.platform}: {d.device_kind}"

    def report(self) -> str:
        return tt_jax.compression_report(self.model)

    def tt_plans(self, batch_size: int) -> list[tuple[tuple[int, ...], str]]:
        """Each TT layer's merge of cores and direction for a batch of ``batch_size``."""
        return [layer.plan(batch_size) for layer in self.model.layers if isinstance(layer, tt_jax.TTLinear)]

    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.opt_state.hyperparams["learning_rate"][...] = jnp.asarray(lr)

    def train_step(self, x: np.ndarray, y: np.ndarray):
        """One step; returns the (loss, number correct) as device scalars (no sync)."""
        self.model.train()
        return _train_step(self.model, self.optimizer, jnp.asarray(x), jnp.asarray(y),
                           label_smoothing=self.label_smoothing)

    def evaluate(self, batches) -> tuple[float, float]:
        """Mean loss and accuracy over ``(x, y)`` batches, in eval mode (running batch-norm statistics)."""
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in batches:
            loss, right = _eval_step(self.model, jnp.asarray(x), jnp.asarray(y))
            total_loss, correct, count = total_loss + float(loss), correct + int(right), count + len(y)
        return total_loss / count, correct / count

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything a resumed run needs (parameters, batch-norm statistics, optimizer and RNG state) as named
        NumPy arrays, and the state that is not arrays as JSON (none in JAX)."""
        return _flatten(jax.device_get(nnx.to_pure_dict(nnx.state((self.model, self.optimizer))))), {}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restores :meth:`state`; a ``ValueError`` names a missing, unexpected or mis-shaped array."""
        state = nnx.state((self.model, self.optimizer))
        nnx.replace_by_pure_dict(state, _unflatten_like(nnx.to_pure_dict(state), arrays))
        nnx.update((self.model, self.optimizer), state)

    def parameters(self) -> dict[str, np.ndarray]:
        """The weights in the neutral naming of :mod:`tt_common.transfer`."""
        return tt_jax.transfer.export(self.model)

    def load_parameters(self, weights: dict[str, np.ndarray]) -> None:
        """Sets the weights (and batch-norm statistics) from :meth:`parameters`' naming, e.g. a converted model's;
        the optimizer's state stays as it is (fresh before the first step)."""
        tt_jax.transfer.load(self.model, weights)
