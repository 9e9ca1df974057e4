"""Tensor-train layers for JAX / Flax NNX.

>>> from flax import nnx
>>> import tt_jax
>>> layer = tt_jax.TTLinear((4, 8, 8, 4), (4, 4, 4, 4), ranks=4, rngs=nnx.Rngs(0))
>>> layer.shape.num_params
1152
"""

from tt_jax import initializers, rows, transfer
from tt_jax.batch_norm import BatchNorm
from tt_jax.dropout import Dropout
from tt_jax.layer import TTCore, TTLinear
from tt_jax.report import compression_report, layer_reports

__all__ = ["BatchNorm", "Dropout", "TTCore", "TTLinear", "compression_report", "initializers", "layer_reports", "rows", "transfer"]
