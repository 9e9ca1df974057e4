"""Estimate the time per epoch of each network on this machine, from a few timed training steps.

    python -m experiments.timing                          # the six MNIST networks, both backends
    python -m experiments.timing --models tt-tt --backends torch --steps 10
    python -m experiments.timing --dataset cifar10        # the CIFAR-10 networks

Each network trains ``--warmup`` steps (compilation, allocation) and then ``--steps`` timed steps on real
batches, synchronizing after every step; evaluation is timed on ``--eval-examples`` examples. The estimate of
one epoch is ``steps per epoch * step time + (validation + test examples) * evaluation time per example``,
for the study's batch size and the default 5,000-example validation split.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from experiments.cli import add_debug_flag, non_negative_int, positive_int, user_errors
from experiments.data import iterate_batches, load_dataset, num_batches
from experiments.optim import OptimizerConfig
from experiments.presets import get_preset
from experiments.studies import CIFAR_NETWORKS, MNIST_NETWORKS
from experiments.train import retain_freed_memory_for

__all__ = ["main", "measure"]

SPLITS = {"mnist": (55_000, 5_000, 10_000), "cifar10": (45_000, 5_000, 10_000)}  # train, val, test


def _backend(name: str, model: str, optimizer: OptimizerConfig):
    spec = get_preset(model)
    if name == "jax":
        from experiments.backend_jax import JaxBackend

        return JaxBackend(spec, optimizer, 0)
    from experiments.backend_torch import TorchBackend

    return TorchBackend(spec, optimizer, 0)


def measure(model: str, backend: str, *, steps: int = 5, warmup: int = 2, batch_size: int = 100,
            eval_examples: int = 1000, eval_batch_size: int = 500) -> dict:
    """Seconds per training step and per evaluated example, and the estimated seconds per epoch."""
    spec = get_preset(model)
    n = batch_size * (steps + warmup)
    data = load_dataset(spec.dataset, limit=max(n, eval_examples))
    optimizer = OptimizerConfig("sgd", learning_rate=1e-3, momentum=0.9)
    if spec.dataset == "cifar10":
        optimizer = OptimizerConfig("adadelta", learning_rate=1.0, rho=0.95, eps=1e-6)
    runner = _backend(backend, model, optimizer)
    batches = list(iterate_batches(data.x_train[:n], data.y_train[:n], batch_size, shuffle=False, drop_last=True))
    times = []
    for k, (x, y) in enumerate(batches):
        start = time.perf_counter()
        loss, _ = runner.train_step(x, y)
        float(loss)  # synchronize
        if k >= warmup:
            times.append(time.perf_counter() - start)
    x_eval, y_eval = data.x_val[:eval_examples], data.y_val[:eval_examples]
    runner.evaluate(iterate_batches(x_eval[:eval_batch_size], y_eval[:eval_batch_size], eval_batch_size,
                                    shuffle=False))  # compile / warm up
    start = time.perf_counter()
    runner.evaluate(iterate_batches(x_eval, y_eval, eval_batch_size, shuffle=False))
    eval_per_example = (time.perf_counter() - start) / len(y_eval)
    step = statistics.median(times)
    train, val, test = SPLITS[spec.dataset]
    epoch = num_batches(train, batch_size, drop_last=True) * step + (val + test) * eval_per_example
    result = {"model": model, "backend": backend, "device": runner.device, "params": spec.param_count(),
              "step_s": step, "eval_per_example_s": eval_per_example, "epoch_s": epoch}
    del runner
    gc.collect()
    return result


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m experiments.timing", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--models", nargs="+", help="default: the dataset's thesis networks")
    p.add_argument("--backends", nargs="+", choices=("jax", "torch"), default=["jax", "torch"])
    p.add_argument("--steps", type=positive_int, default=5)
    p.add_argument("--warmup", type=non_negative_int, default=2)
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="also estimate a whole run (default: 25 MNIST, 100 CIFAR)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    with user_errors(args.debug):  # an unknown model, missing data: one error line
        return _measure_all(args)


def _measure_all(args: argparse.Namespace) -> list[dict]:
    models = args.models or list(MNIST_NETWORKS if args.dataset == "mnist" else CIFAR_NETWORKS)
    epochs = args.epochs or (25 if args.dataset == "mnist" else 100)
    for model in models:
        get_preset(model)  # an unknown name is refused before anything is measured
    retained = retain_freed_memory_for(models)
    print(f"freed memory retained in the process (experiments.memory): {'yes' if retained else 'no'}\n")
    print(f"| network | backend | device | params | step | eval / 1000 ex. | epoch (est.) | {epochs} epochs (est.) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    results = []
    for model in models:
        for backend in args.backends:
            r = measure(model, backend, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size)
            results.append(r)
            print(f"| {model} | {backend} | {r['device']} | {r['params']:,} | {1000 * r['step_s']:.0f} ms | "
                  f"{r['eval_per_example_s'] * 1000:.2f} s | {_fmt(r['epoch_s'])} | {_fmt(epochs * r['epoch_s'])} |",
                  flush=True)
    return results


if __name__ == "__main__":
    main()
