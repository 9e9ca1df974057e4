"""A tiny network written twice, in Flax NNX and in PyTorch, with the same layer paths.

TT -> batch norm -> ReLU -> dropout -> dense -> ReLU -> dropout -> TT head, the kinds of
layers of the experiment networks. Both keep the layers in ``self.layers`` so the
transfer keys agree (``layers.0.cores.0``, ``layers.1.scale``, ...), and
:func:`numpy_forward` is the float64 reference of the network in eval mode, read
from the transfer format.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn

import tt_jax
import tt_torch
from parity_tests.helpers import batch_norm_eval
from experiments.conventions import torch_bn_momentum
from tt_common.reference import tt_matmul_reference

IN_FEATURES, CLASSES = 24, 5
# (in_modes, out_modes, ranks) of the two TT layers; 24 -> 12 and 8 -> 5.
TT_BODY = ((4, 2, 3), (2, 3, 2), 3)
TT_HEAD = ((2, 4), (5, 1), 2)
HIDDEN = (12, 8)


class JaxNet(nnx.Module):
    def __init__(self, *, param_dtype=jnp.float32, dropout: float = 0.3, bn_momentum: float = 0.99, rngs: nnx.Rngs):
        kw = {"param_dtype": param_dtype, "rngs": rngs}
        norm = nnx.BatchNorm(HIDDEN[0], momentum=bn_momentum, **kw)
        # nnx.BatchNorm keeps its running statistics in float32 whatever param_dtype; torch keeps
        # them in the parameter dtype. Match torch, so float64 training parity is float64-tight.
        norm.mean.set_value(norm.mean[...].astype(param_dtype))
        norm.var.set_value(norm.var[...].astype(param_dtype))
        self.layers = nnx.List(
            [
                tt_jax.TTLinear(*TT_BODY, use_bias=False, **kw),  # followed by batch norm: no bias
                norm,
                nnx.Dropout(dropout, rngs=rngs),
                nnx.Linear(*HIDDEN, **kw),
                tt_jax.TTLinear(*TT_HEAD, **kw),
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        body, norm, dropout, dense, head = self.layers
        x = dropout(jax.nn.relu(norm(body(x))))
        x = dropout(jax.nn.relu(dense(x)))
        return head(x)


class TorchNet(nn.Module):
    def __init__(self, *, dtype=torch.float32, dropout: float = 0.3, bn_momentum: float = 0.99):
        """``bn_momentum`` in Flax's convention (mapped with :func:`experiments.conventions.torch_bn_momentum`)."""
        super().__init__()
        self.layers = nn.ModuleList(
            [
                tt_torch.TTLinear(*TT_BODY, bias=False, dtype=dtype),
                nn.BatchNorm1d(HIDDEN[0], momentum=torch_bn_momentum(bn_momentum), dtype=dtype),
                nn.Dropout(dropout),
                nn.Linear(*HIDDEN, dtype=dtype),
                tt_torch.TTLinear(*TT_HEAD, dtype=dtype),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body, norm, dropout, dense, head = self.layers
        x = dropout(torch.relu(norm(body(x))))
        x = dropout(torch.relu(dense(x)))
        return head(x)


def numpy_forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The network in eval mode (running statistics, no dropout), in float64."""

    def cores(path: str) -> list[np.ndarray]:
        return [weights[f"{path}.cores.{k}"] for k in range(sum(key.startswith(f"{path}.cores.") for key in weights))]

    bn = [weights[f"layers.1.{k}"] for k in ("scale", "bias", "mean", "var")]
    h = np.maximum(batch_norm_eval(tt_matmul_reference(x, cores("layers.0")), *bn), 0.0)
    h = np.maximum(h @ weights["layers.3.kernel"].astype(np.float64) + weights["layers.3.bias"], 0.0)
    return tt_matmul_reference(h, cores("layers.4"), weights["layers.4.bias"])


def randomize_batch_norm(weights: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Copies ``weights`` with random batch-norm parameters and running statistics (as after training).

    ``var`` in [0.25, 2] and ``|scale|`` in [0.5, 2] keep ``|scale| / sqrt(var + eps) <= 4``
    (see ``MODEL_FLOAT32_RTOL``); biases are nonzero so that every term is exercised.
    """
    rng = np.random.default_rng(seed)
    out = dict(weights)
    for key, value in weights.items():
        draw = {
            "scale": lambda n: rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 2.0, n),
            "mean": lambda n: rng.normal(0.0, 1.0, n),
            "var": lambda n: rng.uniform(0.25, 2.0, n),
            "bias": lambda n: rng.normal(0.0, 0.5, n),
        }.get(key.rsplit(".", 1)[-1])
        if draw is not None:
            out[key] = draw(value.shape).astype(value.dtype)
    return out
