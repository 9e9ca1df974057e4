"""The functional core: a TT matrix as a value, and the functions on it (plain PyTorch, no module needed).

The mirror of :mod:`tt_jax.functional`. :class:`TTMatrix` holds the cores and
their :class:`tt_common.TTMatrixShape`.

- :func:`tt_linear` ``(x, cores, bias)``: ``x @ W + b``, what ``TTLinear`` computes
  (``W`` in the kernel layout ``(in, out)``, as the cores store it);
  :func:`matmul` ``(x, tt)``: ``x @ W``. Both contract core by core with the plan of
  :func:`plan` and never build ``W``.
- :func:`to_dense` (``(M, N)``), :func:`from_dense` (TT-SVD of an ``(M, N)`` kernel)
  and :func:`round` (TT rounding): the algorithms of :mod:`tt_common.decomposition`
  on ``torch.linalg``, on the tensors' device and in their dtype (float16 and
  bfloat16 are decomposed in float32).

>>> import torch
>>> from tt_torch import functional as F
>>> kernel = torch.randn(16, 9, generator=torch.Generator().manual_seed(0))
>>> tt = F.from_dense(kernel, (4, 4), (3, 3), max_rank=2)
>>> tt.ranks, F.matmul(torch.ones(5, 16), tt).shape
((1, 2, 1), torch.Size([5, 9]))
>>> F.round(tt, max_rank=1).ranks
(1, 1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from tt_common import decomposition
from tt_common.contraction import Direction, layer_plan, planning_batch, tt_matmul
from tt_common.shapes import TTMatrixShape, TTShapeProperties, check_input_features, check_input_ndim

__all__ = ["TTMatrix", "from_dense", "matmul", "plan", "round", "to_dense", "tt_linear"]


def _permute(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    return tensor.permute(*axes)


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``, with a broadcast ``(1, p, q) @ (B, q, s)`` made one ``bmm`` over an expanded view.

    ``torch.matmul`` folds that case into a ``(B s, q) @ (q, p)`` product whose result
    is a transposed view: a full copy of the (large) output later, about 3x slower.
    """
    if a.dim() == 3 and b.dim() == 3 and a.shape[0] == 1 and b.shape[0] != 1:
        return torch.bmm(a.expand(b.shape[0], -1, -1), b)
    return a @ b


