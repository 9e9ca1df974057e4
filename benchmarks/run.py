"""One command for the whole benchmark: ``python -m benchmarks.run [--quick] ...``.

Times, for every layer of :mod:`benchmarks.layers` and every batch size, the
forward pass and the training step (forward + backward) of each candidate (our
JAX and torch TT layers, their fused kernels, the dense layer, the single einsum,
TensorLy-Torch, torchTT) in each dtype of ``--dtypes`` (one report each), measures
the machine's own matmul rate and memory bandwidth in the same run, the peak memory
of a training step, then prints a markdown report (tables, ratios, the bandwidth
roofline, and whether each goal of the issue is met) and writes it to ``--out``.

Examples::

    python -m benchmarks.run                      # full run, writes benchmarks/RESULTS.md
    python -m benchmarks.run --quick              # harness check, writes benchmarks/RESULTS-quick.md
    python -m benchmarks.run --layers 1024-1024 --batches 100 --frameworks torch
    python -m benchmarks.run --device gpu         # JAX picks the GPU itself; torch uses 'cuda'; batches to 10000
    python -m benchmarks.run --device gpu --dtypes float32 bfloat16   # also writes RESULTS-bfloat16.md
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report
from benchmarks.candidate import Skip
from benchmarks.layers import LAYERS, SMOKE_LAYERS, get
from benchmarks.timing import load_average, machine_info, measure, spec_bandwidth_gbps
from experiments.memory import retain_freed_memory

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
QUICK_OUT = Path(__file__).resolve().parent / "RESULTS-quick.md"
CPU_BATCHES = [1, 100, 1000]
GPU_BATCHES = [1, 100, 1000, 10000]  # a GPU has the memory and the speed for 10,000 rows
DTYPES = ("float32", "bfloat16")
CANDIDATES = ["ours", "ours-compiled", "pallas", "triton", "dense", "einsum", "tensorly", "torchtt"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="harness check: batches 1 and 100, few repeats, short budgets")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help=f"batch sizes (default {' '.join(map(str, CPU_BATCHES))}; with --device gpu "
                   f"{' '.join(map(str, GPU_BATCHES))}; quick 1 100)")
    p.add_argument("--layers", nargs="+", default=None, choices=[c.name for c in (*LAYERS, *SMOKE_LAYERS)],
                   help="default: the six of benchmarks.layers.LAYERS")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=DTYPES,
                   help="dtypes of the parameters and inputs, one report each (default float32)")
    p.add_argument("--frameworks", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    p.add_argument("--repeats", type=int, default=None, help="most timed calls per measurement (default 20; quick 3)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop timing a measurement once this many seconds of timed calls are spent (default 0.5; quick 0.2)",
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first, the compiling one included (default 2)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument(
        "--dense-max-gb",
        type=float,
        default=4.0,
        help="skip the dense layer when its weight + gradient exceed this many GiB (default 4)",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        choices=CANDIDATES,
        help="run only these candidates (default: all); pallas and triton are the fused kernels",
    )
    p.add_argument("--interpret-kernels", action="store_true",
                   help="off a GPU, run the fused kernels in their interpreters (a harness check; times nothing useful)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidate (it compiles per shape)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument(
        "--memory-batch", type=int, default=None, help="batch of the memory measurements (default 100 if measured, else the largest)"
    )
    p.add_argument(
        "--single-call-s",
        type=float,
        default=1.0,
        help="a call whose first call (no compilation in it) is slower than this is timed once more, "
        "and only once (default 1)",
    )
    p.add_argument(
        "--time-limit-s",
        type=float,
        default=None,
        help="soft limit for the whole run, split evenly between the frameworks: once a framework's share is "
        "spent, its remaining measurements are skipped (and listed as such)",
    )
    p.add_argument("--cpus", type=int, default=None, help="pin the run to this many CPUs (default: all usable)")
    p.add_argument(
        "--retain-memory",
        action="store_true",
        help="keep freed memory in each worker (experiments.memory.retain_freed_memory: no page faults on reused "
        "large buffers; glibc only); default: malloc as a user's process has it",
    )
    p.add_argument("--worker", choices=["jax", "torch"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-dtype", choices=DTYPES, default="float32", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=f"markdown file to write (default {DEFAULT_OUT.name}; quick: {QUICK_OUT.name})")
    args = p.parse_args(argv)
    if args.batches is None:
        args.batches = [1, 100] if args.quick else list(GPU_BATCHES if args.device == "gpu" else CPU_BATCHES)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 20
    if args.budget_s is None:
        args.budget_s = 0.2 if args.quick else 0.5
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.memory_batch is None:
        args.memory_batch = 100 if 100 in args.batches else max(args.batches)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    args.layers = [get(n) for n in (args.layers or [c.name for c in LAYERS])]
    return args


def _pin_cpus(n: int | None) -> None:
    """Restricts this process to its first ``n`` usable CPUs; must run before JAX or torch start."""
    if n is None:
        return
    cpus = sorted(os.sched_getaffinity(0))
    if n > len(cpus):
        raise SystemExit(f"--cpus {n}: only {len(cpus)} usable CPUs")
    os.sched_setaffinity(0, cpus[:n])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _setup_device(framework: str, device: str) -> str:
    """Picks the device of one framework; for JAX it must run before JAX is imported."""
    if framework == "torch":
        import torch

        if device == "cpu":
            return "cpu"
        gpu = torch.cuda.is_available()
        if device == "gpu" and not gpu:
            raise SystemExit("--device gpu: torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in both frameworks
        torch.backends.cudnn.allow_tf32 = False
        return "cuda" if gpu else "cpu"
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    # A rerun (same shapes, same machine) skips XLA's compilation and GPU autotuning.
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/tt_layers/jax-bench"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    backend = jax.default_backend()
    if device == "gpu" and backend != "gpu":
        raise SystemExit(f"--device gpu: JAX's backend is {backend!r} (install jax[cuda12])")
    return backend


def worker(args) -> None:
    """Measures every candidate of one framework (this process runs one framework only).

    Writes its results to ``args.worker_out`` after every layer, so that a run cut
    short (``--time-limit-s``, a crash, a timeout) still reports what it measured.
    """
    fw = args.worker
    started = time.perf_counter()
    if args.retain_memory and not retain_freed_memory():
        raise SystemExit("--retain-memory: this C library is not glibc (or $TT_RETAIN_MEMORY is 0)")
    if args.interpret_kernels and args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton loads: its kernels take CPU tensors
    device = _setup_device(fw, args.device)
    if fw == "jax":
        from benchmarks import candidates_jax as mod

        mod.set_dtype(args.worker_dtype)
        cands = mod.candidates(args.dense_max_gb * 2**30, interpret_kernels=args.interpret_kernels)
        info = mod.versions()
        gpu = device == "gpu"
        size = 4096 if gpu else 2048
        peaks = {"matmul": mod.matmul_gflops(size), "copy": mod.copy_gbps()}
        name = mod.device_name()
    else:
        from benchmarks import candidates_torch as mod

        mod.set_dtype(args.worker_dtype)
        cands = mod.candidates(args.dense_max_gb * 2**30, compile=not args.no_compile,
                               interpret_kernels=args.interpret_kernels)
        info = mod.versions()
        info["tt_torch"] = "present" if mod.tt_torch_available() else "missing"
        gpu = device == "cuda"
        size = 4096 if gpu else 2048
        peaks = {"matmul": mod.matmul_gflops(size, device), "copy": mod.copy_gbps(device)}
        name = mod.device_name(device)
    spec = spec_bandwidth_gbps(name) if gpu else None
    if spec is not None:  # the datasheet figure, for the roofline beside the measured copy rate
        peaks["spec_copy"] = spec
        info[f"{fw} device bandwidth (datasheet)"] = f"{name}: {spec:.0f} GB/s"
    if args.candidates:
        cands = [c for c in cands if c.name in args.candidates]
    res = report.Results(layers=args.layers, batches=args.batches, candidates=cands)
    res.devices[fw] = device
    res.peaks[fw] = dict(peaks, matmul_size=size)
    res.versions[fw] = info
    kw = dict(warmup=args.warmup, repeats=args.repeats, budget_s=args.budget_s)
    limit = None if args.time_limit_s is None else args.time_limit_s / (len(args.frameworks) * len(args.dtypes))
    for cfg in args.layers:
        t_layer = time.perf_counter()
        for batch in args.batches:
            for cand in cands:
                if limit is not None and time.perf_counter() - started > limit:
                    res.skip(cfg, batch, cand, f"time limit ({limit:.0f} s for {fw}) reached")
                    continue
                t0 = time.perf_counter()
                try:
                    built = cand.build(cfg, batch, device)
                except Skip as e:
                    res.skip(cfg, batch, cand, str(e))
                    _log(f"{cfg.name} B={batch} {cand.key}: skipped ({e})")
                    continue
                except Exception as e:  # noqa: BLE001 - one broken candidate must not stop the run
                    res.skip(cfg, batch, cand, f"error: {type(e).__name__}: {e}")
                    _log(f"{cfg.name} B={batch} {cand.key}: build failed\n{traceback.format_exc()}")
                    continue
                t1 = time.perf_counter()
                try:
                    single = None if built.first_call_compiles else args.single_call_s
                    fwd = measure(built.forward, single_call_s=single, **kw)
                    res.add(cfg, batch, cand, "fwd", fwd)
                    t2 = time.perf_counter()
                    step = measure(built.train_step, single_call_s=single, **kw)
                    if built.step_compile_s:  # report the first call with its compilation
                        step = dataclasses.replace(step, warmup_s=step.warmup_s + built.step_compile_s)
                    res.add(cfg, batch, cand, "fwd+bwd", step)
                    t3 = time.perf_counter()
                    res.notes(cfg, cand, built.notes)
                    if batch == args.memory_batch and not args.no_memory and built.memory is not None:
                        res.memory(cfg, batch, cand, built.memory())
                    _log(
                        f"{cfg.name} B={batch} {cand.key}: build {t1 - t0:.1f} s, fwd {t2 - t1:.1f} s "
                        f"({fwd.n} calls), fwd+bwd {t3 - t2:.1f} s ({step.n} calls), "
                        f"memory {time.perf_counter() - t3:.1f} s"
                    )
                except Exception as e:  # noqa: BLE001
                    res.skip(cfg, batch, cand, f"error: {type(e).__name__}: {e}")
                    _log(f"{cfg.name} B={batch} {cand.key}: failed\n{traceback.format_exc()}")
                finally:
                    del built
                    gc.collect()
        _log(f"{fw} {cfg.name}: {time.perf_counter() - t_layer:.0f} s")
        args.worker_out.write_text(json.dumps(res.to_json()))
    args.worker_out.write_text(json.dumps(res.to_json()))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    _pin_cpus(args.cpus)
    if args.worker:
        worker(args)
        return 0
    failed = False
    for dtype in args.dtypes:  # one report per dtype: its tables, ratios and goals compare like with like
        failed |= _run_dtype(args, argv, dtype)
    return 1 if failed else 0


def out_path(out: Path, dtype: str, dtypes: Sequence[str]) -> Path:
    """The report of ``dtype``: ``out`` for the first dtype asked for, ``out`` with ``-dtype`` for the others.

    >>> out_path(Path("r/RESULTS.md"), "bfloat16", ["float32", "bfloat16"]).as_posix()
    'r/RESULTS-bfloat16.md'
    """
    return out if dtype == dtypes[0] else out.with_name(f"{out.stem}-{dtype}{out.suffix}")


def _run_dtype(args: argparse.Namespace, argv: list[str], dtype: str) -> bool:
    """Runs one worker per framework in ``dtype``, writes the report and its JSON; whether a worker failed."""
    started = time.perf_counter()
    load_before = load_average()
    res = report.Results(layers=args.layers, batches=args.batches, candidates=[])
    with tempfile.TemporaryDirectory() as tmp:
        for fw in args.frameworks:
            # One process per framework: XLA's and torch's thread pools in one process
            # compete for the cores, and a crash or OOM in one leaves the other's numbers.
            out = Path(tmp) / f"{fw}.json"
            cmd = [sys.executable, "-m", "benchmarks.run", *argv, "--worker", fw, "--worker-out", str(out),
                   "--worker-dtype", dtype]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, check=False)
            _log(f"{fw} {dtype}: {time.perf_counter() - t0:.0f} s")
            if done.returncode != 0:
                res.failures[fw] = f"worker exited with status {done.returncode}; the tables hold what it finished"
            if out.exists():
                res.merge(json.loads(out.read_text()))

    header = machine_info()
    if load_before is not None:
        header["load average (1/5/15 min)"] = (
            f"{', '.join(f'{x:.2f}' for x in load_before)} before, {header.get('load average (1/5/15 min)', '?')} after"
        )
    header["run"] = f"`{' '.join(['python -m benchmarks.run', *argv])}`, {time.perf_counter() - started:.0f} s"
    header["settings"] = (
        f"batches {args.batches}; warm-up {args.warmup}; per measurement at most {args.repeats} timed calls, "
        f"stopping after {args.budget_s} s of them (at least 3, or 1 when a call exceeds it; "
        f"one timed call after a first one over {args.single_call_s} s, marked ¹); "
        f"memory at batch {args.memory_batch}; "
        f"{dtype}, TF32 off; one process per framework"
        + (f"; pinned to {args.cpus} CPUs" if args.cpus else "")
        + ("; freed memory kept in the process (`--retain-memory`)" if args.retain_memory else "; default malloc")
        + ("; kernels interpreted (`--interpret-kernels`)" if args.interpret_kernels else "")
    )
    header["devices"] = ", ".join(f"{k}: {v}" for k, v in res.devices.items())
    for info in res.versions.values():
        header.update(info)
    render_kwargs = {"quick": args.quick, "memory_batch": args.memory_batch, "retained": args.retain_memory,
                     "dtype": dtype}
    text = report.render(res, header, **render_kwargs)
    print(text)
    path = out_path(args.out, dtype, args.dtypes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    report.save_run(path.with_suffix(".json"), res, header, **render_kwargs)  # to render it again later
    _log(f"wrote {path} and its .json ({time.perf_counter() - started:.0f} s)")
    return bool(res.failures)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
