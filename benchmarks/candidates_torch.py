"""PyTorch candidates: our ``tt_torch.TTLinear`` (eager, ``torch.compile`` and its fused Triton kernel),
``nn.Linear``, the single einsum, TensorLy-Torch's ``FactorizedLinear`` (block-TT) and torchTT's
``LinearLayerTT``, in the run's dtype (:func:`set_dtype`).

Forward: the module under ``torch.no_grad()``. Training step: the input
requires grad, ``y.backward(g)`` with a fixed random cotangent, gradients set to
``None`` first (no accumulation). On a GPU every call ends with
``torch.cuda.synchronize()``.

The single einsum is ``torch.einsum(eq, x, *cores)``; with opt_einsum installed
(it comes with JAX) torch's default ``torch.backends.opt_einsum.strategy ==
"auto"`` picks the pairwise order, each pair then runs as a ``bmm`` after
permutes. TensorLy-Torch's block-TT forward (``tltorch.functional.
factorized_linear.linear_blocktt``) is the same kind of single ``tl.einsum``
over the input and all factors, with factors of shape ``(r, n_k, m_k, r)``.

Memory: ``saved`` sums the distinct storages that autograd's saved-tensor hooks
see during the forward pass (parameters and input excluded); ``peak`` is
``torch.cuda.max_memory_allocated`` above the start on a GPU and, on the CPU,
the running sum of the allocations and frees that ``torch.profiler``
(``profile_memory=True``) records during one step.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import itertools
import os
import sys
from pathlib import Path

import torch

from benchmarks.candidate import Built, Candidate, MemoryReport, Skip, einsum_equation, einsum_path
from benchmarks.layers import LayerConfig

__all__ = ["DTYPE", "candidates", "copy_gbps", "device_name", "matmul_gflops", "set_dtype", "tt_torch_available",
           "versions"]

# The dtype of every tensor of this process's run (one process per framework and dtype): set_dtype.
DTYPE = torch.float32


def set_dtype(name: str) -> None:
    """Makes ``name`` (``"float32"``, ``"bfloat16"``) the dtype of the parameters, inputs and cotangents."""
    global DTYPE
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {name!r}")
    DTYPE = getattr(torch, name)


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "torch threads": f"{torch.get_num_threads()} intra-op"}
    if torch.cuda.is_available():
        out["torch device"] = torch.cuda.get_device_name()
    try:
        import tensorly
        import tltorch

        out["tensorly"] = tensorly.__version__
        out["tensorly-torch"] = tltorch.__version__
    except ImportError:
        out["tensorly-torch"] = "not installed (pip install -e '.[bench]')"
    for name in ("torchtt", "triton"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def tt_torch_available() -> bool:
    root = Path(__file__).resolve().parent.parent
    return (root / "tt_torch" / "layer.py").exists() and importlib.util.find_spec("tt_torch") is not None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _normal(seed: int, shape, device: str, scale: float = 1.0) -> torch.Tensor:
    """Random values in :data:`DTYPE`, uniform with unit variance (cheap to draw; they do not change the timings)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=DTYPE, device=device) - 0.5) * (scale * 12**0.5)


_CACHE: dict = {}


def _cached(key, make):
    """The last value made under ``key``'s kind (one entry per kind)."""
    kind = key[0]
    if _CACHE.get(kind, (None,))[0] != key:
        _CACHE.pop(kind, None)
        _CACHE[kind] = (key, make())
    return _CACHE[kind][1]


def _build(module: torch.nn.Module, cfg: LayerConfig, batch: int, device: str, *, call=None) -> Built:
    """``call`` (default ``module``) is what runs; ``module`` owns the parameters."""
    call = module if call is None else call
    params = list(module.parameters())
    # Shared by the candidates of one (layer, batch): at batch 1000 these are up to 1 GB each.
    x = _cached(("x", cfg.name, batch, device, DTYPE), lambda: _normal(1, (batch, cfg.shape.in_features), device))
    x = x.detach().requires_grad_(True)  # a fresh leaf (same storage) per candidate
    g = _cached(("g", cfg.name, batch, device, DTYPE), lambda: _normal(2, (batch, cfg.shape.out_features), device))

    def run_forward():
        with torch.no_grad():
            y = call(x)
        _sync(device)
        return y

    def run_step():
        for p in params:
            p.grad = None
        x.grad = None
        y = call(x)
        y.backward(g)
        _sync(device)

    def memory() -> MemoryReport:
        exclude = {p.untyped_storage().data_ptr() for p in params} | {x.untyped_storage().data_ptr()}
        seen: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in exclude:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        for p in params:
            p.grad = None
        x.grad = None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = call(x)
        del y
        saved = sum(seen.values())
        x.grad = None
        peak, how = _peak_step_bytes(run_step, device, params)
        return MemoryReport(saved, peak, how)

    return Built(run_forward, run_step, memory)


