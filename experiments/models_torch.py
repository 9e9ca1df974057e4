"""PyTorch networks built from :mod:`experiments.presets`: the mirror of :mod:`experiments.models_jax`."""

from __future__ import annotations

import torch
from torch import nn

import tt_torch
from experiments.presets import TT, Network
from experiments.recipes import check_inits
from tt_common.init import TRUNCATED_NORMAL_STD

__all__ = ["BN_MOMENTUM", "Net", "build"]

# torch convention: running = (1 - m) * running + m * batch; equals Flax's momentum 0.9.
BN_MOMENTUM = 0.1


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> None:
    """Flax's default kernel init in place: truncated normal (at 2 std) of variance ``1 / fan_in``."""
    std = (1 / fan_in) ** 0.5 / TRUNCATED_NORMAL_STD
    with torch.no_grad():
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def _lecun_normal_(linear: nn.Linear) -> None:
    """``nnx.Linear``'s init: :func:`lecun_normal_` of its weight, zero bias."""
    lecun_normal_(linear.weight, linear.in_features)
    with torch.no_grad():
        linear.bias.zero_()


def _tt_linear(layer: TT, tt_init: str, factory: dict) -> tt_torch.TTLinear:
    """The TT layer of ``layer`` with the variance-exact LeCun init or the thesis's per-core init."""
    if tt_init == "lecun":
        return tt_torch.TTLinear(layer.in_modes, layer.out_modes, layer.ranks, **factory)
    inits = tt_torch.initializers
    return tt_torch.TTLinear(layer.in_modes, layer.out_modes, layer.ranks, cores_init=inits.thesis_per_core(),
                             bias_init=inits.thesis_bias(layer.shape), **factory)


class Net(nn.Module):
    """``layer -> batch norm -> ReLU [-> dropout]`` blocks (no batch norm if not ``spec.batch_norm``); see
    :mod:`experiments.presets`.

    ``tt_init`` and ``dense_init`` name the initializers (:data:`experiments.recipes.TT_INITS`,
    :data:`experiments.recipes.DENSE_INITS`): ``"lecun"`` is Flax's default (as :mod:`experiments.models_jax`),
    ``"torch"`` keeps ``nn.Linear``'s own.
    """

    def __init__(self, spec: Network, *, tt_init: str = "lecun", dense_init: str = "lecun", device=None,
                 dtype=None):
        super().__init__()
        self.spec = spec
        factory = {"device": device, "dtype": dtype}
        layers: list[nn.Module] = []
        for layer in spec.layers:
            if isinstance(layer, TT):
                layers.append(_tt_linear(layer, tt_init, factory))
            else:
                linear = nn.Linear(layer.in_features, layer.out_features, **factory)
                if dense_init == "lecun":
                    _lecun_normal_(linear)
                layers.append(linear)
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(layer.out_features, momentum=BN_MOMENTUM, **factory))
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = len(self.spec.layers)
        step = 2 if self.spec.batch_norm else 1  # [linear, batch norm] per block, or [linear]
        for k in range(blocks):
            x = self.layers[step * k](x)
            if self.spec.batch_norm:
                x = self.layers[step * k + 1](x)
            last = k == blocks - 1
            if not last or self.spec.relu_after_last:
                x = torch.relu(x)
            if not last:
                x = self.dropout(x)
        return x


def build(spec: Network, *, seed: int = 0, tt_init: str = "lecun", dense_init: str = "lecun", device=None,
          dtype=None) -> Net:
    """The network of ``spec`` with parameters drawn from ``seed``."""
    check_inits(tt_init, dense_init)
    torch.manual_seed(seed)
    return Net(spec, tt_init=tt_init, dense_init=dense_init, device=device, dtype=dtype)
