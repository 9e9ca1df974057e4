"""Time a thesis network's data-parallel training step on 1 and N simulated CPU devices, JAX and torch.

Each measurement runs in a fresh process: JAX on ``N`` devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (the flag must be set before JAX starts), torch on ``N``
gloo processes (:func:`experiments.parallel.spawn`, each with ``cores / N`` threads, so that all counts get the
same CPU). The step is the experiments' own (:class:`experiments.backend_jax.JaxBackend`,
:class:`experiments.backend_torch.TorchBackend`) on a random global batch, timed by
:func:`benchmarks.timing.measure` after warm-up (compilation)::

    python -m benchmarks.multi_device                          # tt-tt-tt, batch 100, 1 and 2 devices
    python -m benchmarks.multi_device --model tt-tt-fc --devices 4 --out multi_device.md
    python -m benchmarks.multi_device --quick                  # 2 timed steps: checks that it runs, times nothing

Simulated devices share one CPU: the table measures what sharding costs (collectives, smaller per-device
matrices, process overhead), not a speedup; that needs real devices (GPUs). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from experiments.cli import add_debug_flag, positive_int, user_errors
from experiments.optim import OptimizerConfig
from experiments.presets import PRESETS, get_preset

__all__ = ["main"]

NOTE = ("Simulated devices share one CPU: these times measure the overhead of data parallelism (sharding, "
        "all-reduces, process overhead), not a speedup. A speedup needs real devices.")


def _batch(batch: int, features: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, features), dtype=np.float32), rng.integers(0, 10, batch).astype(np.int64)


def _timing(step, quick: bool) -> dict:
    from benchmarks.timing import measure

    t = measure(step, warmup=1, repeats=2, min_repeats=2, budget_s=600.0) if quick else \
        measure(step, warmup=3, repeats=30, min_repeats=5, budget_s=10.0)
    return {"median_ms": t.median_ms, "min_ms": t.min_ms, "n": t.n, "first_ms": 1e3 * t.warmup_s}


def _time_jax(model: str, batch: int, devices: int, quick: bool) -> dict:
    import jax

    from experiments.backend_jax import JaxBackend

    spec = get_preset(model)
    backend = JaxBackend(spec, OptimizerConfig("sgd", 0.01), 0, devices=devices)
    x, y = _batch(batch, spec.layers[0].in_features)
    return {**_timing(lambda: jax.block_until_ready(backend.train_step(x, y)), quick), "threads": "XLA's pool"}


def _time_torch_rank(world, model: str, batch: int, quick: bool) -> dict:
    """One gloo rank (or the one process): the step on this rank's share of a global batch."""
    import torch

    from experiments.backend_torch import TorchBackend
    from experiments.parallel import process_group

    threads = max(1, (os.cpu_count() or 1) // world.processes)
    torch.set_num_threads(threads)
    spec = get_preset(model)
    with process_group(world, "torch"):
        backend = TorchBackend(spec, OptimizerConfig("sgd", 0.01), 0, world=world)
        x, y = _batch(batch, spec.layers[0].in_features)
        result = _timing(lambda: float(backend.train_step(x, y)[0]), quick)  # float(): waits for the step
    return {**result, "threads": f"{threads} per process"}


def _time_torch(model: str, batch: int, devices: int, quick: bool) -> dict:
    from experiments.parallel import SINGLE, spawn

    if devices == 1:
        return _time_torch_rank(SINGLE, model, batch, quick)
    return spawn("benchmarks.multi_device:_time_torch_rank", devices, model, batch, quick)


def _measure_in_subprocess(backend: str, model: str, batch: int, devices: int, quick: bool) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    if backend == "jax" and devices > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    command = [sys.executable, "-m", "benchmarks.multi_device", "--worker", backend, "--model", model, "--batch",
               str(batch), "--devices", str(devices), *(["--quick"] if quick else [])]
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    if result.returncode != 0:
        raise RuntimeError(f"{backend} on {devices} devices failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict], batch: int) -> str:
    """The markdown table of the measurements (``rows``: backend, devices and :func:`_timing`'s keys).

    >>> print(table([{"backend": "jax", "devices": 1, "median_ms": 2.0, "min_ms": 1.5, "n": 5, "threads": "t"},
    ...              {"backend": "jax", "devices": 2, "median_ms": 3.0, "min_ms": 2.5, "n": 5, "threads": "t"}], 100))
    | backend | devices | batch per device | median ms / step | min ms | timed steps | threads | vs 1 device |
    |---|---:|---:|---:|---:|---:|---|---:|
    | jax | 1 | 100 | 2.00 | 1.50 | 5 | t | 1.00x |
    | jax | 2 | 50 | 3.00 | 2.50 | 5 | t | 1.50x |
    """
    lines = [("| backend | devices | batch per device | median ms / step | min ms | timed steps | threads "
             "| vs 1 device |"),
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    one = {r["backend"]: r["median_ms"] for r in rows if r["devices"] == 1}
    for r in rows:
        ratio = f"{r['median_ms'] / one[r['backend']]:.2f}x" if r["backend"] in one else "—"
        lines.append(f"| {r['backend']} | {r['devices']} | {batch // r['devices']} | {r['median_ms']:.2f} | "
                     f"{r['min_ms']:.2f} | {r['n']} | {r['threads']} | {ratio} |")
    return "\n".join(lines)


def report(rows: list[dict], model: str, batch: int, quick: bool) -> str:
    from benchmarks.timing import machine_info

    spec = get_preset(model)
    head = [f"# Data-parallel training step: {model} ({spec.param_count():,} parameters), global batch {batch}", ""]
    if quick:
        head += [("**--quick: 2 timed steps each; these numbers check that the benchmark runs, they measure "
                 "nothing.**"), ""]
    machine = [f"- {key}: {value}" for key, value in machine_info().items()]
    return "\n".join([*head, table(rows, batch), "", NOTE, "", "Machine:", "", *machine, ""])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.multi_device", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(PRESETS), default="tt-tt-tt")
    p.add_argument("--batch", type=positive_int, default=100, help="global batch (split over the devices)")
    p.add_argument("--devices", type=positive_int, default=2, help="the count compared with 1 (default 2)")
    p.add_argument("--backends", nargs="+", choices=("jax", "torch"), default=["jax", "torch"])
    p.add_argument("--quick", action="store_true", help="2 timed steps: check that it runs (times nothing)")
    p.add_argument("--out", type=Path, default=None, help="also write the report there (an existing file is refused)")
    p.add_argument("--worker", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)  # one measurement
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.worker is not None:  # a measurement in its own process: one JSON line
        timer = _time_jax if args.worker == "jax" else _time_torch
        print(json.dumps(timer(args.model, args.batch, args.devices, args.quick)))
        return
    with user_errors(args.debug):
        if args.batch % args.devices:
            raise ValueError(f"--batch {args.batch} does not split over --devices {args.devices}")
        if args.out is not None and args.out.exists():
            raise ValueError(f"--out {args.out} exists: not overwritten (remove it or choose another file)")
        counts = (1, args.devices) if args.devices > 1 else (1,)
        rows = [{"backend": backend, "devices": n,
                 **_measure_in_subprocess(backend, args.model, args.batch, n, args.quick)}
                for backend in args.backends for n in counts]
        text = report(rows, args.model, args.batch, args.quick)
        if args.out is not None:
            with open(args.out, "x") as f:  # "x": never overwrites, even a file created meanwhile
                f.write(text)
    print(text)


if __name__ == "__main__":
    from benchmarks.multi_device import main as _main  # the imported module: spawned ranks find its functions

    _main()
