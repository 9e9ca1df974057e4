"""A fused Triton kernel of the TT product ``x @ W + b`` for CUDA tensors: every core on a block of rows at once.

Private, and off by default: :func:`tt_torch.functional.tt_linear` takes it with ``kernel="triton"``, and
``kernel="auto"`` only for CUDA tensors where :data:`MEASURED_WINS` records that the benchmark measured it
faster than torch's product (none recorded yet: ``docs/performance.md``, GPU). On a CPU it runs only under
Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is imported): the tests' oracle check.

The plan (split output modes, block of rows) is :func:`tt_common.fused.fused_plan`'s with the real modes
(``pad=False``): the kernel masks its loads, so nothing is padded. A persistent grid of ``programs`` programs
walks the ``(tile p, block of rows i)`` items, ``p`` fastest (the tiles of one block share its rows in cache).
For each item it applies the cores left to right (the first ``split`` sliced at the output index ``p``
spells), each step as a loop of 2-D ``tl.dot`` products ``(rows, c) @ (c, a)`` whose operands are gathered
with pointer arithmetic from the state, so no transpose is ever made. The states live in a scratch buffer of
two slots per program, reused by every item (a few MB in all: it stays in the L2 cache); step 0 reads ``x``,
the last step adds the bias and writes the item's output tile. Blocks are powers of two of at least 16 (what
``tl.dot`` needs), masked to the real sizes.

Gradients (:class:`_Fused`, an ``autograd.Function``): the input's is the same kernel on the transposed TT
(``W^T``), or torch's product where that plan does not fit; the cores' come from autograd of torch's product
(its forward recomputed); the bias's is the sum of the output gradient over the rows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import triton
import triton.language as tl

from tt_common.contraction import tt_matmul
from tt_common.fused import DEFAULT_MAX_BLOCK_ELEMENTS, FusedPlan, fused_plan
from tt_common.shapes import TTMatrixShape

__all__ = ["MEASURED_WINS", "compile_for_cuda", "fused_tt_linear", "interpreted", "use_triton"]

# (layer shape, smallest batch, dtype) where the benchmark (python -m benchmarks.run --device gpu --candidates
# ours triton) measured this kernel's training step faster than torch's product on a GPU. Empty: no GPU run of
# the kernel has been recorded yet, so kernel="auto" keeps torch's product everywhere.
MEASURED_WINS: tuple[tuple[TTMatrixShape, int, torch.dtype], ...] = ()


def interpreted() -> bool:
    """Whether Triton runs its interpreter (``TRITON_INTERPRET=1``): kernels then take CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(kernel: str, shape: TTMatrixShape, batch_size: int, x: torch.Tensor) -> bool:
    """Whether ``tt_linear`` takes the fused kernel: ``"triton"`` forces it, ``"torch"`` never, ``"auto"`` only
    for a CUDA tensor in a case of :data:`MEASURED_WINS`."""
    if kernel != "auto":
        return kernel == "triton"
    return x.is_cuda and any(s == shape and batch_size >= b and d == x.dtype for s, b, d in MEASURED_WINS)


def fused_tt_linear(
    x: torch.Tensor,
    cores: Sequence[torch.Tensor],
    bias: torch.Tensor | None,
    shape: TTMatrixShape,
    *,
    max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS,
    programs: int | None = None,
) -> torch.Tensor:
    """``x @ W + bias`` for ``x`` of shape ``(..., M)`` through the fused kernel: ``(..., N)``.

    ``programs``: the persistent grid (default 4 per multiprocessor on a GPU, 2 interpreted). Raises
    ``ValueError`` where the input row does not fit ``max_block_elements`` (:func:`tt_common.fused.fused_plan`)
    or the tensors can run neither compiled (CUDA) nor interpreted.
    """
    if x.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"x: the Triton kernel computes in float32 or bfloat16, got {x.dtype}")
    if not (x.is_cuda or interpreted()):
        raise ValueError("x: the Triton kernel needs a CUDA tensor, or TRITON_INTERPRET=1 (set before Triton is "
                         "imported) for CPU tensors")
    batch_shape = tuple(x.shape[:-1])
    rows = math.prod(batch_shape)
    fused_plan(shape, max(rows, 1), max_block_elements=max_block_elements, pad=False)  # a bad layer fails here
    settings = (shape, max_block_elements, programs)
    y = _Fused.apply(x.reshape(rows, shape.in_features), bias, settings, *cores)
    return y.reshape(*batch_shape, shape.out_features)


