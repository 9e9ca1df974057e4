"""Probe (not part of the benchmark run): a whole network's JAX training step with and without a change.

Builds two copies of an experiments network (same seed, same optimizer as its study: Adadelta for CIFAR-10,
SGD momentum for MNIST) with their own jitted training steps, traces the second one with the change undone
(``--baseline``), then times them interleaved on the same real batches (batch 100, freed memory retained as in
the experiments), after two untimed rounds. Run from the repository root on a quiet machine::

    python -m benchmarks.proposals.network_ab --model cifar-4tt-fc-146k --baseline broadcast-autodiff --rounds 42

Baselines:

- ``broadcast-autodiff``: ``tt_jax``'s broadcast step differentiated by plain autodiff, not by its custom JVP
  (``proposals/README.md`` section 13);
- ``nnx-dropout``: the networks' dropout as ``nnx.Dropout`` instead of ``tt_jax.Dropout`` (section 13).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from unittest import mock

BASELINES = ("broadcast-autodiff", "nnx-dropout")


@contextlib.contextmanager
def undone(baseline: str) -> Iterator[None]:
    """A context in which ``tt_jax`` runs without the change ``baseline`` names."""
    from flax import nnx

    import tt_jax
    from tt_jax import layer

    if baseline == "broadcast-autodiff":  # the same product without its custom JVP: plain autodiff
        with mock.patch.object(layer, "_broadcast_product", layer._broadcast_product.fun):
            yield
    elif baseline == "nnx-dropout":
        with mock.patch.object(tt_jax, "Dropout", nnx.Dropout):
            yield
    else:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar-4tt-fc-146k")
    p.add_argument("--baseline", choices=BASELINES, default="broadcast-autodiff")
    p.add_argument("--rounds", type=int, default=22)
    args = p.parse_args(argv)

    from experiments.train import retain_freed_memory_for

    retain_freed_memory_for([args.model])

    import jax.numpy as jnp
    from flax import nnx

    from experiments import backend_jax
    from experiments.data import iterate_batches, load_dataset
    from experiments.optim import OptimizerConfig
    from experiments.presets import get_preset

    spec = get_preset(args.model)
    optimizer = (OptimizerConfig("adadelta", learning_rate=1.0, rho=0.95, eps=1e-6) if spec.dataset == "cifar10"
                 else OptimizerConfig("sgd", learning_rate=1e-3, momentum=0.9))

    def new_step():  # a jitted step of its own, so that the two variants do not share a compilation
        @nnx.jit
        def step(model, opt, x, y):
            (loss, _), grads = nnx.value_and_grad(backend_jax._loss_and_correct, has_aux=True)(model, x, y)
            opt.update(model, grads)
            return loss

        return step

    runners = {"change": (backend_jax.JaxBackend(spec, optimizer, 0), new_step())}
    with undone(args.baseline):  # built without the change (dropout); traced without it below
        runners[args.baseline] = (backend_jax.JaxBackend(spec, optimizer, 0), new_step())
    data = load_dataset(spec.dataset, limit=3000)
    batches = list(iterate_batches(data.x_train, data.y_train, 100, shuffle=False, drop_last=True))

    def run(name: str, k: int) -> float:
        backend, step = runners[name]
        backend.model.train()
        x, y = (jnp.asarray(a) for a in batches[k % len(batches)])
        start = time.perf_counter()
        float(step(backend.model, backend.optimizer, x, y))
        return time.perf_counter() - start

    with undone(args.baseline):
        run(args.baseline, 0)  # traces and compiles without the change
    run("change", 0)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(args.rounds):
        for name in list(runners)[:: 1 if r % 2 else -1]:
            elapsed = run(name, r + 1)
            if r >= 2:
                times[name].append(elapsed)
    for name, ts in times.items():
        print(f"{args.model} {name:20s} training step min {min(ts) * 1e3:7.1f} ms, median "
              f"{statistics.median(ts) * 1e3:7.1f} ms ({len(ts)} steps)")
    return times


if __name__ == "__main__":
    main()
