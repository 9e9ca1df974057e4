"""Probe (not part of the benchmark run): XLA:CPU's choice of matmul library for our JAX layer's dots.

jaxlib 0.10 hands single dots (and reductions) to YNNPACK by default: the compiled training step of
``32768-8192`` at batch 100 holds 10 ``__ynn_fusion`` calls next to 5 plain (Eigen) dots, the ones whose layouts
YNNPACK does not take (a contracting dimension first). XLA's debug option ``xla_cpu_experimental_ynn_fusion_type``
chooses what goes to YNNPACK. This times our ``tt_jax.TTLinear`` (forward and training step, as
``benchmarks.run`` builds them) compiled with each setting of :data:`SETTINGS`, and torch's ``tt_torch.TTLinear``
beside them, interleaved: one call of each in turn per round, median and min over the rounds. The options are
passed to ``Lowered.compile`` for these compilations only, so all settings run in one process.

    python -m benchmarks.proposals.xla_cpu_options                      # six layers, batches 100 and 1000
    python -m benchmarks.proposals.xla_cpu_options --layers 32768-8192 --batches 100 --rounds 9

The same settings apply to any program through ``XLA_FLAGS``, e.g.
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE``. Results: ``README.md`` section 8.
"""

from __future__ import annotations

import argparse
import time

from benchmarks import candidates_jax, candidates_torch
from benchmarks.layers import LAYERS, get
from benchmarks.timing import cpu_model, interleaved, load_average

__all__ = ["SETTINGS", "run"]

YNN = "xla_cpu_experimental_ynn_fusion_type"
SETTINGS: dict[str, dict[str, str] | None] = {
    "default": None,  # as shipped: YNNPACK for single dots and for reductions
    "eigen dots": {YNN: "LIBRARY_FUSION_TYPE_REDUCE"},  # every dot through XLA's own (Eigen) kernels
    "ynn fusions": {YNN: "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"},
    "no ynn": {YNN: ""},  # neither dots nor reductions
}


def _cell(median_min: tuple[float, float]) -> str:
    median, low = median_min
    return f"{median:.3g} / {low:.3g}"


def run(layers: list[str], batches: list[int], rounds: int) -> str:
    """The markdown table of every (layer, batch, pass): each setting's and torch's median / min ms."""
    names = list(SETTINGS)
    lines = [
        f"| layer | batch | pass | {' | '.join(f'JAX {n}' for n in names)} | torch | best setting / default "
        "| best JAX / torch |",
        "|---|---:|---|" + "---:|" * (len(names) + 3),
    ]
    for layer in layers:
        cfg = get(layer)
        for batch in batches:
            built = {name: candidates_jax.build_ours(cfg, batch, "cpu", compiler_options=options)
                     for name, options in SETTINGS.items()}
            built["torch"] = candidates_torch.build_ours(cfg, batch, "cpu")
            for pass_ in ("fwd", "fwd+bwd"):
                calls = {n: (b.forward if pass_ == "fwd" else b.train_step) for n, b in built.items()}
                result = interleaved(calls, rounds, warmup=2)
                best = min(names, key=lambda n: result[n][0])
                cells = " | ".join(_cell(result[n]) for n in [*names, "torch"])
                gain = result["default"][0] / result[best][0]
                row = (f"| `{layer}` | {batch} | {pass_} | {cells} | {best}: {gain:.2f}x "
                       f"| {result[best][0] / result['torch'][0]:.2f} |")
                print(row, flush=True)
                lines.append(row)
            del built
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m benchmarks.proposals.xla_cpu_options",
                                description=__doc__.split("\n\n")[0])
    names = [layer.name for layer in LAYERS]
    p.add_argument("--layers", nargs="+", choices=names, default=names)
    p.add_argument("--batches", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--rounds", type=int, default=5, help="timed calls of each candidate (default 5)")
    p.add_argument("--out", help="also write the markdown here")
    args = p.parse_args(argv)
    before = load_average()
    start = time.perf_counter()
    table = run(args.layers, args.batches, args.rounds)
    head = (f"Median / min ms over {args.rounds} interleaved rounds; cpu {cpu_model()}; load average before "
            f"{before}, after {load_average()}; {time.perf_counter() - start:.0f} s. Settings: "
            + "; ".join(f"{n}: {o}" for n, o in SETTINGS.items()))
    text = f"{head}\n\n{table}\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(head)
    return text


if __name__ == "__main__":
    main()