class _Fused(torch.autograd.Function):
    """The kernel's forward, and a backward of the same kernel on ``W^T`` plus autograd of torch's product."""

    @staticmethod
    def forward(ctx, x, bias, settings, *cores):
        shape, max_block_elements, programs = settings
        ctx.settings = settings
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, *cores)
        return _launch(x, cores, bias, shape, max_block_elements, programs)

    @staticmethod
    def backward(ctx, g):
        shape, max_block_elements, programs = ctx.settings
        x, *cores = ctx.saved_tensors
        g = g.contiguous()
        swapped = [c.transpose(1, 2) for c in cores]
        transposed = TTMatrixShape(shape.out_modes, shape.in_modes, shape.ranks)
        dx = None
        if ctx.needs_input_grad[0]:
            try:
                dx = _launch(g, swapped, None, transposed, max_block_elements, programs)
            except ValueError:  # W^T's input row (the output width) does not fit a block: torch's product
                dx = _torch_product(g, swapped, transposed)
        with torch.enable_grad():
            leaves = [c.detach().requires_grad_(True) for c in cores]
            dcores = torch.autograd.grad(_torch_product(x.detach(), leaves, shape), leaves, g)
        dbias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[1] else None
        return (dx, dbias, None, *dcores)


def _torch_product(x: torch.Tensor, cores: Sequence[torch.Tensor], shape: TTMatrixShape) -> torch.Tensor:
    from tt_torch.functional import _matmul, _permute

    return tt_matmul(x, list(cores), shape, permute=_permute, matmul=_matmul)


def _operands(cores: Sequence[torch.Tensor], plan: FusedPlan) -> tuple[torch.Tensor, tuple[int, ...]]:
    """All cores as the right factors ``(c, a)`` of their steps, flattened into one buffer, and each offset.

    A sliced core is the stack over ``j_k`` of ``(r_{k-1} m_k, r_k)``; the others ``(r_{k-1} m_k, n_k r_k)``.
    """
    flat, offsets, at = [], [], 0
    for core, step in zip(cores, plan.steps):
        r0, m, n, r1 = core.shape
        op = core.permute(2, 0, 1, 3).reshape(n, r0 * m, r1) if step.sliced else core.reshape(r0 * m, n * r1)
        flat.append(op.reshape(-1))
        offsets.append(at)
        at += op.numel()
    return torch.cat(flat).contiguous(), tuple(offsets)


def _block(n: int, cap: int = 64) -> int:
    """A power-of-two block of at least 16 (``tl.dot``'s least) and at most ``cap`` covering ``n`` if it can."""
    return max(16, min(cap, 1 << (max(n, 1) - 1).bit_length()))


