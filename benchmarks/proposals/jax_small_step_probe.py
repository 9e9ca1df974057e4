"""Probe (not part of the benchmark run): other JAX forms for the steps with thousands of small products.

On ``25088-4096``, ``32768-8192`` and ``3072-32768`` at batch 100/1000 a step multiplies a small ``(p, q)``
core into thousands of ``(q, s)`` slices of the state; JAX trails torch there. This times, per step shape
(interleaved, median of 7), the forward and the forward with its VJP of:

- ``broadcast``: the library's form (``tt_jax.functional._matmul``: a batched ``dot_general`` over the broadcast core),
  differentiated by JAX;
- ``reduce``: ``sum(core[None, :, :, None] * state[:, None], axis=2)``, a multiply-reduce fusion;
- ``transposed``: the library's other form (``_matmul`` with its rule forced: one plain dot, transposed result);
- custom VJPs whose backward computes ``d_core`` as one GEMM over ``(outer, s)`` and ``d_state`` with the
  broadcast or the reduce form, and whose forward is the broadcast or the reduce form;

and torch's ``matmul`` (one ``bmm`` over a stride-0 core) on the same shapes. Results and conclusion:
``README.md`` section 7. Run from the repository root::

    python -m benchmarks.proposals.jax_small_step_probe
"""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import torch

import tt_jax.functional as tt_layer
from benchmarks.jax_step_forms import FORMS as LIBRARY_RULES, _interleaved_medians
from benchmarks.timing import measure

SHAPES = [  # (p, q, outer, s): core (p, q), state (outer, q, s); the first seven are batch-100 steps
    (16, 32, 11200, 16), (16, 32, 1400, 64), (16, 56, 100, 256),  # 25088-4096
    (32, 32, 3200, 64), (128, 64, 100, 512),  # 32768-8192
    (32, 16, 6400, 24), (256, 32, 100, 96),  # 3072-32768
    (64, 32, 1000, 256), (16, 32, 112000, 16),  # batch 1000
]


def _library_step(form: str):
    """``tt_jax.functional._matmul`` of the core and the state with its rule forced to ``form``."""

    def step(core, state):
        with mock.patch.object(tt_layer, "_broadcast_is_cheaper", LIBRARY_RULES[form]):  # applies while tracing
            return tt_layer._matmul(core[None], state)

    return step


broadcast, transposed = _library_step("broadcast"), _library_step("transposed")


def reduce_(core, state):
    return jnp.sum(core[None, :, :, None] * state[:, None, :, :], axis=2)


def custom_vjp(forward, state_gradient):
    @jax.custom_vjp
    def step(core, state):
        return forward(core, state)

    def step_fwd(core, state):
        return forward(core, state), (core, state)

    def step_bwd(residuals, g):
        core, state = residuals
        d_core = jax.lax.dot_general(g, state, (((0, 2), (0, 2)), ((), ())))  # one GEMM over (outer, s)
        return d_core, state_gradient(core.T, g)

    step.defvjp(step_fwd, step_bwd)
    return step


FORMS = {
    "broadcast": broadcast,
    "reduce": reduce_,
    "transposed": transposed,
    "cvjp bcast/bcast": custom_vjp(broadcast, broadcast),
    "cvjp reduce/bcast": custom_vjp(reduce_, broadcast),
    "cvjp reduce/reduce": custom_vjp(reduce_, reduce_),
}


def _with_vjp(form):
    def step(core, state, g):
        out, pullback = jax.vjp(form, core, state)
        return (out, *pullback(g))

    return step


def _torch_medians(p: int, q: int, outer: int, s: int, repeats: int = 7) -> dict[str, float]:
    core = torch.randn(p, q, requires_grad=True)
    state = torch.randn(outer, q, s, requires_grad=True)
    g = torch.randn(outer, p, s)

    def fwd():
        with torch.no_grad():
            return torch.matmul(core[None], state)

    def fwd_vjp():
        return torch.autograd.grad(torch.matmul(core[None], state), (core, state), g)

    fixed = dict(warmup=1, repeats=repeats, min_repeats=repeats, budget_s=float("inf"))
    return {"fwd": measure(fwd, **fixed).median_ms, "fwd+vjp": measure(fwd_vjp, **fixed).median_ms}


def main() -> None:
    print("| p, q, outer, s | pass | " + " | ".join(FORMS) + " | torch matmul |")
    print("|---" * (len(FORMS) + 3) + "|")
    for p, q, outer, s in SHAPES:
        keys = jax.random.split(jax.random.key(0), 3)
        core, state = jax.random.normal(keys[0], (p, q)), jax.random.normal(keys[1], (outer, q, s))
        g = jax.random.normal(keys[2], (outer, p, s))
        expected = None
        calls = {}
        for name, form in FORMS.items():
            got = [np.asarray(a, np.float64) for a in jax.jit(_with_vjp(form))(core, state, g)]
            expected = expected or got
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max(), err_msg=name)
            calls[f"fwd:{name}"] = (jax.jit(form).lower(core, state).compile(), (core, state))
            calls[f"fwd+vjp:{name}"] = (jax.jit(_with_vjp(form)).lower(core, state, g).compile(), (core, state, g))
        jax_ms, torch_ms = _interleaved_medians(calls, 7), _torch_medians(p, q, outer, s)
        for kind in ("fwd", "fwd+vjp"):
            cells = [f"{jax_ms[f'{kind}:{name}']:.3g}" for name in FORMS] + [f"{torch_ms[kind]:.3g}"]
            print(f"| {p}, {q}, {outer}, {s} | {kind} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
