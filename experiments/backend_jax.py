"""JAX backend of the experiments: an NNX model, an optax optimizer, jitted steps; data parallel on a device mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import tt_jax
from experiments.models_jax import build
from experiments.optim import OptimizerConfig
from experiments.parallel import AXIS
from experiments.presets import Network

__all__ = ["JaxBackend", "data_mesh"]


def _optax(cfg: OptimizerConfig) -> optax.GradientTransformation:
    def make(learning_rate):
        convention = cfg.convention()
        kwargs = {**convention.optax_kwargs(), "learning_rate": learning_rate}
        factory = {"sgd": optax.sgd, "adam": optax.adam, "rmsprop": optax.rmsprop, "adadelta": optax.adadelta}
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), factory[cfg.name](**kwargs))

    return optax.inject_hyperparams(make)(learning_rate=cfg.lr_at(0))


def _loss_and_correct(model, x, y, label_smoothing: float = 0.0, teacher=None, distill=None):
    """The mean cross-entropy (with ``label_smoothing``) and the number correct; with ``teacher`` logits, the
    distillation loss of :class:`experiments.train.Distill` (``distill``: its ``(weight, temperature)``)."""
    logits = model(x)
    if label_smoothing:  # as torch's cross_entropy(label_smoothing=): (1 - a) one-hot + a / classes
        targets = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    if teacher is not None:
        weight, temperature = distill
        log_q = jax.nn.log_softmax(teacher / temperature)
        kl = jnp.sum(jnp.exp(log_q) * (log_q - jax.nn.log_softmax(logits / temperature)), -1).mean()
        loss = (1 - weight) * loss + weight * temperature**2 * kl
    return loss, jnp.sum(jnp.argmax(logits, -1) == y)


@functools.partial(nnx.jit, static_argnames=("label_smoothing", "distill"))
def _train_step(model, optimizer, x, y, label_smoothing: float = 0.0, teacher=None, distill=None):
    (loss, correct), grads = nnx.value_and_grad(_loss_and_correct, has_aux=True)(model, x, y, label_smoothing,
                                                                                 teacher, distill)
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


def data_mesh(devices: int) -> Mesh:
    """A 1-D mesh (axis ``"data"``) over ``devices`` devices, ordered by process, then id: in a multi-machine run
    each process's devices are adjacent, so each holds a contiguous block of every batch."""
    chosen = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))[:devices]
    return Mesh(np.array(chosen), (AXIS,))