def _launch(x: torch.Tensor, cores: Sequence[torch.Tensor], bias: torch.Tensor | None, shape: TTMatrixShape,
            max_block_elements: int, programs: int | None) -> torch.Tensor:
    batch = x.shape[0]
    plan = fused_plan(shape, max(batch, 1), max_block_elements=max_block_elements, pad=False)
    x = x.contiguous()
    ops, offsets = _operands([c.to(x.dtype) for c in cores], plan)
    y = torch.empty(batch, shape.out_features, dtype=x.dtype, device=x.device)
    if batch == 0:
        return y
    items = plan.programs_per_block * plan.num_blocks(batch)
    if programs is None:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 1
        programs = 4 * sms if x.is_cuda else 2
    grid = min(items, programs)
    constants = _constants(plan, offsets, has_bias=bias is not None, low=x.dtype == torch.bfloat16,
                           iters=-(-items // grid))
    scratch = torch.empty(grid, 2, constants["SLOT"], dtype=x.dtype, device=x.device)  # rounded as torch's steps
    _kernel[(grid,)](x, ops, bias if bias is not None else y, y, scratch, batch, grid, **constants)
    return y


def _constants(plan: FusedPlan, offsets: tuple[int, ...], *, has_bias: bool, low: bool, iters: int) -> dict:
    """The kernel's compile-time arguments: the plan's sizes, per step as tuples."""
    steps, shape = plan.steps, plan.shape
    return {
        "M": shape.in_features, "N": shape.out_features, "SLOT": plan.block_rows * plan.max_state, "ROWS": plan.block_rows,
        "P": plan.programs_per_block, "TILE": plan.tile, "D": len(steps), "HAS_BIAS": has_bias, "LOW": low, "ITERS": iters,
        "A": tuple(s.a for s in steps), "C": tuple(s.c for s in steps), "OUTER": tuple(s.outer for s in steps),
        "INNER": tuple(s.inner for s in steps), "SLICED": tuple(int(s.sliced) for s in steps),
        "MODE": tuple(plan.out_modes[s.core] for s in steps),
        "STRIDE": tuple(math.prod(plan.out_modes[s.core + 1 : plan.split]) for s in steps),
        "OFFSET": offsets, "BA": tuple(_block(s.a) for s in steps), "BC": tuple(_block(s.c) for s in steps),
        "BR": tuple(_block(plan.block_rows * s.outer * s.inner) for s in steps),
    }


def compile_for_cuda(shape: TTMatrixShape, batch_size: int, *, arch: int = 90, bfloat16: bool = False,
                     max_block_elements: int = DEFAULT_MAX_BLOCK_ELEMENTS) -> dict[str, Any]:
    """Compiles the kernel for a CUDA GPU of compute capability ``arch`` (default 90: Hopper) without one, as
    the GPU would on its first call: what Triton's interpreter cannot check (``tl.dot``'s block sizes, the
    tuple arguments, registers). Returns the compiled kernel's metadata (``shared`` bytes, ``num_warps``...).
    Needs Triton compiling, not interpreting (``TRITON_INTERPRET`` unset when Triton was imported).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    plan = fused_plan(shape, max(batch_size, 1), max_block_elements=max_block_elements, pad=False)
    offsets = tuple(0 for _ in plan.steps)  # values, not the layout, of the offsets matter to the code
    constants = _constants(plan, offsets, has_bias=True, low=bfloat16, iters=7)
    pointer = "*bf16" if bfloat16 else "*fp32"
    signature = {name: pointer for name in ("x_ptr", "ops_ptr", "bias_ptr", "y_ptr", "scratch_ptr")}
    signature.update({"batch": "i32", "programs": "i32", **{name: "constexpr" for name in constants}})
    compiled = triton.compile(ASTSource(fn=_kernel, signature=signature, constexprs=constants),
                              target=GPUTarget("cuda", arch, 32))
    return dict(compiled.metadata._asdict()) if hasattr(compiled.metadata, "_asdict") else vars(compiled.metadata)


@triton.jit
def _kernel(x_ptr, ops_ptr, bias_ptr, y_ptr, scratch_ptr, batch, programs, ITERS: tl.constexpr,
            M: tl.constexpr, N: tl.constexpr, SLOT: tl.constexpr, ROWS: tl.constexpr, P: tl.constexpr,
            TILE: tl.constexpr, D: tl.constexpr, HAS_BIAS: tl.constexpr, LOW: tl.constexpr,
            A: tl.constexpr, C: tl.constexpr, OUTER: tl.constexpr, INNER: tl.constexpr, SLICED: tl.constexpr,
            MODE: tl.constexpr, STRIDE: tl.constexpr, OFFSET: tl.constexpr,
            BA: tl.constexpr, BC: tl.constexpr, BR: tl.constexpr):
    pid = tl.program_id(0)
    own = scratch_ptr + pid * 2 * SLOT
    for t in range(ITERS):  # item >= items only past the last block of rows: the row masks drop it
        item = pid + t * programs
        p = item % P  # the tile, fastest: the P items of a block of rows run side by side
        row0 = (item // P) * ROWS
        for k in tl.static_range(D):
            # Source and destination of step k, each with its stride between rows of the block.
            if k == 0:
                src = x_ptr + row0 * M
                src_row = M
            else:
                src = own + ((k - 1) % 2) * SLOT
                src_row = OUTER[k] * C[k] * INNER[k]
            if k == D - 1:
                dst = y_ptr + row0 * N + p * TILE
                dst_row = N
            else:
                dst = own + (k % 2) * SLOT
                dst_row = OUTER[k] * A[k] * INNER[k]
            core = ops_ptr + OFFSET[k]
            if SLICED[k]:
                core += ((p // STRIDE[k]) % MODE[k]) * (C[k] * A[k])
            _step(src, dst, core, bias_ptr + p * TILE, row0, batch, src_row, dst_row,
                  ROWS * OUTER[k] * INNER[k], A[k], C[k], OUTER[k], INNER[k], BR[k], BA[k], BC[k],
                  HAS_BIAS and k == D - 1, LOW)
            tl.debug_barrier()  # the next step reads what every thread of this program wrote


@triton.jit
def _step(src, dst, core, bias, row0, batch, src_row, dst_row,
          R: tl.constexpr, A: tl.constexpr, C: tl.constexpr, OUTER: tl.constexpr, INNER: tl.constexpr,
          BR: tl.constexpr, BA: tl.constexpr, BC: tl.constexpr, ADD_BIAS: tl.constexpr, LOW: tl.constexpr):
    """``dst[o, :, i] = core.T @ src[o, :, i]`` over the block's ``R = rows x outer x inner`` pairs ``(o, i)``."""
    for r0 in range(0, R, BR):
        rr = r0 + tl.arange(0, BR)
        o = rr // INNER  # (row of the block, outer index) flattened
        i = rr % INNER
        row = o // OUTER
        live = (rr < R) & (row0 + row < batch)
        src_at = row * src_row + (o % OUTER) * (C * INNER) + i
        dst_at = row * dst_row + (o % OUTER) * (A * INNER) + i
        for a0 in tl.static_range(0, A, BA):
            aa = a0 + tl.arange(0, BA)
            acc = tl.zeros((BR, BA), dtype=tl.float32)
            for c0 in tl.static_range(0, C, BC):
                cc = c0 + tl.arange(0, BC)
                s = tl.load(src + src_at[:, None] + cc[None, :] * INNER,
                            mask=live[:, None] & (cc[None, :] < C), other=0.0)
                w = tl.load(core + cc[:, None] * A + aa[None, :], mask=(cc[:, None] < C) & (aa[None, :] < A),
                            other=0.0)
                if LOW:  # bfloat16 operands on the matrix units, float32 sums
                    acc += tl.dot(s.to(tl.bfloat16), w.to(tl.bfloat16))
                else:  # float32 means float32: no TF32
                    acc += tl.dot(s.to(tl.float32), w.to(tl.float32), input_precision="ieee")
            if ADD_BIAS:
                # The tile's flat index of (o % OUTER, a) with INNER == 1 at the last step.
                acc += tl.load(bias + (o % OUTER)[:, None] * A + aa[None, :],
                               mask=live[:, None] & (aa[None, :] < A), other=0.0).to(tl.float32)
            out = acc.to(dst.dtype.element_ty)
            tl.store(dst + dst_at[:, None] + aa[None, :] * INNER, out, mask=live[:, None] & (aa[None, :] < A))
