"""The fused kernels, compiled on the device, against NumPy's float64 product: forward and input gradient.

    python -m benchmarks.kernel_check --framework jax --layers 1024-1024 25088-4096 --batch 64
    python -m benchmarks.kernel_check --framework torch --interpret   # off a GPU: Triton's interpreter

The CPU tests check the kernels interpreted (``tt_jax/_pallas_test.py``, ``tt_torch/_triton_test.py``); this
checks the code a GPU compiles, on the benchmark's layers, where the interpreters' lenience (block sizes,
layouts) cannot hide a lowering that is wrong. The oracle is :func:`tt_common.contraction.tt_matmul` on NumPy
float64 arrays (core by core: no dense ``W``, so the large layers fit), ``x @ W + b`` and ``g @ W^T``. Each
line gives the largest error over the largest magnitude (float32 products: expect about 1e-6; the line says
FAIL above ``--tol``), and the first call's time (compilation included). A layer the kernel cannot hold says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.layers import LAYERS, SMOKE_LAYERS, LayerConfig, get
from tt_common.contraction import tt_matmul

__all__ = ["main", "relative_error"]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """``max |got - want| / max |want|`` (``max |got|`` if ``want`` is all zeros).

    >>> relative_error(np.array([1.0, 2.1]), np.array([1.0, 2.0]))
    0.05
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.abs(want).max()) or float(np.abs(got).max()) or 1.0
    return round(float(np.abs(got - want).max()) / scale, 12)


def _problem(cfg: LayerConfig, batch: int):
    rng = np.random.default_rng(0)
    cores = [rng.standard_normal(s) / np.sqrt(s[0] * s[1]) for s in cfg.shape.core_shapes]
    x = rng.standard_normal((batch, cfg.shape.in_features))
    bias = rng.standard_normal(cfg.shape.out_features)
    g = rng.standard_normal((batch, cfg.shape.out_features))
    y = tt_matmul(x, cores, cfg.shape) + bias
    swapped = [c.transpose(0, 2, 1, 3) for c in cores]
    from tt_common.shapes import TTMatrixShape

    dx = tt_matmul(g, swapped, TTMatrixShape(cfg.shape.out_modes, cfg.shape.in_modes, cfg.shape.ranks))
    return cores, x, bias, g, y, dx


def _run_jax(cfg: LayerConfig, batch: int, interpret: bool):
    import jax
    import jax.numpy as jnp

    from tt_jax import _pallas

    cores, x, bias, g, y, dx = _problem(cfg, batch)
    args = [jnp.asarray(a, jnp.float32) for a in (x, bias, g)]
    cs = [jnp.asarray(c, jnp.float32) for c in cores]

    def loss(x, cs, b, g):
        out = _pallas.fused_tt_linear(x, cs, b, cfg.shape, precision=jax.lax.Precision.HIGHEST,
                                      interpret=interpret)
        return jnp.sum(out * g), out

    step = jax.jit(jax.grad(loss, argnums=0, has_aux=True))
    t0 = time.perf_counter()
    got_dx, got_y = jax.block_until_ready(step(args[0], cs, args[1], args[2]))
    return time.perf_counter() - t0, np.asarray(got_y), np.asarray(got_dx), y, dx


def _run_torch(cfg: LayerConfig, batch: int, interpret: bool):
    import torch

    from tt_torch import _triton

    device = "cpu" if interpret else "cuda"
    cores, x, bias, g, y, dx = _problem(cfg, batch)
    t = [torch.tensor(a, dtype=torch.float32, device=device) for a in (x, bias, g)]
    cs = [torch.tensor(c, dtype=torch.float32, device=device) for c in cores]
    xin = t[0].requires_grad_(True)
    t0 = time.perf_counter()
    out = _triton.fused_tt_linear(xin, cs, t[1], cfg.shape)
    out.backward(t[2])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out.detach().cpu().numpy(), xin.grad.cpu().numpy(), y, dx


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernel_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=["jax", "torch"], required=True)
    p.add_argument("--layers", nargs="+", default=[c.name for c in (*SMOKE_LAYERS, *LAYERS)],
                   choices=[c.name for c in (*LAYERS, *SMOKE_LAYERS)])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tol", type=float, default=1e-4, help="largest relative error that passes (default 1e-4)")
    p.add_argument("--interpret", action="store_true", help="run the kernels interpreted (no GPU needed)")
    args = p.parse_args(argv)
    if args.framework == "torch" and args.interpret:
        import os

        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    run = _run_jax if args.framework == "jax" else _run_torch
    failed = False
    for name in args.layers:
        cfg = get(name)
        try:
            seconds, y, dx, want_y, want_dx = run(cfg, args.batch, args.interpret)
        except Exception as e:  # noqa: BLE001 - a lowering failure is what this tool reports
            if isinstance(e, ValueError) and str(e).startswith("shape:"):  # the plan's refusal (fused_plan)
                print(f"{args.framework} {name}: not applicable: {e}", flush=True)
                continue
            print(f"{args.framework} {name}: FAIL {type(e).__name__}: {str(e)[:400]}", flush=True)
            failed = True
            continue
        ey, edx = relative_error(y, want_y), relative_error(dx, want_dx)
        bad = max(ey, edx) > args.tol
        failed |= bad
        print(f"{args.framework} {name} B={args.batch}: forward {ey:.2g}, input gradient {edx:.2g}, first call "
              f"{seconds:.2f} s{'  FAIL' if bad else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
