"""Probe (not part of the benchmark run): does ``plan_groups`` pick the fastest merge of cores?

Both layers contract with the plan their ``plan(batch_size)`` gives (:func:`tt_common.contraction.layer_plan`): in
the layer's direction, :func:`tt_common.contraction.plan_groups` merges runs of adjacent cores and picks the plan
of least modelled cost (:func:`tt_common.contraction.plan_cost`: FLOPs + 10 FLOPs per byte of state traffic + 2e6 per step, merged cores up to 2^16 elements). Those constants were set by hand on a
loaded machine. This probe ranks every plan (grouping and direction, merged cores up to ``--max-core-size``)
by modelled cost, keeps the ``--top`` cheapest and the libraries' own plans (``tt_torch``'s, and ``tt_jax``'s on
a CPU, which adds XLA:CPU's cost per small product), and times the forward and the
training step (``vjp`` to the cores and the input) of our JAX layer (jitted) and our torch layer (eager) with
each plan forced, interleaved per framework (median of ``--rounds``). Run from the repository root::

    python -m benchmarks.proposals.grouping_probe --layers 25088-4096 32768-8192 --batch 100
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Callable
from unittest import mock

import numpy as np


from benchmarks import timing
from benchmarks.layers import LayerConfig, get
from tt_jax._xla_cpu import XLA_CPU_PRODUCT_FLOPS
from tt_common.contraction import (
    Direction,
    _plans,
    layer_plan,
    merged_shape,
    plan_cost,
)

Plan = tuple[tuple[int, ...], Direction]


def candidate_plans(cfg: LayerConfig, batch: int, top: int, max_core_size: int) -> list[Plan]:
    """The ``top`` plans of least modelled cost, then the libraries' plans that are not among them."""
    shape = cfg.shape
    plans = sorted(_plans(shape, max_core_size), key=lambda plan: plan_cost(shape, batch, *plan))
    chosen = plans[:top]
    return chosen + [plan for plan in dict.fromkeys(library_plans(shape, batch).values()) if plan not in chosen]


def library_plans(shape, batch: int) -> dict[str, Plan]:
    """The plan each layer runs: ``tt_torch``'s, and ``tt_jax``'s on a CPU."""
    return {"torch": layer_plan(shape, batch), "jax": layer_plan(shape, batch, product_flops=XLA_CPU_PRODUCT_FLOPS)}


def _forced(layer_class: type, plan: Plan):
    """A context in which the layers of ``layer_class`` contract with ``plan`` (their ``plan`` method says so)."""
    return mock.patch.object(layer_class, "plan", lambda self, batch_size: plan)


def _check_same(outputs: list[np.ndarray], plans: list[Plan]) -> None:
    """Every plan computes the same product (float32 sums in another order: relative 1e-4 of the largest output)."""
    for out, plan in zip(outputs[1:], plans[1:]):
        np.testing.assert_allclose(out, outputs[0], atol=1e-4 * np.abs(outputs[0]).max(), err_msg=str(plan))


def time_jax(cfg: LayerConfig, batch: int, plans: list[Plan], rounds: int) -> dict[str, float]:
    import jax
    from flax import nnx

    import tt_jax
    from benchmarks.candidates_jax import training_step

    x = jax.random.normal(jax.random.key(1), (batch, cfg.shape.in_features))
    g = jax.random.normal(jax.random.key(2), (batch, cfg.shape.out_features))
    calls: dict[str, Callable[[], object]] = {}
    outputs = []
    for plan in plans:
        layer = tt_jax.TTLinear(cfg.in_modes, cfg.out_modes, cfg.rank, direction=plan[1], rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(layer)

        def apply(params, x, graphdef=graphdef):
            return nnx.merge(graphdef, params)(x)

        with _forced(tt_jax.TTLinear, plan):  # applies while tracing
            fwd = jax.jit(apply).lower(params, x).compile()
            train = jax.jit(training_step(apply)).lower(params, x, g).compile()
        outputs.append(np.asarray(fwd(params, x)))
        calls[f"fwd {plan}"] = lambda fwd=fwd, params=params: jax.block_until_ready(fwd(params, x))
        calls[f"step {plan}"] = lambda train=train, params=params: jax.block_until_ready(train(params, x, g))
    _check_same(outputs, plans)
    return {name: median for name, (median, _) in timing.interleaved(calls, rounds).items()}


def time_torch(cfg: LayerConfig, batch: int, plans: list[Plan], rounds: int) -> dict[str, float]:
    import torch

    import tt_torch

    torch.manual_seed(0)
    x = torch.randn(batch, cfg.shape.in_features, requires_grad=True)
    g = torch.randn(batch, cfg.shape.out_features)
    calls: dict[str, Callable[[], object]] = {}
    outputs = []
    first = None
    for plan in plans:
        layer = tt_torch.TTLinear(cfg.in_modes, cfg.out_modes, cfg.rank, direction=plan[1])
        if first is None:
            first = layer
        else:  # every plan's layer holds the same cores
            layer.load_state_dict(first.state_dict())

        def fwd(layer=layer, plan=plan):
            with _forced(tt_torch.TTLinear, plan), torch.no_grad():
                return layer(x)

        def step(layer=layer, plan=plan):
            layer.zero_grad(set_to_none=True)
            x.grad = None
            with _forced(tt_torch.TTLinear, plan):
                layer(x).backward(g)

        calls[f"fwd {plan}"], calls[f"step {plan}"] = fwd, step
        outputs.append(fwd().numpy())
    _check_same(outputs, plans)
    return {name: median for name, (median, _) in timing.interleaved(calls, rounds).items()}


def _print_table(cfg: LayerConfig, batch: int, plans: list[Plan], times: dict) -> None:
    frameworks = list(times)
    header = ["plan", "model cost / torch's plan's", "largest merged core"]
    header += [f"{fw} {what}" for fw, what in itertools.product(frameworks, ("fwd", "fwd+bwd"))]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    libraries = library_plans(cfg.shape, batch)
    base = plan_cost(cfg.shape, batch, *libraries["torch"])
    for plan in plans:
        mark = "".join(f" ({fw}'s)" for fw, own in libraries.items() if own == plan)
        largest = max(math.prod(s) for s in merged_shape(cfg.shape, plan[0]).core_shapes)
        row = [f"{plan[0]} {plan[1]}{mark}", f"{plan_cost(cfg.shape, batch, *plan) / base:.2f}", f"{largest:,}"]
        row += [f"{times[fw][f'{what} {plan}']:.3g}" for fw in frameworks for what in ("fwd", "step")]
        print("| " + " | ".join(row) + " |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", nargs="+", default=["25088-4096", "32768-8192", "3072-32768", "784-262144"])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--max-core-size", type=int, default=2**20)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--frameworks", nargs="+", choices=["jax", "torch"], default=["jax", "torch"])
    args = p.parse_args(argv)
    print(f"load average before: {timing.load_average()}", flush=True)
    for name in args.layers:
        cfg = get(name)
        plans = candidate_plans(cfg, args.batch, args.top, args.max_core_size)
        times = {fw: (time_jax if fw == "jax" else time_torch)(cfg, args.batch, plans, args.rounds)
                 for fw in args.frameworks}
        print(f"\n`{name}` batch {args.batch}; median ms, {args.rounds} interleaved rounds\n")
        _print_table(cfg, args.batch, plans, times)
    print(f"\nload average after: {timing.load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