class TTMatrix(TTShapeProperties):
    """An ``M x N`` matrix in TT format: ``cores`` (core ``k`` of shape ``(r_{k-1}, m_k, n_k, r_k)``) and ``shape``.

    The constructor reads the shape off the cores and checks it (against ``shape``, if given).

    >>> import torch
    >>> tt = TTMatrix([torch.ones(1, 2, 3, 2), torch.ones(2, 4, 5, 1)])
    >>> tt
    TTMatrix(in_modes=(2, 4), out_modes=(3, 5), ranks=(1, 2, 1), dtype=torch.float32)
    >>> to_dense(tt).shape
    torch.Size([8, 15])
    """

    cores: tuple[torch.Tensor, ...]
    shape: TTMatrixShape

    def __init__(self, cores: Sequence[torch.Tensor], shape: TTMatrixShape | None = None) -> None:
        cores = tuple(torch.as_tensor(c) for c in cores)
        found = TTMatrixShape.of_cores([tuple(c.shape) for c in cores], shape)
        self.cores, self.shape = cores, found

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the cores (that of the first core)."""
        return self.cores[0].dtype

    def __repr__(self) -> str:
        return (f"TTMatrix(in_modes={self.in_modes}, out_modes={self.out_modes}, ranks={self.ranks}, "
                f"dtype={self.dtype})")


def plan(shape: TTMatrixShape, batch_size: int, direction: Direction | None = None) -> tuple[tuple[int, ...], Direction]:
    """The runs of adjacent cores merged and the direction of the product for a batch of ``batch_size``.

    :func:`tt_common.contraction.layer_plan` (torch's ``bmm`` needs no cost per small product).

    >>> plan(TTMatrixShape.create((2, 7, 8, 8, 7, 4), (4, 4, 4, 4, 4, 4), 4), 100)
    ((2, 1, 1, 2), 'rtl')
    """
    return layer_plan(shape, batch_size, direction)


Kernel = Literal["auto", "torch", "triton"]


def _fused_kernel(kernel: str, shape: TTMatrixShape, batch_size: int, x: torch.Tensor) -> bool:
    """Whether :func:`tt_linear` takes the fused Triton kernel (see its ``kernel`` argument).

    ``"auto"`` answers ``False`` for CPU tensors without importing Triton: the CPU path is torch's product,
    unchanged.
    """
    if kernel not in ("auto", "torch", "triton"):
        raise ValueError(f"kernel must be 'auto', 'torch' or 'triton', got {kernel!r}")
    if kernel != "auto":
        return kernel == "triton"
    if not x.is_cuda:
        return False
    try:
        from tt_torch import _triton
    except ImportError:  # no Triton on this machine: torch's product
        return False
    return _triton.use_triton(kernel, shape, batch_size, x)


def tt_linear(
    x: torch.Tensor,
    cores: Sequence[torch.Tensor],
    bias: torch.Tensor | None = None,
    *,
    shape: TTMatrixShape | None = None,
    direction: Direction | None = None,
    plan_batch_size: int = 1,
    kernel: Kernel = "auto",
) -> torch.Tensor:
    """``x @ W + bias`` for ``x`` of shape ``(..., M)``: ``(..., N)``, contracted core by core.

    ``shape`` (default: read off the cores) is checked against the cores. ``direction`` defaults to the
    cheaper one (:func:`tt_common.choose_direction`). A symbolic batch (``torch.export``'s ``SymInt``) is
    planned for ``plan_batch_size`` (:func:`tt_common.contraction.planning_batch`).

    ``kernel``: ``"torch"`` is the core-by-core product above; ``"triton"`` forces the fused Triton kernel
    (``tt_torch._triton``: all cores on a block of rows in one kernel; CUDA tensors, or CPU tensors under
    ``TRITON_INTERPRET=1``); ``"auto"`` (default) is ``"torch"`` for CPU tensors, and for CUDA tensors
    ``"triton"`` only where the benchmark measured it faster (none yet).

    >>> import torch
    >>> cores = [torch.ones(1, 2, 3, 2), torch.ones(2, 4, 5, 1)]
    >>> tt_linear(torch.ones(7, 8), cores, torch.zeros(15)).shape
    torch.Size([7, 15])
    """
    found = TTMatrixShape.of_cores([tuple(c.shape) for c in cores], shape)
    if bias is not None:
        found.check_bias(tuple(bias.shape))
    batch = planning_batch(x.shape[:-1], plan_batch_size)
    if _fused_kernel(kernel, found, batch, x):
        from tt_torch import _triton  # imported only when taken: Triton stays unloaded on the default path

        check_input_ndim(x.dim(), found.in_features)
        check_input_features(x.shape[-1], found.in_features, found.in_modes)
        return _triton.fused_tt_linear(x, list(cores), bias, found)
    groups, direction = plan(found, batch, direction)
    y = tt_matmul(x, list(cores), found, direction, permute=_permute, matmul=_matmul, groups=groups)
    # bias in y's dtype: under torch.autocast the products run in the low dtype, as nn.Linear's addmm does
    return y if bias is None else y + bias.to(y.dtype)


def matmul(x: torch.Tensor, tt: TTMatrix, **kwargs: Any) -> torch.Tensor:
    """``x @ W`` for the TT matrix ``tt`` and ``x`` of shape ``(..., M)``; keywords as :func:`tt_linear`."""
    return tt_linear(x, tt.cores, None, shape=tt.shape, **kwargs)


def to_dense(tt: TTMatrix) -> torch.Tensor:
    """The dense ``(M, N)`` matrix (kernel layout: ``nn.Linear``'s weight is its transpose), differentiable."""
    first = tt.cores[0]
    eye = torch.eye(tt.in_features, dtype=first.dtype, device=first.device)
    return tt_matmul(eye, list(tt.cores), tt.shape, permute=_permute, matmul=_matmul)


def _to_host(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


OPS = decomposition.LinalgOps(
    svd=lambda m: torch.linalg.svd(m, full_matrices=False),
    qr=torch.linalg.qr,
    permute=_permute,
    to_host=_to_host,
    largest=lambda m: m.gather(0, m.abs().argmax(dim=0, keepdim=True))[0],
)


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 or float64: the dtypes ``torch.linalg``'s decompositions take."""
    return torch.promote_types(dtype, torch.float32)


def from_dense(
    kernel: torch.Tensor | np.ndarray,
    in_modes: Sequence[int],
    out_modes: Sequence[int],
    *,
    max_rank: int | Sequence[int] | None = None,
    rtol: float | None = None,
) -> TTMatrix:
    """The TT-SVD of a dense ``(M, N)`` kernel (layout ``(in, out)``), cores in the kernel's dtype and device.

    ``max_rank`` and/or ``rtol`` truncate (:mod:`tt_common.decomposition`; both ``None``: exact).

    >>> import torch
    >>> kernel = torch.randn(16, 9, dtype=torch.float64)
    >>> tt = from_dense(kernel, (4, 4), (3, 3))
    >>> tt.ranks, tt.dtype, torch.allclose(to_dense(tt), kernel)
    ((1, 12, 1), torch.float64, True)
    """
    kernel = torch.as_tensor(kernel)
    found = decomposition.tt_svd(kernel.to(_working_dtype(kernel.dtype)), in_modes, out_modes,
                                 max_rank=max_rank, rtol=rtol, ops=OPS)
    return TTMatrix([c.to(kernel.dtype) for c in found.cores])


def round(tt: TTMatrix, *, max_rank: int | Sequence[int] | None = None, rtol: float | None = None) -> TTMatrix:  # noqa: A001
    """The TT matrix with ranks lowered by TT rounding (:mod:`tt_common.decomposition`), in ``tt``'s dtype.

    >>> import torch
    >>> round(TTMatrix([torch.ones(1, 2, 3, 2), torch.ones(2, 4, 5, 1)]), rtol=1e-6).ranks
    (1, 1, 1)
    """
    found = decomposition.tt_round([c.to(_working_dtype(tt.dtype)) for c in tt.cores],
                                   max_rank=max_rank, rtol=rtol, ops=OPS)
    return TTMatrix([c.to(tt.dtype) for c in found.cores])
