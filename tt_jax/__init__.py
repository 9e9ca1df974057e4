"""Tensor-train layers for JAX / Flax NNX.

>>> from flax import nnx
>>> import tt_jax
>>> layer = tt_jax.TTLinear((4, 8, 8, 4), (4, 4, 4, 4), ranks=4, rngs=nnx.Rngs(0))
>>> layer.shape.num_params
1152
"""

from tt_jax import functional, inference, initializers, transfer
from tt_jax.conv import TTConv2d
from tt_jax.embedding import TTEmbedding
from tt_jax.functional import TTMatrix
from tt_jax.layer import TTCore, TTLinear
from tt_jax.report import compression_report, layer_reports
from tt_jax.tensorize import PaddedTTLinear, tensorize

__all__ = ["PaddedTTLinear", "TTConv2d", "TTCore", "TTEmbedding", "TTLinear", "TTMatrix", "compression_report",
           "functional", "inference", "initializers", "layer_reports", "tensorize", "transfer"]
