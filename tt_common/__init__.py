"""Framework-neutral core of tensor-train layers: shapes, factorization, FLOPs, the TT algorithms, init rule,
NumPy reference, transfer naming.

Imports neither JAX nor PyTorch, so that ``tt_torch`` users never load JAX and vice versa.
"""

from tt_common.contraction import (
    Direction,
    InferenceChoice,
    choose_direction,
    choose_inference_form,
    contraction_flops,
    dense_matmul_flops,
    flop_table,
    reconstruction_flops,
    tt_matmul,
)
from tt_common.conv import TTConvShape
from tt_common.embedding import TTEmbeddingShape
from tt_common.factorize import factorizations, factorize, suggest_shape
from tt_common.init import core_std, target_variance
from tt_common.decomposition import TTDecomposition
from tt_common.reference import tt_matmul_reference, tt_round, tt_svd, tt_to_dense
from tt_common.report import LayerReport, dense_layer_report, format_inference_report, format_report, tt_layer_report
from tt_common.tensorize import TensorizedLayer, TensorizeReport
from tt_common.shapes import TTMatrixShape, check_input_features, max_ranks, normalize_ranks, validate_modes

__all__ = [
    "Direction",
    "InferenceChoice",
    "LayerReport",
    "TTConvShape",
    "TTDecomposition",
    "TTEmbeddingShape",
    "TTMatrixShape",
    "TensorizeReport",
    "TensorizedLayer",
    "check_input_features",
    "choose_direction",
    "choose_inference_form",
    "contraction_flops",
    "core_std",
    "dense_layer_report",
    "dense_matmul_flops",
    "factorizations",
    "factorize",
    "flop_table",
    "format_inference_report",
    "format_report",
    "max_ranks",
    "normalize_ranks",
    "reconstruction_flops",
    "suggest_shape",
    "target_variance",
    "tt_layer_report",
    "tt_matmul",
    "tt_matmul_reference",
    "tt_round",
    "tt_svd",
    "tt_to_dense",
    "validate_modes",
]
