"""A/B of one XLA:CPU change in JAX: a whole network's training step, or one layer, with and without it.

Not part of the benchmark run; ``docs/performance.md`` holds what it measured. Run from the repository root
with no other job running.

Whole network (the default): two copies of an experiments network (same seed, same optimizer as its study:
Adadelta for CIFAR-10, SGD momentum for MNIST) with their own jitted training steps, the second built and traced
with the change undone (``--baseline``), timed interleaved on the same real batches (batch 100, freed memory
retained as in the experiments) after two untimed rounds::

    python -m benchmarks.network_ab --model tt-tt --baseline all-plain --rounds 10 --blocks 3

One benchmark layer (``--layer``, a name from :mod:`benchmarks.layers`): the jitted forward and training step
(:func:`benchmarks.candidates_jax.training_step`: the output and every gradient) of one ``tt_jax.TTLinear``,
compiled with and without the change and timed interleaved (:func:`benchmarks.timing.interleaved`, one untimed
round, default malloc)::

    python -m benchmarks.network_ab --layer 1024-1024 --batch 100 --baseline always-broadcast --rounds 7

Baselines:

- ``plain-bias``: the TT layers' bias added by plain broadcasting, not ``tt_jax._xla_cpu.broadcast_rows``;
- ``nnx-batchnorm``: ``nnx.BatchNorm`` instead of ``experiments.nnx_layers.BatchNorm`` (networks only);
- ``always-broadcast``: every broadcast step as the broadcast-core ``dot_general`` (no transposed-result form);
- ``all-plain``: the first two together (no XLA:CPU workaround left in the networks).

The custom JVP of the broadcast step and the 16-bit dropout masks were measured with this tool too (baselines
``broadcast-autodiff`` and ``nnx-dropout``, removed with them).

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


def time_layer(name: str, batch: int, baseline: str, rounds: int) -> dict[str, float]:
    """Median ms of one ``tt_jax.TTLinear``'s jitted forward (``fwd *``) and training step (``fwd+bwd *``) with
    the change (``* change``) and without it (``* <baseline>``), timed interleaved."""
    import jax
    from flax import nnx

    import tt_jax
    from benchmarks import timing
    from benchmarks.candidates_jax import training_step
    from benchmarks.layers import get

    shape = get(name).shape
    graphdef, params = nnx.split(tt_jax.TTLinear(shape.in_modes, shape.out_modes, shape.ranks, rngs=nnx.Rngs(0)))
    key = jax.random.key(0)
    x = jax.random.normal(key, (batch, shape.in_features))
    cotangent = jax.random.normal(key, (batch, shape.out_features))
    calls = {}
    for variant, context in (("change", contextlib.nullcontext), (baseline, lambda: undone(baseline))):
        def apply(params, x):  # a new function per variant: jax.jit caches traces per function
            return nnx.merge(graphdef, params)(x)

        with context():  # applies while tracing
            fwd = jax.jit(apply).lower(params, x).compile()
            step = jax.jit(training_step(apply)).lower(params, x, cotangent).compile()
        calls[f"fwd {variant}"] = lambda fwd=fwd: jax.block_until_ready(fwd(params, x))
        calls[f"fwd+bwd {variant}"] = lambda step=step: jax.block_until_ready(step(params, x, cotangent))
    return {k: median for k, (median, _) in timing.interleaved(calls, rounds).items()}


def main_layer(args: argparse.Namespace) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for block in range(args.blocks):
        medians = time_layer(args.layer, args.batch, args.baseline, args.rounds)
        for k, ms in medians.items():
            times.setdefault(k, []).append(ms)
        for part in ("fwd", "fwd+bwd"):
            base, change = medians[f"{part} {args.baseline}"], medians[f"{part} change"]
            print(f"{args.layer} batch {args.batch} block {block} {part:7s} median {change:8.3g} ms with the change, "
                  f"{base:8.3g} ms {args.baseline}: {args.baseline} / change = {base / change:.3f}", flush=True)
    return times


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cifar-4tt-fc-146k", help="an experiments preset (whole-network A/B)")
    p.add_argument("--layer", default=None, help="a benchmarks.layers name: time that layer instead of a network")
    p.add_argument("--batch", type=int, default=100, help="batch of --layer (default 100)")
    p.add_argument("--baseline", choices=BASELINES, default="all-plain")
    p.add_argument("--rounds", type=int, default=22)
    p.add_argument("--blocks", type=int, default=1)
    args = p.parse_args(argv)
    if args.layer is not None:
        return main_layer(args)

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