def _local(value):
    """This process's copy of a replicated ``jax.Array`` (the array itself when this process holds all of it, as
    in every one-process run)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return value.addressable_data(0)
    return value


def _global(value, sharding: NamedSharding) -> jax.Array:
    """``value`` (a host array, or an array this process holds whole; the same on every process) laid out by
    ``sharding``: ``jax.device_put`` in one process; in several, each fills its own devices' shards."""
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    if _is_key(value):
        data = _global(jax.random.key_data(_local(value)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    host = np.asarray(_local(value))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


class JaxBackend:
    """Trains one :class:`experiments.presets.Network` with JAX (GPU when JAX has one), on one device or data
    parallel over ``devices`` of them (see :mod:`experiments.parallel`).

    On several devices each global batch is sharded over a 1-D mesh (:func:`data_mesh`) and the NNX state is
    placed as Flax documents (``nnx.get_named_sharding``: replicated, the networks carry no sharding
    annotations); the jitted step is the single-device one. One device keeps today's path: no mesh at all.
    """

    name = "jax"

    def __init__(self, spec: Network, optimizer: OptimizerConfig, seed: int, *, tt_init: str = "lecun",
                 dense_init: str = "lecun", label_smoothing: float = 0.0, devices: int = 1):
        self.model = build(spec, seed=seed, tt_init=tt_init, dense_init=dense_init)
        self.optimizer = nnx.Optimizer(self.model, _optax(optimizer), wrt=nnx.Param)
        self.label_smoothing = label_smoothing
        self.distill: tuple[float, float] | None = None  # (weight, temperature): set_distillation
        self._mesh = data_mesh(devices) if devices > 1 or jax.process_count() > 1 else None
        if self._mesh is not None:
            self._sharded = NamedSharding(self._mesh, P(AXIS))
            self._replicated = NamedSharding(self._mesh, P())
            self._place_state()

    def _place_state(self) -> None:
        """Puts the model and optimizer state on the mesh, as ``nnx.get_named_sharding`` says (all replicated)."""
        state = nnx.state((self.model, self.optimizer))
        shardings = nnx.get_named_sharding(state, self._mesh)
        # Several processes: each holds the same values (same seed, same checkpoint) and fills its own devices.
        nnx.update((self.model, self.optimizer), jax.tree.map(_global, state, shardings))

    @property
    def device(self) -> str:
        d = jax.devices()[0]
        if self._mesh is None:
            return f"jax {d.platform}: {d.device_kind}"
        return f"jax {d.platform}: {self._mesh.size} x {d.device_kind} (sharded batch)"

    def report(self) -> str:
        return tt_jax.compression_report(self.model)

    def tt_plans(self, batch_size: int) -> list[tuple[tuple[int, ...], str]]:
        """Each TT layer's merge of cores and direction for a batch of ``batch_size``."""
        return [layer.plan(batch_size) for layer in self.model.layers if isinstance(layer, tt_jax.TTLinear)]

    def set_learning_rate(self, lr: float) -> None:
        value = jnp.asarray(lr)
        if self._mesh is not None:
            value = _global(np.asarray(value), self._replicated)
        self.optimizer.opt_state.hyperparams["learning_rate"][...] = value

    def begin_epoch(self, epoch: int) -> None:
        """Nothing: the dropout key is one global stream, whatever the device count (threefry is partitionable)."""

    def _put(self, a: np.ndarray) -> jax.Array:
        """A host batch as the step's input: as it is on one device; on the mesh sharded over the batch (or
        replicated, for a short last batch that does not split evenly)."""
        if self._mesh is None:
            return jnp.asarray(a)
        return _global(a, self._sharded if len(a) % self._mesh.size == 0 else self._replicated)

    def set_distillation(self, weight: float, temperature: float) -> None:
        """The weight and temperature of the teacher's term in the loss of the steps given teacher logits."""
        self.distill = (float(weight), float(temperature))

    def train_step(self, x: np.ndarray, y: np.ndarray, teacher: np.ndarray | None = None):
        """One step on the global batch ``(x, y)``; returns the (loss, number correct) as device scalars (no sync).
        ``teacher``: the teacher's logits for the batch (distillation, :meth:`set_distillation`)."""
        self.model.train()
        soft = None if teacher is None else self._put(teacher)
        loss, correct = _train_step(self.model, self.optimizer, self._put(x), self._put(y),
                                    label_smoothing=self.label_smoothing, teacher=soft,
                                    distill=None if teacher is None else self.distill)
        return _local(loss), _local(correct)

    def evaluate(self, batches) -> tuple[float, float]:
        """Mean loss and accuracy over ``(x, y)`` batches, in eval mode (running batch-norm statistics)."""
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in batches:
            loss, right = _eval_step(self.model, self._put(x), self._put(y))
            total_loss, correct, count = total_loss + float(_local(loss)), correct + int(_local(right)), count + len(y)
        return total_loss / count, correct / count

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything a resumed run needs (parameters, batch-norm statistics, optimizer and RNG state) as named
        NumPy arrays, and the state that is not arrays as JSON (none in JAX). The same on any device count."""
        pure = nnx.to_pure_dict(nnx.state((self.model, self.optimizer)))
        return _flatten(jax.device_get(jax.tree.map(_local, pure))), {}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restores :meth:`state` (from a run on any device count); a ``ValueError`` names a missing, unexpected or
        mis-shaped array."""
        state = nnx.state((self.model, self.optimizer))
        nnx.replace_by_pure_dict(state, _unflatten_like(jax.tree.map(_local, nnx.to_pure_dict(state)), arrays))
        nnx.update((self.model, self.optimizer), state)
        if self._mesh is not None:
            self._place_state()

    def parameters(self) -> dict[str, np.ndarray]:
        """The weights in the neutral naming of :mod:`tt_common.transfer`."""
        model = self.model
        if jax.process_count() > 1:  # replicated arrays spanning machines: export this process's copy
            graphdef, state = nnx.split(self.model)
            model = nnx.merge(graphdef, jax.tree.map(_local, state))
        return tt_jax.transfer.export(model)

    def load_parameters(self, weights: dict[str, np.ndarray]) -> None:
        """Sets the weights (and batch-norm statistics) from :meth:`parameters`' naming, e.g. a converted model's;
        the optimizer's state stays as it is (fresh before the first step)."""
        tt_jax.transfer.load(self.model, weights)
        if self._mesh is not None:  # the loaded arrays replicated over the mesh again
            self._place_state()
