"""Probe (not part of the benchmark run): the TT chain with the batch as the last index of the state.

``tt_common.contraction`` keeps the batch in front of the state, ``(B outer, c, inner)``, so a broadcast step is
``B * outer`` small products. With the batch last, ``(outer, c, inner B)`` after one transpose of the input (and
one of the output), every step is ``outer`` products ``B`` times wider, and the first left-to-right step is one
plain matrix product. Times the JAX forward and forward+backward of both layouts, in both directions, each with
the library's merge for that direction, interleaved (``benchmarks.timing.interleaved``), and prints the relative
error against the first candidate. Run from the repository root on a quiet machine
(``benchmarks/proposals/README.md`` section 14)::

    python -m benchmarks.proposals.batch_last_probe 32768-8192,25088-4096 100 5

Arguments: comma-separated layer names of ``benchmarks.layers``, the batch size, the rounds. For the rows with
freed memory retained, set ``GLIBC_TUNABLES`` as ``experiments.memory.GLIBC_TUNABLES`` gives it.
"""
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import tt_jax
from benchmarks import layers, timing
from tt_common import contraction as C
from tt_jax import layer as L


def chain(x, cores, shape, groups, direction, batch_last):
    """``x @ W`` with the library's steps: the batch first (``tt_matmul`` itself) or last in the state."""
    mm = L._matmul
    if not batch_last:
        return C.tt_matmul(x, cores, shape, direction, permute=jnp.transpose, matmul=mm, groups=groups)
    B = x.shape[0]
    if len(groups) < shape.d:
        cores = C.merge_cores(cores, groups, permute=jnp.transpose, matmul=mm)
        shape = C.merged_shape(shape, groups)
    state = x.T
    for k, _, _, outer, inner in C._step_sizes(shape, direction):
        state = C._step(C._core_matrix(cores[k], direction, jnp.transpose), state, outer, inner * B, mm)
    return state.reshape(shape.out_features, B).T


def main() -> None:
    names = sys.argv[1].split(",")
    B = int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    for name in names:
        cfg = layers.get(name)
        layer = tt_jax.TTLinear(cfg.in_modes, cfg.out_modes, cfg.rank, rngs=nnx.Rngs(0))
        shape = layer.shape
        cores = [c[...] for c in layer.cores]
        plan_groups, plan_dir = layer.plan(B)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((B, shape.in_features), dtype=np.float32))
        g = jnp.asarray(np.random.default_rng(1).standard_normal((B, shape.out_features), dtype=np.float32))
        candidates = [(direction, C.layer_plan(shape, B, direction, product_flops=L._product_flops())[0], bl)
                      for bl in (False, True) for direction in ("ltr", "rtl")]
        ref = None
        calls, errors = {}, {}
        for key in candidates:
            direction, groups, bl = key
            f = jax.jit(functools.partial(chain, shape=shape, groups=groups, direction=direction, batch_last=bl))

            def loss(x, cs, f=f):
                return jnp.vdot(f(x, cs), g)

            gr = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # the value needs the output: computed
            y = f(x, cores)
            if ref is None:
                ref = np.asarray(y)
            errors[key] = float(np.max(np.abs(np.asarray(y) - ref)) / np.max(np.abs(ref)))
            calls[f"{key} fwd"] = lambda f=f: jax.block_until_ready(f(x, cores))
            calls[f"{key} fwd+bwd"] = lambda gr=gr: jax.block_until_ready(gr(x, cores))
        times = timing.interleaved(calls, rounds)
        print(f"{name} B={B} library plan {plan_groups} {plan_dir}")
        for key in candidates:
            direction, groups, bl = key
            (fwd_median, fwd_min), (step_median, step_min) = times[f"{key} fwd"], times[f"{key} fwd+bwd"]
            print(f"  {direction} {str(groups):12s} batch_last={bl!s:5s} fwd {fwd_median:8.2f} / {fwd_min:8.2f}"
                  f"  fwd+bwd {step_median:8.2f} / {step_min:8.2f}  relerr {errors[key]:.1e}")


if __name__ == "__main__":
    main()
