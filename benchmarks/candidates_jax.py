"""JAX candidates: our ``tt_jax.TTLinear`` (XLA, and its fused Pallas kernel), the dense layer and the single
einsum, all jitted, in the run's dtype (:func:`set_dtype`).

Every candidate is a pure function ``apply(params, x)``; the forward callable is
``jit(apply)`` and the training step is ``jit`` of ``jax.vjp`` with a fixed
random cotangent (gradients for the parameters and the input). Memory comes
from XLA's own accounting of the compiled training step
(``compiled.memory_analysis()``: temporaries + outputs) and from
``jax.ad_checkpoint.saved_residuals`` (what autodiff keeps for the backward
pass).

The single einsum is ``jnp.einsum(eq, x, *cores)`` with JAX's default
``optimize="auto"``: opt_einsum picks a pairwise order (a greedy/optimal search
on FLOPs), each pair becomes one ``dot_general`` and XLA picks the layouts.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.candidate import Built, Candidate, MemoryReport, Skip, einsum_equation, einsum_path
from benchmarks.layers import LayerConfig

__all__ = ["DTYPE", "candidates", "copy_gbps", "device_name", "matmul_gflops", "set_dtype", "training_step",
           "versions"]

# The dtype of every array of this process's run (one process per framework and dtype): set_dtype.
DTYPE = "float32"


def set_dtype(name: str) -> None:
    """Makes ``name`` (``"float32"``, ``"bfloat16"``) the dtype of the parameters, inputs and cotangents."""
    global DTYPE
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {name!r}")
    DTYPE = name


def versions() -> dict[str, str]:
    import jaxlib

    try:
        import flax

        flax_version = flax.__version__
    except ImportError as e:
        flax_version = f"not importable ({e})"
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax_version,
        "jax devices": ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices()),
    }


def _device():
    return jax.devices()[0]


def _normal(seed: int, shape, scale: float = 1.0) -> jax.Array:
    """Random values in the run's dtype (:data:`DTYPE`), uniform with unit variance (drawn in float32, cheaper
    than normal ones: the 784 -> 262144 layer at batch 1000 needs 1 GB of cotangent); the values do not change the
    timings."""
    rng = np.random.default_rng(seed)
    a = rng.random(shape, dtype=np.float32)
    a -= 0.5
    a *= np.float32(scale * math.sqrt(12.0))
    return jax.device_put(a, _device()).astype(DTYPE)


def training_step(f):
    """``step(*args, cotangent) -> (f(*args), gradients of <f(*args), cotangent> to every arg)``: what a layer does in
    a training step, the benchmark's and the probes' one definition of it.

    The output is returned too, as torch's ``layer(x).backward(g)`` computes it and a network needs it: a step
    that returned only the gradients would let XLA skip the layer's last product, whose result they do not need
    (``784-262144`` at batch 100: 40 instead of 130 ms; ``docs/performance.md``, Findings).

    >>> y, (dx,) = training_step(lambda x: 3.0 * x)(jnp.ones(2), jnp.ones(2))
    >>> y.tolist(), dx.tolist()
    ([3.0, 3.0], [3.0, 3.0])
    """

    def step(*args):
        *inputs, cotangent = args
        y, pullback = jax.vjp(f, *inputs)
        return y, pullback(cotangent)

    return step


_CACHE: dict = {}


def _cached(key, make):
    """The last value made under ``key``'s kind: a layer's dense weights are drawn once for all batches."""
    kind = key[0]
    if _CACHE.get(kind, (None,))[0] != key:
        _CACHE.pop(kind, None)
        _CACHE[kind] = (key, make())
    return _CACHE[kind][1]


def _build(apply, params, cfg: LayerConfig, batch: int, compiler_options: dict | None = None) -> Built:
    # Shared by the candidates of one (layer, batch): at batch 1000 these are up to 1 GB each.
    x = _cached(("x", cfg.name, batch, DTYPE), lambda: _normal(1, (batch, cfg.shape.in_features)))
    g = _cached(("g", cfg.name, batch, DTYPE), lambda: _normal(2, (batch, cfg.shape.out_features)))

    # Compiled ahead of time: the timed calls (and the warm-up) only execute.
    # ``compiler_options``: XLA debug options for these two compilations only (the XLA_FLAGS names without
    # ``--``), e.g. ``{"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}``.
    fwd = jax.jit(apply).lower(params, x).compile(compiler_options)

    t0 = time.perf_counter()
    step_compiled = jax.jit(training_step(apply)).lower(params, x, g).compile(compiler_options)
    compile_s = time.perf_counter() - t0

    def run_forward():
        return fwd(params, x).block_until_ready()

    def run_step():
        return jax.block_until_ready(step_compiled(params, x, g))

    def memory() -> MemoryReport:
        from jax._src.ad_checkpoint import saved_residuals

        saved = sum(
            math.prod(aval.shape) * aval.dtype.itemsize
            for aval, why in saved_residuals(apply, params, x)
            if not why.startswith("from the argument")
        )
        analysis = step_compiled.memory_analysis()
        peak = None
        if analysis is not None:
            peak = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
        return MemoryReport(saved, peak, "XLA memory_analysis: temp + output of the jitted step")

    return Built(run_forward, run_step, memory, step_compile_s=compile_s)


def build_ours(cfg: LayerConfig, batch: int, device: str, *, compiler_options: dict | None = None,
               kernel: str = "xla", interpret: bool = False) -> Built:
    """Our ``TTLinear``: XLA's core-by-core product (``kernel="xla"``), or the fused Pallas kernel
    (``"pallas"``: a GPU, or Pallas's interpreter where ``interpret``, which times nothing useful)."""
    from flax import nnx

    import tt_jax

    if kernel == "pallas":
        _check_kernel_runs(cfg, batch, device, interpret)
    layer = tt_jax.TTLinear(cfg.in_modes, cfg.out_modes, cfg.rank, param_dtype=DTYPE, kernel=kernel,
                            rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    params = jax.device_put(params, _device())

    def apply(params, x):
        return nnx.merge(graphdef, params)(x)

    built = _build(apply, params, cfg, batch, compiler_options)
    if kernel == "pallas":
        from tt_common.fused import fused_plan

        plan = fused_plan(cfg.shape, batch)
        built.notes.append(f"batch {batch}: fused plan: {plan.split} output modes split ({plan.programs_per_block} "
                           f"tiles of {plan.tile}), {plan.block_rows} rows per block, padded modes "
                           f"{plan.in_modes} -> {plan.out_modes}" + (" (interpreted)" if device == "cpu" else ""))
    else:
        built.notes.append(f"direction {layer.direction}, merged runs of cores {layer.plan(batch)[0]}")
    return built


def _check_kernel_runs(cfg: LayerConfig, batch: int, device: str, interpret: bool) -> None:
    """Raises :class:`Skip` where the fused kernel cannot run: off a GPU unless interpreted, or a layer whose
    input row does not fit a block (:func:`tt_common.fused.fused_plan`)."""
    from tt_common.fused import fused_plan

    if device != "gpu" and not interpret:
        raise Skip("no GPU: the fused kernel runs only interpreted on a CPU (--interpret-kernels)")
    try:
        fused_plan(cfg.shape, batch)
    except ValueError as e:
        raise Skip(f"fused kernel not applicable: {e}") from e


def build_dense(cfg: LayerConfig, batch: int, device: str, *, max_bytes: float) -> Built:
    m, n = cfg.shape.in_features, cfg.shape.out_features
    need = 2 * cfg.dense_bytes(jnp.dtype(DTYPE).itemsize)  # weight + its gradient
    if need > max_bytes:
        raise Skip(f"dense weight + grad {need / 2**30:.1f} GiB > budget {max_bytes / 2**30:.1f} GiB")
    params = _cached(("dense", cfg.name, DTYPE),
                     lambda: {"w": _normal(3, (m, n), 1 / math.sqrt(m)), "b": jnp.zeros((n,), DTYPE)})

    def apply(params, x):
        return x @ params["w"] + params["b"]

    return _build(apply, params, cfg, batch)


def build_einsum(cfg: LayerConfig, batch: int, device: str) -> Built:
    shape = cfg.shape
    eq = einsum_equation(cfg)
    cores = [_normal(10 + k, s, 0.5) for k, s in enumerate(shape.core_shapes)]
    params = {"cores": cores, "b": jnp.zeros((shape.out_features,), DTYPE)}

    def apply(params, x):
        xt = x.reshape(x.shape[0], *shape.in_modes)
        y = jnp.einsum(eq, xt, *params["cores"])
        return y.reshape(x.shape[0], shape.out_features) + params["b"]

    built = _build(apply, params, cfg, batch)
    path, flops = einsum_path(cfg, batch)
    built.notes.append(f"batch {batch}: jax einsum path: {path} ({flops:.3g} opt_einsum FLOPs)")
    return built


def matmul_gflops(n: int, *, repeats: int = 10) -> float:
    """The machine's dense matmul rate in the run's dtype through JAX: best of ``repeats`` n x n x n products."""
    from benchmarks.timing import measure

    a = _normal(100, (n, n))
    b = _normal(101, (n, n))
    f = jax.jit(jnp.matmul)
    t = measure(lambda: f(a, b).block_until_ready(), warmup=2, repeats=repeats, min_repeats=repeats)
    return 2 * n**3 / t.min_s / 1e9


def copy_gbps(nbytes: int = 256 * 2**20) -> float:
    """Streaming bandwidth through JAX: a jitted ``x + 1`` (a new output, as layers make), read + write bytes/s."""
    from benchmarks.timing import measure

    x = jax.device_put(jnp.zeros(nbytes // jnp.dtype(DTYPE).itemsize, DTYPE), _device())
    f = jax.jit(lambda a: a + 1.0)
    t = measure(lambda: f(x).block_until_ready(), warmup=2, repeats=10, min_repeats=10)
    return 2 * nbytes / t.min_s / 1e9


def candidates(dense_max_bytes: float, *, interpret_kernels: bool = False) -> list[Candidate]:
    """Ours (XLA), the fused Pallas kernel, the dense layer and the single einsum."""
    return [
        Candidate("jax", "ours", "JAX ours", "tt", build_ours),
        Candidate("jax", "pallas", "JAX Pallas fused", "tt",
                  lambda c, b, d: build_ours(c, b, d, kernel="pallas", interpret=interpret_kernels)),
        Candidate("jax", "dense", "JAX dense", "dense", lambda c, b, d: build_dense(c, b, d, max_bytes=dense_max_bytes)),
        Candidate("jax", "einsum", "JAX einsum", "tt", build_einsum),
    ]


def device_name() -> str:
    """The device's name as JAX reports it (``device_kind``, e.g. ``NVIDIA H200``)."""
    return _device().device_kind
