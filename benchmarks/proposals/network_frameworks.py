"""Probe (not part of the benchmark run): one network's training step in JAX and in torch, side by side, in parts.

The MNIST networks with a 262,144-wide hidden layer train slower per epoch in JAX than in torch. This probe
builds the same experiments network in both backends (seed 0, SGD momentum as in the MNIST studies, freed memory
retained as the training CLIs do) and times, interleaved over rounds on one real batch (batch 100):

- ``step``: the backend's whole training step (``experiments.backend_*.train_step``), synchronized;
- ``layer k``: layer k alone, forward and backward (gradients of its parameters and its input);
- ``bn+relu k``: batch norm k in training mode and the ReLU after it (if any), forward and backward;
- ``update``: the optimizer's update alone, from gradients computed once.

The parts run on the activations the network feeds them, so their sum against ``step`` shows what the whole
step adds (loss, glue, dispatch). Run from the repository root on a quiet machine::

    python -m benchmarks.proposals.network_frameworks --model tt-fc --rounds 7

Results: ``README.md`` section 15.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import numpy as np

from benchmarks.timing import interleaved, machine_info
from experiments.data import load_dataset
from experiments.optim import OptimizerConfig
from experiments.presets import get_preset
from experiments.train import retain_freed_memory_for


def _jax_parts(backend, x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[], object]]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model, spec = backend.model, backend.model.spec
    model.train()

    @functools.partial(nnx.jit, static_argnames="relu")
    def fwd_bwd(module, inputs, cotangent, relu=False):
        def loss(m, v):
            out = m(v)
            return jnp.vdot(jax.nn.relu(out) if relu else out, cotangent)

        # The value needs the output, so it is computed, as in torch and in a whole step (nnx.grad alone
        # let XLA skip a linear block's output: the gradients do not need it).
        return nnx.value_and_grad(loss, argnums=(0, 1))(module, inputs)

    @nnx.jit
    def grads_of(m, inputs, labels):
        from experiments.backend_jax import _loss_and_correct

        return nnx.grad(lambda mm: _loss_and_correct(mm, inputs, labels)[0])(m)

    @nnx.jit
    def update(optimizer, m, grads):
        optimizer.update(m, grads)

    rng = np.random.default_rng(0)
    calls: dict[str, Callable[[], object]] = {}
    h = jnp.asarray(x)
    blocks = len(spec.layers)
    for k in range(blocks):
        layer, bn = model.layers[2 * k], model.layers[2 * k + 1]
        out = layer(h)
        ct_layer = jnp.asarray(rng.standard_normal(out.shape, dtype=np.float32))
        calls[f"layer {k}"] = lambda layer=layer, h=h, ct=ct_layer: jax.block_until_ready(fwd_bwd(layer, h, ct))
        relu = k < blocks - 1 or spec.relu_after_last
        calls[f"bn+relu {k}" if relu else f"bn {k}"] = (
            lambda bn=bn, out=out, ct=ct_layer, relu=relu: jax.block_until_ready(fwd_bwd(bn, out, ct, relu=relu)))
        h = bn(out)
        h = jax.nn.relu(h) if relu else h
    grads = grads_of(model, jnp.asarray(x), jnp.asarray(y))
    calls["update"] = lambda: jax.block_until_ready(update(backend.optimizer, model, grads))
    return calls


def _torch_parts(backend, x: np.ndarray, y: np.ndarray) -> dict[str, Callable[[], object]]:
    import torch

    model, spec = backend.model, backend.model.spec
    model.train()
    rng = np.random.default_rng(0)

    def fwd_bwd(module, inputs, cotangent, relu):
        inputs = inputs.detach().requires_grad_(True)
        out = module(inputs)
        out = torch.relu(out) if relu else out
        out.backward(cotangent)
        module.zero_grad(set_to_none=True)

    calls: dict[str, Callable[[], object]] = {}
    h = torch.from_numpy(x)
    blocks = len(spec.layers)
    with torch.no_grad():
        for k in range(blocks):
            layer, bn = model.layers[2 * k], model.layers[2 * k + 1]
            out = layer(h)
            ct = torch.from_numpy(rng.standard_normal(tuple(out.shape), dtype=np.float32))
            calls[f"layer {k}"] = lambda layer=layer, h=h, ct=ct: fwd_bwd(layer, h, ct, False)
            relu = k < blocks - 1 or spec.relu_after_last
            calls[f"bn+relu {k}" if relu else f"bn {k}"] = lambda bn=bn, out=out, ct=ct, relu=relu: fwd_bwd(
                bn, out, ct, relu)
            h = bn(out)
            h = torch.relu(h) if relu else h
    logits = model(torch.from_numpy(x))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
    grads = [(p, p.grad) for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    def update():
        for param, grad in grads:  # the parts above clear their layers' gradients: put these back first
            param.grad = grad
        backend.optimizer.step()

    calls["update"] = update
    return calls


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.proposals.network_frameworks")
    p.add_argument("--model", default="tt-fc")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args(argv)
    retained = retain_freed_memory_for([args.model])
    spec = get_preset(args.model)
    data = load_dataset(spec.dataset, limit=args.batch_size)
    x, y = data.x_train[: args.batch_size], data.y_train[: args.batch_size]
    optimizer = OptimizerConfig("sgd", learning_rate=1e-3, momentum=0.9)

    from experiments.backend_jax import JaxBackend
    from experiments.backend_torch import TorchBackend

    backends = {"jax": JaxBackend(spec, optimizer, 0), "torch": TorchBackend(spec, optimizer, 0)}

    calls = {f"step/{name}": (lambda b=b: float(b.train_step(x, y)[0])) for name, b in backends.items()}
    calls.update({f"{part}/{name}": call for name, b in backends.items()
                  for part, call in (_jax_parts if name == "jax" else _torch_parts)(b, x, y).items()})
    # two untimed rounds (compile, allocate); a pause after each call lets its freed memory and threads settle
    times = interleaved(calls, args.rounds, warmup=2, pause_s=0.05)
    print(f"{args.model}, batch {args.batch_size}, {args.rounds} interleaved rounds, freed memory retained: "
          f"{retained}; {machine_info()}")
    print("\n| part | jax median (min) ms | torch median (min) ms | jax / torch |\n|---|---:|---:|---:|")
    sums = {"jax": 0.0, "torch": 0.0}
    for part in dict.fromkeys(key.split("/")[0] for key in calls):
        (med_j, low_j), (med_t, low_t) = times[f"{part}/jax"], times[f"{part}/torch"]
        if part != "step":
            sums = {"jax": sums["jax"] + med_j, "torch": sums["torch"] + med_t}
        print(f"| {part} | {med_j:.1f} ({low_j:.1f}) | {med_t:.1f} ({low_t:.1f}) | {med_j / med_t:.2f} |")
    print(f"| sum of parts | {sums['jax']:.1f} | {sums['torch']:.1f} | {sums['jax'] / sums['torch']:.2f} |")


if __name__ == "__main__":
    main()
