"""Flax NNX networks built from :mod:`experiments.presets`.

The parametrized layers live in ``self.layers`` in the order
``[layer_1, batch_norm_1, layer_2, batch_norm_2, ...]`` (``[layer_1, layer_2, ...]`` without batch norm), exactly as in
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
from experiments.recipes import check_inits

__all__ = ["BN_MOMENTUM", "Net", "build"]

# Flax convention: running = m * running + (1 - m) * batch; torch's momentum is 1 - m.
BN_MOMENTUM = 0.9


def _tt_inits(layer: TT, tt_init: str) -> dict:
    """Keywords of the TT layer's init: the default (variance-exact LeCun) or the thesis's per-core init."""
    if tt_init == "lecun":
        return {}
    inits = tt_jax.initializers
    return {"cores_init": inits.thesis_per_core(), "bias_init": inits.thesis_bias(layer.shape)}


def _dense_inits(in_features: int, dense_init: str) -> dict:
    """Keywords of a dense layer's init: nnx.Linear's default (LeCun normal, zero bias) or nn.Linear's."""
    if dense_init == "lecun":
        return {}
    bound = in_features**-0.5  # nn.Linear: kaiming_uniform_(a=sqrt(5)) is U(+-1/sqrt(M)), its bias too

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return {"kernel_init": nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform"), "bias_init": bias_init}


class Net(nnx.Module):
    """``layer -> batch norm -> ReLU [-> dropout]`` blocks (no batch norm if not ``spec.batch_norm``); see
    :mod:`experiments.presets`.

    ``tt_init`` and ``dense_init`` name the initializers (:data:`experiments.recipes.TT_INITS`,
    :data:`experiments.recipes.DENSE_INITS`): ``"lecun"`` is Flax's default, ``"torch"`` ``nn.Linear``'s.
    """

    def __init__(self, spec: Network, *, rngs: nnx.Rngs, tt_init: str = "lecun", dense_init: str = "lecun",
                 param_dtype=jnp.float32):
        self.spec = spec
        layers = []
        for layer in spec.layers:
            if isinstance(layer, TT):
                layers.append(tt_jax.TTLinear(layer.in_modes, layer.out_modes, layer.ranks, param_dtype=param_dtype,
                                              rngs=rngs, **_tt_inits(layer, tt_init)))
            else:
                layers.append(nnx.Linear(layer.in_features, layer.out_features, param_dtype=param_dtype, rngs=rngs,
                                         **_dense_inits(layer.in_features, dense_init)))
            if spec.batch_norm:
                layers.append(nnx_layers.BatchNorm(layer.out_features, momentum=BN_MOMENTUM, param_dtype=param_dtype,
                                                   rngs=rngs))
        self.layers = nnx.List(layers)
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        blocks = len(self.spec.layers)
        step = 2 if self.spec.batch_norm else 1  # [linear, batch norm] per block, or [linear]
        for k in range(blocks):
            x = self.layers[step * k](x)
            if self.spec.batch_norm:
                x = self.layers[step * k + 1](x)
            last = k == blocks - 1
            if not last or self.spec.relu_after_last:
                x = jax.nn.relu(x)
            if not last:
                x = self.dropout(x)
        return x


def build(spec: Network, *, seed: int = 0, tt_init: str = "lecun", dense_init: str = "lecun",
          param_dtype=jnp.float32) -> Net:
    """The network of ``spec`` with parameters drawn from ``seed``."""
    check_inits(tt_init, dense_init)
    return Net(spec, rngs=nnx.Rngs(params=seed, dropout=seed + 1), tt_init=tt_init, dense_init=dense_init,
               param_dtype=param_dtype)
