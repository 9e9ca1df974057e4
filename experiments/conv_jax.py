"""The CIFAR-10 convolutional network of :mod:`experiments.conv_net` in Flax NNX (NHWC), and one training step.

The mirror of :mod:`experiments.conv_torch`: ``nnx.Conv`` / ``nnx.Linear`` with their default LeCun init, the
TT layers' variance-exact LeCun init, batch norm with Flax's momentum 0.9 (torch's 0.1), the same Adam.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import tt_jax
from experiments.conv_net import CHANNELS, CLASSIFIER_MODES, KERNEL, POOL_AFTER, ConvNet, Recipe

__all__ = ["Net", "Trainer"]


class Net(nnx.Module):
    """``[conv -> batch norm -> ReLU (-> max pool)] x 4 -> global average pool -> linear``."""

    def __init__(self, spec: ConvNet, *, rngs: nnx.Rngs, order: str = "kernel"):
        convs = []
        for k in range(len(CHANNELS) - 1):
            shape = spec.conv_shape(k)
            c_in, c_out = CHANNELS[k], CHANNELS[k + 1]
            if shape is None:
                convs.append(nnx.Conv(c_in, c_out, (KERNEL, KERNEL), padding=KERNEL // 2, use_bias=False, rngs=rngs))
            else:
                convs.append(tt_jax.TTConv2d(shape.in_modes, shape.out_modes, KERNEL, shape.ranks,
                                             padding=KERNEL // 2, use_bias=False, order=order, rngs=rngs))
        self.convs = nnx.List(convs)
        self.norms = nnx.List([nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=rngs) for c in CHANNELS[1:]])
        classifier = spec.classifier_shape()
        self.classifier = (nnx.Linear(CHANNELS[-1], 10, rngs=rngs) if classifier is None
                           else tt_jax.TTLinear(*CLASSIFIER_MODES, classifier.ranks, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv, norm, pool in zip(self.convs, self.norms, POOL_AFTER):
            x = nnx.relu(norm(conv(x)))
            if pool:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return self.classifier(x.mean(axis=(1, 2)))


def _loss(model: Net, x: jax.Array, y: jax.Array):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), jnp.sum(jnp.argmax(logits, -1) == y)


@nnx.jit
def _train_step(model: Net, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array):
    (loss, correct), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    optimizer.update(model, grads)
    return loss, correct


@nnx.jit
def _correct(model: Net, x: jax.Array, y: jax.Array):
    return jnp.sum(jnp.argmax(model(x), -1) == y)


class Trainer:
    """The network of ``spec`` with its Adam optimizer; batches come as NumPy NHWC arrays."""

    def __init__(self, spec: ConvNet, recipe: Recipe):
        self.model = Net(spec, rngs=nnx.Rngs(recipe.seed))
        tx = optax.inject_hyperparams(optax.adam)(learning_rate=recipe.learning_rate)
        self.optimizer = nnx.Optimizer(self.model, tx, wrt=nnx.Param)

    def param_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(self.model, nnx.Param)))

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> tuple[float, int]:
        """One Adam step at ``learning_rate``: the batch's summed loss and correct count."""
        self.model.train()
        self.optimizer.opt_state.hyperparams["learning_rate"][...] = learning_rate
        loss, correct = _train_step(self.model, self.optimizer, jnp.asarray(x), jnp.asarray(y))
        return float(loss) * len(y), int(correct)

    def correct(self, x: np.ndarray, y: np.ndarray) -> int:
        self.model.eval()
        return int(_correct(self.model, jnp.asarray(x), jnp.asarray(y)))
