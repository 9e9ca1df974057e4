"""The two JAX forms of one contraction step, timed side by side on every step of the benchmark layers.

A step multiplies a ``(p, q)`` core into a ``(B, q, s)`` state (``B`` = ``outer``).
``tt_jax.functional._matmul`` runs it as a batched ``dot_general`` over the core
broadcast to ``(B, p, q)`` (XLA:CPU materializes it) or, where
``tt_jax.functional._broadcast_is_cheaper`` says the broadcast moves too much memory,
as one plain dot with a transposed result. This prints, for every distinct step
of the six layers at batches 1, 100 and 1000, both forms' forward and
forward+backward times (interleaved, median of 9) and the form the rule picks::

    python -m benchmarks.jax_step_forms

Steps timed alone: a layer's steps also fuse with their neighbours, so check a
change of the rule on whole layers too: ``--layers`` times every TT layer of the
experiments' networks whose plan the rule changes at batch 100, with the rule
and with the broadcast forced everywhere (``proposals/README.md`` section 6)::

    python -m benchmarks.jax_step_forms --layers
"""

from __future__ import annotations

import argparse
from unittest import mock

import jax
import jax.numpy as jnp
from flax import nnx

import tt_jax
import tt_jax.functional as tt_layer
from benchmarks import timing
from benchmarks.candidates_jax import training_step
from benchmarks.layers import LAYERS


