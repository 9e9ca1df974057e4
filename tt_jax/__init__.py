"""Tensor-train layers for JAX / Flax NNX.

>>> from flax import nnx
>>> import tt_jax
>>> layer = tt_jax.TTLinear((4, 8, 8, 4), (4, 4, 4, 4), ranks=4, rngs=nnx.Rngs(0))
>>> layer.shape.num_params
1152
"""

from tt_jax import functional, inference, initializers, transfer
from tt_jax.functional import TTMatrix
from tt_jax.layer import TTCore, TTLinear
from tt_jax.report import compression_report, layer_reports

__all__ = ["TTCore", "TTLinear", "TTMatrix", "compression_report", "functional", "inference", "initializers",
           "layer_reports", "transfer"]
