"""Flax NNX networks built from :mod:`experiments.presets`.

The parametrized layers live in ``self.layers`` in the order
``[layer_1, batch_norm_1, layer_2, batch_norm_2, ...]``, exactly as in
:mod:`experiments.models_torch`, so that ``tt_jax.transfer`` and
``tt_torch.transfer`` give both the same names (``layers.0.cores.0``, ...).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import tt_jax
from experiments import nnx_layers
from experiments.presets import TT, Network

__all__ = ["BN_MOMENTUM", "Net", "build"]

# Flax convention: running = m * running + (1 - m) * batch; torch's momentum is 1 - m.
BN_MOMENTUM = 0.9


class Net(nnx.Module):
    """``layer -> batch norm -> ReLU [-> dropout]`` blocks; see :mod:`experiments.presets`."""

    def __init__(self, spec: Network, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.spec = spec
        layers = []
        for layer in spec.layers:
            if isinstance(layer, TT):
                layers.append(
                    tt_jax.TTLinear(layer.in_modes, layer.out_modes, layer.ranks, param_dtype=param_dtype, rngs=rngs)
                )
            else:
                layers.append(nnx.Linear(layer.in_features, layer.out_features, param_dtype=param_dtype, rngs=rngs))
            layers.append(nnx_layers.BatchNorm(layer.out_features, momentum=BN_MOMENTUM, param_dtype=param_dtype, rngs=rngs))
        self.layers = nnx.List(layers)
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        blocks = len(self.spec.layers)
        for k in range(blocks):
            x = self.layers[2 * k + 1](self.layers[2 * k](x))
            last = k == blocks - 1
            if not last or self.spec.relu_after_last:
                x = jax.nn.relu(x)
            if not last:
                x = self.dropout(x)
        return x


def build(spec: Network, *, seed: int = 0, param_dtype=jnp.float32) -> Net:
    """The network of ``spec`` with parameters drawn from ``seed``."""
    return Net(spec, rngs=nnx.Rngs(params=seed, dropout=seed + 1), param_dtype=param_dtype)