def _trace_layer(shape, batch: int) -> None:
    """Traces (no compile, no run) the jitted forward of a ``tt_jax.TTLinear`` of ``shape`` at ``batch``."""
    graphdef, params = nnx.split(tt_jax.TTLinear(shape.in_modes, shape.out_modes, shape.ranks, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((batch, shape.in_features), jnp.float32)
    jax.eval_shape(lambda p, x: nnx.merge(graphdef, p)(x), params, x)


def step_shapes(batches=(1, 100, 1000)) -> dict[tuple, str]:
    """``((p, q), (B, q, s)) -> first layer and batch using it`` for every broadcast step of the layers."""
    shapes: dict[tuple, str] = {}
    original = tt_layer._matmul

    def record(a, b, **kwargs):
        if a.ndim == 3 and b.ndim == 3 and a.shape[0] == 1 and b.shape[0] != 1:
            shapes.setdefault((a.shape[1:], b.shape), where)
        return original(a, b, **kwargs)

    for cfg in LAYERS:
        for batch in batches:
            where = f"{cfg.name} B={batch}"
            with mock.patch.object(tt_layer, "_matmul", record):
                _trace_layer(cfg.shape, batch)
    return shapes


FORMS = {"broadcast": lambda *shape: True, "transposed": lambda *shape: False}  # the rule, forced


def _new_step():
    """The library's step, ``tt_jax.functional._matmul`` of the core (as ``(1, p, q)``) and the state.

    A new function each call: ``jax.jit`` caches traces per function, and each form must be traced anew.
    """
    return lambda core, state: tt_layer._matmul(core[None], state)


def _interleaved_medians(calls: dict, repeats: int) -> dict[str, float]:
    """Median ms of each ``name -> (compiled function, args)``, one call of each in turn per round."""
    blocking = {k: (lambda fn=fn, args=args: jax.block_until_ready(fn(*args))) for k, (fn, args) in calls.items()}
    return {k: median for k, (median, _) in timing.interleaved(blocking, repeats).items()}


def time_step(p: int, q: int, outer: int, s: int, repeats: int = 9) -> dict[str, float]:
    """Median ms of each form's forward (``fwd:*``) and forward+backward (``step:*``), interleaved.

    Both forms are the library's own step with its rule forced one way (:data:`FORMS`).
    """
    key = jax.random.key(0)
    core, state = jax.random.normal(key, (p, q)), jax.random.normal(key, (outer, q, s))
    cotangent = jax.random.normal(key, (outer, p, s))
    calls = {}
    for name, rule in FORMS.items():
        with mock.patch.object(tt_layer, "_broadcast_is_cheaper", rule):  # applies while tracing
            calls[f"fwd:{name}"] = (jax.jit(_new_step()).lower(core, state).compile(), (core, state))
            step = jax.jit(training_step(_new_step())).lower(core, state, cotangent).compile()
            calls[f"step:{name}"] = (step, (core, state, cotangent))
    return _interleaved_medians(calls, repeats)


def rule_changes(shape, batch: int) -> bool:
    """Whether ``tt_jax`` takes the transposed form for any step of ``shape`` at ``batch``."""
    calls = []
    original = tt_layer._broadcast_is_cheaper

    def spy(*args):
        calls.append(original(*args))
        return calls[-1]

    with mock.patch.object(tt_layer, "_broadcast_is_cheaper", spy):
        _trace_layer(shape, batch)
    return not all(calls)


def time_layer(shape, batch: int, repeats: int = 7) -> dict[str, float]:
    """Median ms of the jitted layer's forward and VJP, with the rule (``*:rule``) and broadcasting always."""
    layer = tt_jax.TTLinear(shape.in_modes, shape.out_modes, shape.ranks, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    key = jax.random.key(0)
    x = jax.random.normal(key, (batch, shape.in_features))
    cotangent = jax.random.normal(key, (batch, shape.out_features))

    calls = {}
    for name, patch in (("broadcast", FORMS["broadcast"]), ("rule", tt_layer._broadcast_is_cheaper)):
        def apply(params, x):  # new functions per form: jax.jit caches traces per function
            return nnx.merge(graphdef, params)(x)

        with mock.patch.object(tt_layer, "_broadcast_is_cheaper", patch):
            calls[f"fwd:{name}"] = (jax.jit(apply).lower(params, x).compile(), (params, x))
            step = jax.jit(training_step(apply)).lower(params, x, cotangent).compile()
            calls[f"step:{name}"] = (step, (params, x, cotangent))
    return _interleaved_medians(calls, repeats)


def main_layers(batch: int = 100) -> None:
    from experiments.presets import PRESETS, TT

    print("| network (first using the layer) | layer | fwd ms: broadcast -> rule | fwd+bwd ms: broadcast -> rule |")
    print("|---|---|---|---|")
    seen = set()
    for net in PRESETS.values():
        for layer in net.layers:
            if not isinstance(layer, TT) or layer.shape in seen or not rule_changes(layer.shape, batch):
                continue
            seen.add(layer.shape)
            t = time_layer(layer.shape, batch)
            cells = [f"{t[f'{k}:broadcast']:.3g} -> {t[f'{k}:rule']:.3g} ({t[f'{k}:broadcast'] / t[f'{k}:rule']:.2f}x)"
                     for k in ("fwd", "step")]
            shape = layer.shape
            print(f"| {net.name} | {shape.in_modes} -> {shape.out_modes}, ranks {shape.ranks[1:-1]} "
                  f"| {cells[0]} | {cells[1]} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", action="store_true", help="time whole layers the rule changes, not single steps")
    parser.add_argument("--batch", type=int, default=100, help="batch of --layers (default 100)")
    args = parser.parse_args()
    if args.layers:
        main_layers(args.batch)
        return
    print("| step (first layer using it) | outer, q, s, p | rule picks | fwd ms: broadcast -> transposed "
          "| fwd+bwd ms: broadcast -> transposed |")
    print("|---|---|---|---|---|")
    for ((p, q), (outer, _, s)), where in sorted(step_shapes().items(), key=lambda kv: kv[1]):
        t = time_step(p, q, outer, s)
        rule = "broadcast" if tt_layer._broadcast_is_cheaper(q, s, p) else "transposed"
        cells = [f"{t[f'{k}:broadcast']:.3g} -> {t[f'{k}:transposed']:.3g} "
                 f"({t[f'{k}:broadcast'] / t[f'{k}:transposed']:.2f}x)" for k in ("fwd", "step")]
        print(f"| {where} | {outer}, {q}, {s}, {p} | {rule} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