def _peak_step_bytes(step, device: str, params) -> tuple[int | None, str]:
    for p in params:  # free the previous step's gradients outside the measurement
        p.grad = None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() - start, "torch.cuda.max_memory_allocated above the start"
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        running = list(itertools.accumulate(e.nbytes() for e in events if "CPU" in str(e.device_type())))
    except AttributeError:  # the profiler's private result API moved
        return None, "unavailable"
    return (max(running) if running else 0), "torch.profiler allocation events (running sum, peak)"


@contextlib.contextmanager
def _quiet_stderr():
    """Silences the profiler's C++ start/stop lines (written straight to file descriptor 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def build_ours(cfg: LayerConfig, batch: int, device: str, *, compiled: bool = False, kernel: str = "torch",
               interpret: bool = False) -> Built:
    """Our ``TTLinear``: torch's product (eager, or ``torch.compile``d), or the fused Triton kernel
    (``kernel="triton"``: CUDA, or Triton's interpreter where ``interpret``, which times nothing useful)."""
    if not tt_torch_available():
        raise Skip("tt_torch.TTLinear not written yet")
    import tt_torch

    if kernel == "triton":
        _check_kernel_runs(cfg, batch, device, interpret)
    layer = tt_torch.TTLinear(cfg.in_modes, cfg.out_modes, cfg.rank, device=device, dtype=DTYPE, kernel=kernel)
    call = _compile(layer) if compiled else None
    built = _build(layer, cfg, batch, device, call=call)
    built.first_call_compiles = compiled
    if kernel == "triton":
        from tt_common.fused import fused_plan

        plan = fused_plan(cfg.shape, batch, pad=False)
        built.notes.append(f"batch {batch}: fused plan: {plan.split} output modes split ({plan.programs_per_block} "
                           f"tiles of {plan.tile}), {plan.block_rows} rows per block"
                           + (" (interpreted)" if device == "cpu" else ""))
    else:
        built.notes.append(f"direction {layer.direction}, merged runs of cores {layer.plan(batch)[0]}")
    return built


def _check_kernel_runs(cfg: LayerConfig, batch: int, device: str, interpret: bool) -> None:
    """Raises :class:`Skip` where the Triton kernel cannot run: no Triton, a CPU without the interpreter, or a
    layer whose input row does not fit a block (:func:`tt_common.fused.fused_plan`)."""
    from tt_common.fused import fused_plan

    if importlib.util.find_spec("triton") is None:
        raise Skip("triton not installed")
    if not device.startswith("cuda") and not (interpret and os.environ.get("TRITON_INTERPRET") == "1"):
        raise Skip("no GPU: the Triton kernel runs only interpreted on a CPU (--interpret-kernels)")
    try:
        fused_plan(cfg.shape, batch, pad=False)
    except ValueError as e:
        raise Skip(f"fused kernel not applicable: {e}") from e


def _compile(module):
    # One dynamo cache entry per (layer, batch, grad mode): reset between builds so
    # that the recompile limit never silently falls back to eager.
    torch._dynamo.reset()
    return torch.compile(module, dynamic=False)


_DENSE: dict = {}


def build_dense(cfg: LayerConfig, batch: int, device: str, *, max_bytes: float, compiled: bool = False) -> Built:
    need = 2 * cfg.dense_bytes(DTYPE.itemsize)
    if need > max_bytes:
        raise Skip(f"dense weight + grad {need / 2**30:.1f} GiB > budget {max_bytes / 2**30:.1f} GiB")
    key = (cfg.name, device, DTYPE)
    if _DENSE.get("key") != key:  # drawn once per layer, for all batches
        _DENSE.clear()
        _DENSE["layer"] = torch.nn.Linear(cfg.shape.in_features, cfg.shape.out_features, device=device, dtype=DTYPE)
        _DENSE["key"] = key
    layer = _DENSE["layer"]
    built = _build(layer, cfg, batch, device, call=_compile(layer) if compiled else None)
    built.first_call_compiles = compiled
    return built


class EinsumTT(torch.nn.Module):
    """The thesis's form: one einsum over the input (B, m_1..m_d) and every core."""

    def __init__(self, cfg: LayerConfig, device: str):
        super().__init__()
        self.shape = cfg.shape
        self.eq = einsum_equation(cfg)
        self.cores = torch.nn.ParameterList(
            [torch.nn.Parameter(_normal(10 + k, s, device, 0.5)) for k, s in enumerate(self.shape.core_shapes)]
        )
        self.bias = torch.nn.Parameter(torch.zeros(self.shape.out_features, device=device, dtype=DTYPE))

    def forward(self, x):
        b = x.shape[0]
        y = torch.einsum(self.eq, x.reshape(b, *self.shape.in_modes), *self.cores)
        return y.reshape(b, self.shape.out_features) + self.bias


def build_einsum(cfg: LayerConfig, batch: int, device: str) -> Built:
    built = _build(EinsumTT(cfg, device), cfg, batch, device)
    backend = torch.backends.opt_einsum
    if backend.is_available() and backend.enabled:
        path, flops = einsum_path(cfg, batch, backend.strategy)
        built.notes.append(
            f"batch {batch}: torch einsum path (opt_einsum, strategy {backend.strategy!r}): {path} "
            f"({flops:.3g} opt_einsum FLOPs)"
        )
    else:
        built.notes.append("torch einsum: opt_einsum off, contracts left to right")
    return built


def build_tensorly(cfg: LayerConfig, batch: int, device: str) -> Built:
    try:
        import tltorch
    except ImportError as e:
        raise Skip("tensorly-torch not installed (pip install -e '.[bench]')") from e
    layer = tltorch.FactorizedLinear(
        in_tensorized_features=tuple(cfg.in_modes),
        out_tensorized_features=tuple(cfg.out_modes),
        factorization="blocktt",
        rank=list(cfg.shape.ranks),
        device=device,
        dtype=DTYPE,
    )
    got = tuple(layer.weight.rank)
    if got != cfg.shape.ranks:
        raise Skip(f"TensorLy-Torch chose ranks {got}, not {cfg.shape.ranks}")
    return _build(layer, cfg, batch, device)


def build_torchtt(cfg: LayerConfig, batch: int, device: str) -> Built:
    """torchTT's ``torchtt.nn.LinearLayerTT`` at our ranks (same parameter count): it takes and returns tensorized
    inputs ``(B, m_1..m_d)``, so the call reshapes on both sides (views, no copies)."""
    try:
        import torchtt.nn
    except ImportError as e:
        raise Skip("torchTT not installed (pip install -e '.[bench]')") from e
    module = torchtt.nn.LinearLayerTT(list(cfg.in_modes), list(cfg.out_modes), list(cfg.shape.ranks), dtype=DTYPE)
    module = module.to(device)
    got = sum(p.numel() for p in module.cores)
    if got != cfg.shape.num_params:
        raise Skip(f"torchTT's cores hold {got} parameters, ours {cfg.shape.num_params}")
    modes = tuple(cfg.in_modes)

    def call(x):
        return module(x.reshape(x.shape[0], *modes)).reshape(x.shape[0], cfg.shape.out_features)

    return _build(module, cfg, batch, device, call=call)


def matmul_gflops(n: int, device: str, *, repeats: int = 10) -> float:
    """The machine's dense matmul rate in :data:`DTYPE` through torch: best of ``repeats`` n x n x n products."""
    from benchmarks.timing import measure

    a = _normal(100, (n, n), device)
    b = _normal(101, (n, n), device)

    def run():
        a @ b
        _sync(device)

    t = measure(run, warmup=2, repeats=repeats, min_repeats=repeats)
    return 2 * n**3 / t.min_s / 1e9


def copy_gbps(device: str, nbytes: int = 256 * 2**20) -> float:
    """Streaming bandwidth through torch: ``x + 1`` (a new output, as layers make), read + write bytes/s."""
    from benchmarks.timing import measure

    a = torch.zeros(nbytes // DTYPE.itemsize, dtype=DTYPE, device=device)

    def run():
        a + 1.0
        _sync(device)

    t = measure(run, warmup=2, repeats=10, min_repeats=10)
    return 2 * nbytes / t.min_s / 1e9


def candidates(dense_max_bytes: float, *, compile: bool = True, interpret_kernels: bool = False) -> list[Candidate]:
    """Ours (eager, compiled), the fused Triton kernel, the dense layer, the single einsum, TensorLy-Torch and
    torchTT."""
    out = [Candidate("torch", "ours", "torch ours", "tt", build_ours)]
    if compile:
        out.append(
            Candidate("torch", "ours-compiled", "torch ours compiled", "tt", lambda c, b, d: build_ours(c, b, d, compiled=True))
        )
    out += [
        Candidate("torch", "triton", "torch Triton fused", "tt",
                  lambda c, b, d: build_ours(c, b, d, kernel="triton", interpret=interpret_kernels)),
        Candidate("torch", "dense", "torch dense", "dense", lambda c, b, d: build_dense(c, b, d, max_bytes=dense_max_bytes)),
        Candidate("torch", "einsum", "torch einsum", "tt", build_einsum),
        Candidate("torch", "tensorly", "TensorLy-Torch", "tt", build_tensorly),
        Candidate("torch", "torchtt", "torchTT", "tt", build_torchtt),
    ]
    return out




def device_name(device: str) -> str:
    """The device's name as torch reports it (``NVIDIA H200``), or ``cpu``."""
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
