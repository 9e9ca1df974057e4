"""The whole training step of the thesis's networks against their dense versions, both frameworks.

    python -m benchmarks.networks                                   # tt-tt, tt-tt-tt, tt-tt-fc and their dense
    python -m benchmarks.networks --models tt-tt fc-fc --batches 100 1000 --frameworks torch
    python -m benchmarks.networks --device gpu --out /tmp/networks.md

A step is what the experiments train with (:mod:`experiments.backend_jax`, :mod:`experiments.backend_torch`:
forward, cross-entropy, backward, the optimizer's update; batch norm in training mode), on random inputs and
labels of the network's shape placed on the device once (no data loading, no host copies in the timing; the
values do not change the time). Each network's first steps (compilation, allocation) are untimed; the timed
steps each end in a synchronization. One process per framework, as in :mod:`benchmarks.run`; a time limit
skips what is left and says so. The report lists each TT network beside its dense counterpart
(:data:`DENSE_OF`): the step's median, its minimum, and dense / TT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["DENSE_OF", "main", "render"]

# Each TT network of the thesis and the dense network of the same layer widths.
DENSE_OF = {
    "tt-tt": "fc-fc",
    "tt-fc": "fc-fc",
    "tt-tt-tt": "fc-fc-fc",
    "tt-tt-fc": "fc-fc-fc",
    "cifar-tt": "cifar-fc",
    "cifar-4tt-fc-146k": "cifar-fc",
}
DEFAULT_MODELS = ["tt-tt", "fc-fc", "tt-tt-tt", "tt-tt-fc", "fc-fc-fc"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.networks", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help=f"presets (default {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--batches", type=int, nargs="+", default=[100], help="batch sizes (default 100)")
    p.add_argument("--frameworks", nargs="+", default=["jax", "torch"], choices=["jax", "torch"])
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--steps", type=int, default=10, help="timed steps per network and batch (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    p.add_argument("--time-limit-s", type=float, default=None, help="soft limit, split between the frameworks")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write (and its .json beside it)")
    p.add_argument("--worker", choices=["jax", "torch"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from experiments.presets import get_preset

    for name in args.models:
        get_preset(name)  # an unknown name fails before anything runs
    for name, value in (("--steps", args.steps), ("--warmup", args.warmup), *(("--batches", b) for b in args.batches)):
        if value < 1:
            raise SystemExit(f"{name} must be positive, got {value}")
    return args


def _optimizer(dataset: str):
    """The optimizer each study trains with: Adadelta for CIFAR-10, SGD with momentum for MNIST."""
    from experiments.optim import OptimizerConfig

    if dataset == "cifar10":
        return OptimizerConfig("adadelta", learning_rate=1.0, rho=0.95, eps=1e-6)
    return OptimizerConfig("sgd", learning_rate=1e-3, momentum=0.9)


def _jax_step(spec, batch: int) -> tuple[Callable[[], None], str]:
    import jax
    import jax.numpy as jnp

    from experiments import backend_jax

    backend = backend_jax.JaxBackend(spec, _optimizer(spec.dataset), 0)
    key = jax.random.key(0)
    x = jax.random.normal(key, (batch, spec.in_features), jnp.float32)
    y = jax.random.randint(key, (batch,), 0, spec.num_classes)
    backend.model.train()

    def step() -> None:
        loss, _ = backend_jax._train_step(backend.model, backend.optimizer, x, y)
        jax.block_until_ready(loss)

    return step, backend.device


def _torch_step(spec, batch: int) -> tuple[Callable[[], None], str]:
    import torch
    import torch.nn.functional as F

    from experiments.backend_torch import TorchBackend

    backend = TorchBackend(spec, _optimizer(spec.dataset), 0)
    device = next(backend.model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, spec.in_features, generator=gen, device=device)
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen, device=device)
    backend.model.train()

    def step() -> None:  # TorchBackend.train_step's body, on tensors already on the device
        loss = F.cross_entropy(backend.model(x), y)
        backend.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        backend.optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, backend.device


def _setup(fw: str, device: str) -> None:
    """float32 means float32 (no TF32), as in :mod:`benchmarks.run`; JAX on the CPU when asked, with its cache."""
    if fw == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/tt_layers/jax-bench"))
    jax.config.update("jax_compilation_cache_dir", cache)


def worker(args: argparse.Namespace) -> None:
    """Times every network of one framework; writes the results after each one (a cut-short run keeps them)."""
    import gc

    from experiments.presets import get_preset

    fw = args.worker
    _setup(fw, args.device)
    started = time.perf_counter()
    limit = None if args.time_limit_s is None else args.time_limit_s / len(args.frameworks)
    rows: list[dict] = []
    for name in args.models:
        spec = get_preset(name)
        for batch in args.batches:
            row = {"model": name, "framework": fw, "batch": batch, "params": spec.param_count()}
            if limit is not None and time.perf_counter() - started > limit:
                rows.append({**row, "skipped": f"time limit ({limit:.0f} s for {fw}) reached"})
                continue
            try:
                row.update(_time_one(fw, spec, batch, args))
            except Exception as e:  # noqa: BLE001 - one network that fails (memory, say) must not stop the rest
                row["skipped"] = f"error: {type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            print(f"{fw} {name} B={batch}: {row.get('median_ms', row.get('skipped'))}", file=sys.stderr, flush=True)
            args.worker_out.write_text(json.dumps(rows))
            gc.collect()
    args.worker_out.write_text(json.dumps(rows))


def _time_one(fw: str, spec, batch: int, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    step, device = (_jax_step if fw == "jax" else _torch_step)(spec, batch)
    if args.device == "gpu" and "cpu" in device:
        raise RuntimeError(f"--device gpu: {fw} runs on {device}")
    for _ in range(args.warmup):
        step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"device": device, "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
            "steps": len(times), "first_s": first}


def render(rows: list[dict], header: dict[str, str]) -> str:
    """The markdown report: one row per TT network, framework and batch, with its dense counterpart.

    >>> rows = [{"model": "tt-tt", "framework": "jax", "batch": 100, "params": 791294, "device": "cpu",
    ...          "median_ms": 10.0, "min_ms": 9.0, "steps": 5, "first_s": 2.0},
    ...         {"model": "fc-fc", "framework": "jax", "batch": 100, "params": 208928798, "device": "cpu",
    ...          "median_ms": 30.0, "min_ms": 29.0, "steps": 5, "first_s": 1.0}]
    >>> print(render(rows, {}).splitlines()[-1])
    | tt-tt | jax | 100 | 791,294 | 10 / 9 | fc-fc | 30 / 29 | 3.00x |
    """
    by_key = {(r["model"], r["framework"], r["batch"]): r for r in rows}
    L = ["# Whole training steps: TT networks against their dense versions", ""]
    L += [f"- **{k}**: {v}" for k, v in header.items()]
    devices = sorted({f"{r['framework']}: {r['device']}" for r in rows if "device" in r})
    L += [f"- **devices**: {', '.join(devices)}", "",
          "Cells: median / min ms per step; the ratio is dense / TT (above 1: the TT network's step is faster).", ""]
    L += ["| network | framework | batch | params | step ms | dense | dense step ms | dense / TT |",
          "|---|---|---|---|---|---|---|---|"]

    def cell(r: dict | None) -> str:
        if r is None:
            return "–"
        if "median_ms" not in r:
            return "skipped"
        return f"{r['median_ms']:.3g} / {r['min_ms']:.3g}"

    for r in rows:
        if r["model"] not in DENSE_OF and r["model"] in DENSE_OF.values():
            continue  # listed beside its TT networks
        dense_name = DENSE_OF.get(r["model"], "–")
        d = by_key.get((dense_name, r["framework"], r["batch"]))
        ratio = (f"{d['median_ms'] / r['median_ms']:.2f}x" if d and "median_ms" in d and "median_ms" in r else "–")
        L.append(f"| {r['model']} | {r['framework']} | {r['batch']} | {r['params']:,} | {cell(r)} | {dense_name} | "
                 f"{cell(d)} | {ratio} |")
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        L += ["", *[f"- skipped {r['model']} {r['framework']} batch {r['batch']}: {r['skipped']}" for r in skipped]]
    L.append("")
    return "\n".join(L)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from benchmarks.timing import machine_info

    started = time.perf_counter()
    rows: list[dict] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for fw in args.frameworks:
            out = Path(tmp) / f"{fw}.json"
            cmd = [sys.executable, "-m", "benchmarks.networks", *argv, "--worker", fw, "--worker-out", str(out)]
            failed |= subprocess.run(cmd, check=False).returncode != 0
            if out.exists():
                rows += json.loads(out.read_text())
    header = machine_info()
    header["run"] = f"`{' '.join(['python -m benchmarks.networks', *argv])}`, {time.perf_counter() - started:.0f} s"
    header["settings"] = (f"batches {args.batches}; {args.warmup} untimed then {args.steps} timed steps; float32; "
                          "TF32 off; random inputs and labels on the device; one process per framework")
    text = render(rows, header)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
