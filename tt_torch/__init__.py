"""Tensor-train layers for PyTorch: the mirror of :mod:`tt_jax` (imports no JAX).

>>> import tt_torch
>>> layer = tt_torch.TTLinear((4, 8, 8, 4), (4, 4, 4, 4), ranks=4)
>>> layer.shape.num_params
1152
"""

from tt_torch import functional, inference, initializers, transfer
from tt_torch.conv import TTConv2d
from tt_torch.embedding import TTEmbedding
from tt_torch.functional import TTMatrix
from tt_torch.layer import TTLinear
from tt_torch.report import compression_report, layer_reports
from tt_torch.tensorize import PaddedTTLinear, tensorize

__all__ = ["PaddedTTLinear", "TTConv2d", "TTEmbedding", "TTLinear", "TTMatrix", "compression_report",
           "functional", "inference", "initializers", "layer_reports", "tensorize", "transfer"]
