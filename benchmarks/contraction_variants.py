"""Rough timings of other ways to contract the TT product, for proposals to ``tt_common``.

Not part of the benchmark table: ``python -m benchmarks.contraction_variants
[--framework jax|torch] [--batch 100] [--layers ...]`` prints, per layer, the time of
the forward pass and of the training step of each variant, relative to
``tt_common.tt_matmul`` (the current contraction). Every variant is checked
against ``tt_matmul`` first.

Variants (all forward functions ``f(x, cores) -> y``, autodiff for the backward):

- ``current``: ``tt_common.tt_matmul`` core by core. Since commit b138c86 it
  is the ``bmm`` form below (before, each step was one 2-D matmul and a 2-D
  transpose that rotated the state so that the next core's modes came first).
- ``bmm``: no transposes at all (the prototype of today's ``tt_matmul``). The state keeps the batch first and the
  modes in their natural order, ``(L, K, R)`` with ``K`` the axes the core
  contracts (``r_{k-1} m_k`` left to right, ``m_k r_k`` right to left), ``L``
  the axes before them (batch and the output modes done so far) and ``R`` the
  axes after. Each step is ``out[l] = C @ S[l]``: one batched matmul with the
  core as a shared left factor, and the output is already in the next step's
  layout. When ``R == 1`` it is a plain ``(L, K) @ (K, a)`` matmul.
- ``bmm-merged``: ``bmm`` after merging runs of adjacent cores into one core
  (``(r, m_k m_{k+1}, n_k n_{k+1}, r')``, a product of two small cores whose
  cost does not depend on the batch). Fewer steps means fewer passes over the
  large intermediate states; each pass does more FLOPs per byte. The grouping
  is chosen by :func:`plan_groups` (a cost model: FLOPs at the matmul rate +
  state bytes at the bandwidth + a per-step overhead), or given with
  ``--groups``.
- ``current-merged``: ``tt_matmul`` itself on the merged cores.
- ``bmm-merged-vjp`` (torch only): ``bmm-merged`` with a hand-written backward of each
  step (see :func:`_torch_bmm_step`).
- ``einsum-steps`` (JAX only): ``bmm`` with every step written as
  ``jnp.einsum("ak,lkr->lar")``, leaving the layout to XLA.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from benchmarks.layers import LAYERS, LayerConfig, get
from tt_common.contraction import (
    _core_matrix,
    _groupings,
    _state_elements,
    _step_sizes,
    choose_direction,
    contraction_flops,
    merged_shape,
    tt_matmul,
)
from tt_common.shapes import TTMatrixShape

# ---------------------------------------------------------------- framework-neutral steps


def tt_bmm(x, cores, shape: TTMatrixShape, direction: str, *, permute, bmm_step):
    """The ``bmm`` variant; ``bmm_step(C, S)`` computes ``out[l] = C @ S[l]`` for ``S`` of shape (L, K, R)."""
    batch = x.shape[0]
    state = x
    for k, a, kk, left, right in _step_sizes(shape, direction):
        c = _core_matrix(cores[k], direction, permute)
        if right == 1:
            state = state.reshape(batch * left, kk) @ c.T
        else:
            state = bmm_step(c, state.reshape(batch * left, kk, right))
    return state.reshape(batch, shape.out_features)


def merge_cores(cores, groups, *, einsum):
    """Merges runs of adjacent cores: ``groups`` are the run lengths, e.g. (2, 3) for d = 5."""
    out, i = [], 0
    for g in groups:
        core = cores[i]
        for other in cores[i + 1 : i + g]:
            r0, m0, n0, _ = core.shape
            _, m1, n1, r2 = other.shape
            core = einsum("aijb,bklc->aikjlc", core, other).reshape(r0, m0 * m1, n0 * n1, r2)
        out.append(core)
        i += g
    return out


def step_cost(shape: TTMatrixShape, batch: int, *, gflops: float, gbps: float, overhead_s: float):
    """Cost model of the best direction of ``shape``: FLOPs / matmul rate + state bytes / bandwidth + overhead/step."""
    best = None
    for direction in ("ltr", "rtl"):
        flops = sum(contraction_flops(shape, batch, direction))
        sizes = _state_elements(shape, batch, direction)
        traffic = 4 * sum(a + b for a, b in zip(sizes, sizes[1:]))
        t = flops / (gflops * 1e9) + traffic / (gbps * 1e9) + overhead_s * shape.d
        if best is None or t < best[0]:
            best = (t, direction, flops, traffic)
    return best


def plan_groups(shape: TTMatrixShape, batch: int, *, gflops=100.0, gbps=10.0, overhead_s=20e-6, max_params=2**16):
    """The grouping of adjacent cores (and direction) of least modelled cost; merged cores stay small."""
    best = None
    for groups in _groupings(shape.d):
        ms = merged_shape(shape, groups)
        if max(math.prod(s) for s in ms.core_shapes) > max_params:
            continue
        t, direction, flops, traffic = step_cost(ms, batch, gflops=gflops, gbps=gbps, overhead_s=overhead_s)
        if best is None or t < best[0]:
            best = (t, groups, direction, flops, traffic)
    return best


# ---------------------------------------------------------------- frameworks


def jax_variants(cfg: LayerConfig, batch: int, groups):
    import jax
    import jax.numpy as jnp

    from benchmarks.candidates_jax import training_step

    shape = cfg.shape
    rng = np.random.default_rng(0)
    cores = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 0.5) for s in shape.core_shapes]
    x = jnp.asarray(rng.standard_normal((batch, shape.in_features), dtype=np.float32))
    g = jnp.asarray(rng.standard_normal((batch, shape.out_features), dtype=np.float32))
    direction = choose_direction(shape)
    bmm = lambda c, s: jnp.matmul(c, s)  # noqa: E731  (broadcast: L batches of (a, K) @ (K, R))
    es = lambda c, s: jnp.einsum("ak,lkr->lar", c, s)  # noqa: E731
    ms = merged_shape(shape, groups)
    md = choose_direction(ms)

    fns = {
        "current": lambda x, cs: tt_matmul(x, cs, shape, direction, permute=jnp.transpose),
        "bmm": lambda x, cs: tt_bmm(x, cs, shape, direction, permute=jnp.transpose, bmm_step=bmm),
        "einsum-steps": lambda x, cs: tt_bmm(x, cs, shape, direction, permute=jnp.transpose, bmm_step=es),
        "bmm-merged": lambda x, cs: tt_bmm(
            x, merge_cores(cs, groups, einsum=jnp.einsum), ms, md, permute=jnp.transpose, bmm_step=bmm
        ),
        "current-merged": lambda x, cs: tt_matmul(
            x, merge_cores(cs, groups, einsum=jnp.einsum), ms, md, permute=jnp.transpose
        ),
    }
    ref = jax.jit(fns["current"])(x, cores)
    out = {}
    for name, f in fns.items():
        fwd = jax.jit(f)
        err = float(jnp.max(jnp.abs(fwd(x, cores) - ref)) / jnp.max(jnp.abs(ref)))
        assert err < 1e-4, (name, err)

        step = jax.jit(training_step(f))
        out[name] = (
            _time(lambda: fwd(x, cores).block_until_ready()),
            _time(lambda: jax.block_until_ready(step(x, cores, g))),
        )
    return out


def _torch_bmm_step():
    """``out[l] = C @ S[l]`` with a hand-written backward: the gradient of the shared ``C`` is one
    contraction over (l, r) instead of autograd's per-``l`` products summed afterwards (an (L, a, K)
    intermediate)."""
    import torch

    class BmmStep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, c, s):
            ctx.save_for_backward(c, s)
            return torch.matmul(c, s)

        @staticmethod
        def backward(ctx, dout):
            c, s = ctx.saved_tensors
            dc = ds = None
            if ctx.needs_input_grad[0]:
                dc = torch.einsum("lar,lkr->ak", dout, s)
            if ctx.needs_input_grad[1]:
                ds = torch.matmul(c.T, dout)
            return dc, ds

    return BmmStep.apply


def torch_variants(cfg: LayerConfig, batch: int, groups):
    import torch

    shape = cfg.shape
    gen = torch.Generator().manual_seed(0)
    cores = [(torch.randn(s, generator=gen) * 0.5).requires_grad_(True) for s in shape.core_shapes]
    x = torch.randn(batch, shape.in_features, generator=gen).requires_grad_(True)
    g = torch.randn(batch, shape.out_features, generator=gen)
    direction = choose_direction(shape)
    perm = lambda t, axes: t.permute(*axes)  # noqa: E731
    ms = merged_shape(shape, groups)
    md = choose_direction(ms)
    fns = {
        "current": lambda x, cs: tt_matmul(x, cs, shape, direction, permute=perm),
        "bmm": lambda x, cs: tt_bmm(x, cs, shape, direction, permute=perm, bmm_step=torch.matmul),
        "bmm-merged": lambda x, cs: tt_bmm(
            x, merge_cores(cs, groups, einsum=torch.einsum), ms, md, permute=perm, bmm_step=torch.matmul
        ),
        "current-merged": lambda x, cs: tt_matmul(x, merge_cores(cs, groups, einsum=torch.einsum), ms, md, permute=perm),
        "bmm-merged-vjp": lambda x, cs: tt_bmm(
            x, merge_cores(cs, groups, einsum=torch.einsum), ms, md, permute=perm, bmm_step=_torch_bmm_step()
        ),
    }
    with torch.no_grad():
        ref = fns["current"](x, cores)
    out = {}
    for name, f in fns.items():
        with torch.no_grad():
            err = float((f(x, cores) - ref).abs().max() / ref.abs().max())
        assert err < 1e-4, (name, err)

        def fwd(f=f):
            with torch.no_grad():
                f(x, cores)

        def step(f=f):
            for t in (x, *cores):
                t.grad = None
            f(x, cores).backward(g)

        out[name] = (_time(fwd), _time(step))
    return out


def _time(fn, budget_s=1.0, repeats=15):
    fn()
    fn()
    ts = []
    while len(ts) < 3 or (sum(ts) < budget_s and len(ts) < repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.contraction_variants")
    p.add_argument("--framework", choices=["jax", "torch"], default="jax")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--layers", nargs="+", default=[c.name for c in LAYERS])
    p.add_argument("--groups", default=None, help="core grouping for bmm-merged, e.g. 2,3 (default: plan_groups)")
    p.add_argument("--cpus", type=int, default=None)
    p.add_argument("--gflops", type=float, default=100.0, help="matmul rate of the cost model")
    p.add_argument("--gbps", type=float, default=10.0, help="bandwidth of the cost model")
    args = p.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    if args.framework == "jax":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    print(f"{args.framework}, batch {args.batch}, {len(os.sched_getaffinity(0))} CPUs, load {os.getloadavg()}")
    print("layer | groups (dir) | variant: fwd ms, fwd+bwd ms (x vs current)")
    for name in args.layers:
        cfg = get(name)
        if args.groups:
            groups = tuple(int(v) for v in args.groups.split(","))
        else:
            groups = plan_groups(cfg.shape, args.batch, gflops=args.gflops, gbps=args.gbps)[1]
        run = jax_variants if args.framework == "jax" else torch_variants
        res = run(cfg, args.batch, groups)
        base = res["current"]
        cells = [
            f"{v}: {1e3 * f:.3g}, {1e3 * s:.3g} ({base[0] / f:.2f}x, {base[1] / s:.2f}x)" for v, (f, s) in res.items()
        ]
        ms = merged_shape(cfg.shape, groups)
        print(f"{name} | {groups} ({choose_direction(ms)}) | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
