"""Probe (not part of the benchmark run): a whole network's JAX training step with and without a change.

Builds two copies of an experiments network (same seed, same optimizer as its study: Adadelta for CIFAR-10,
SGD momentum for MNIST) with their own jitted training steps, traces the second one with the change undone
(``--baseline``), then times them interleaved on the same real batches (batch 100, freed memory retained as in
the experiments), after two untimed rounds. Run from the repository root on a quiet machine::

    python -m benchmarks.proposals.network_ab --model tt-tt --baseline all-plain --rounds 12 --blocks 3

Baselines:

- ``plain-bias``: the TT layers' bias added by plain broadcasting, not ``tt_jax._xla_cpu.broadcast_rows``;
- ``nnx-batchnorm``: ``nnx.BatchNorm`` instead of ``experiments.nnx_layers.BatchNorm``;
- ``always-broadcast``: every broadcast step as the broadcast-core ``dot_general`` (no transposed-result form);
- ``all-plain``: the first two together (no XLA:CPU workaround left in the networks).

The custom JVP of the broadcast step and the 16-bit dropout masks were measured with this probe (baselines
``broadcast-autodiff`` and ``nnx-dropout``, now removed with them): ``docs/performance.md``.

``--blocks`` repeats the interleaved rounds that many times and prints each block's medians and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from unittest import mock

BASELINES = ("plain-bias", "nnx-batchnorm", "always-broadcast", "all-plain")


@contextlib.contextmanager
def undone(baseline: str) -> Iterator[None]:
    """A context in which ``tt_jax`` runs without the change ``baseline`` names."""
    import jax.numpy as jnp
    from flax import nnx

    from experiments import nnx_layers
    from tt_jax import _xla_cpu, functional

    patches = {
        "plain-bias": [(_xla_cpu, "broadcast_rows", jnp.broadcast_to)],
        "nnx-batchnorm": [(nnx_layers, "BatchNorm", nnx.BatchNorm)],
        "always-broadcast": [(functional, "_broadcast_is_cheaper", lambda *shape: True)],
    }
    patches["all-plain"] = patches["plain-bias"] + patches["nnx-batchnorm"]
    if baseline not in patches:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    with contextlib.ExitStack() as stack:
        for target, name, value in patches[baseline]:
            stack.enter_context(mock.patch.object(target, name, value))
        yield


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar-4tt-fc-146k")
    p.add_argument("--baseline", choices=BASELINES, default="all-plain")
    p.add_argument("--rounds", type=int, default=22)
    p.add_argument("--blocks", type=int, default=1)
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
    for block in range(args.blocks):
        block_times: dict[str, list[float]] = {name: [] for name in runners}
        for r in range(args.rounds):
            for name in list(runners)[:: 1 if r % 2 else -1]:
                elapsed = run(name, r + 1)
                if r >= 2:
                    block_times[name].append(elapsed)
        medians = {name: statistics.median(ts) for name, ts in block_times.items()}
        for name, ts in block_times.items():
            times[name] += ts
            print(f"{args.model} block {block} {name:20s} training step min {min(ts) * 1e3:7.1f} ms, median "
                  f"{medians[name] * 1e3:7.1f} ms ({len(ts)} steps)")
        print(f"{args.model} block {block} {args.baseline} / change = {medians[args.baseline] / medians['change']:.3f}",
              flush=True)
    return times


if __name__ == "__main__":
    main()
