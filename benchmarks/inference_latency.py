"""Inference latency of the thesis's networks (issue #41, item 4): one table per framework.

Rows: network x batch (1, 32, 1000 by default). Columns, each the median of ``benchmarks.timing.measure``:

- torch: the training form (cores, eval mode), the inference mode (``tt_torch.inference.prepare_inference``
  for that batch), the dense network (every TT layer an ``nn.Linear``), the ONNX export of the inference-mode
  network in onnxruntime (CPU);
- jax: the training form, the inference mode, the dense network (each under ``nnx.jit``), and the
  ``jax.export``'ed callable of the inference-mode network (``Exported.call`` under ``jax.jit``).

Run it on a quiet machine (``python -m benchmarks.inference_latency``); it prints the tables (``--out FILE`` also writes them).
``--dry-run`` builds every variant and calls it once at a tiny size, checks the outputs agree, and times nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from collections.abc import Callable

import numpy as np

from benchmarks.timing import machine_info, measure
from experiments.presets import TT, Dense, Network, get_preset

DEFAULT_NETWORKS = ("tt-tt", "tt-tt-tt", "tt-tt-fc")
DEFAULT_BATCHES = (1, 32, 1000)
# --dry-run: a network small enough to build and run at once (784 -> 64 -> 10).
TINY = Network("tiny", "mnist", (TT((2, 2, 7, 4, 7), (2, 2, 2, 2, 4), 2), TT((4, 4, 4), (5, 2, 1), 2)))


def dense_counterpart(spec: Network) -> Network:
    """``spec`` with every TT layer replaced by a dense layer of the same size."""
    layers = tuple(Dense(layer.in_features, layer.out_features) if isinstance(layer, TT) else layer
                   for layer in spec.layers)
    return dataclasses.replace(spec, name=f"{spec.name}-dense", layers=layers)


def torch_variants(spec: Network, batch: int, workdir: str) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import onnxruntime
    import torch

    from experiments import models_torch
    from tt_torch import export, inference

    def run(model):
        def call(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()
        return call

    tt = models_torch.build(spec).eval()
    dense = models_torch.build(dense_counterpart(spec)).eval()
    prepared = models_torch.build(spec).eval()
    inference.prepare_inference(prepared, batch)
    path = os.path.join(workdir, f"{spec.name}-{batch}.onnx")
    export.to_onnx(prepared, torch.zeros(max(batch, 2), spec.in_features), path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return {"training form": run(tt), "inference mode": run(prepared), "dense network": run(dense),
            "onnxruntime": lambda x: session.run(None, {"input": x})[0]}


def jax_variants(spec: Network, batch: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    import jax
    from flax import nnx

    from experiments import models_jax
    from tt_jax import export, inference

    def run(model):
        model.eval()
        forward = nnx.jit(lambda m, x: m(x))
        return lambda x: np.asarray(jax.block_until_ready(forward(model, x)))

    prepared = models_jax.build(spec)
    inference.prepare_inference(prepared, batch)
    prepared.eval()
    exported = jax.jit(export.export(prepared, np.zeros((batch, spec.in_features), np.float32)).call)
    return {"training form": run(models_jax.build(spec)), "inference mode": run(prepared),
            "dense network": run(models_jax.build(dense_counterpart(spec))),
            "jax.export": lambda x: np.asarray(jax.block_until_ready(exported(x)))}


def table(framework: str, specs: list[Network], batches: tuple[int, ...], dry_run: bool) -> str:
    rows, columns = [], None
    with tempfile.TemporaryDirectory() as workdir:
        for spec in specs:
            for batch in batches:
                variants = torch_variants(spec, batch, workdir) if framework == "torch" else jax_variants(spec, batch)
                columns = list(variants)
                x = np.random.default_rng(0).standard_normal((batch, spec.in_features)).astype(np.float32)
                if dry_run:
                    outputs = [f(x) for f in variants.values()]
                    # the inference mode and its export compute the training form's function
                    for out in outputs[1:2] + outputs[3:]:
                        np.testing.assert_allclose(out, outputs[0], rtol=1e-4, atol=1e-4)
                    cells = ["built, not timed"] * len(variants)
                else:
                    cells = [f"{measure(lambda f=f, x=x: f(x)).median_s * 1e3:.3f}" for f in variants.values()]
                rows.append(f"| {spec.name} | {batch} | " + " | ".join(cells) + " |")
    header = f"| {framework} network | batch | " + " | ".join(f"{c} (ms)" for c in columns) + " |"
    return "\n".join([header, "|" + "---|" * (len(columns) + 2), *rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(DEFAULT_BATCHES))
    parser.add_argument("--frameworks", nargs="+", choices=("torch", "jax"), default=["torch", "jax"])
    parser.add_argument("--dry-run", action="store_true", help="a tiny network, batches 1 and 3, no timing")
    parser.add_argument("--out", help="also write the tables, under the machine's description, to this new file")
    args = parser.parse_args(argv)
    if args.out and os.path.exists(args.out):
        raise SystemExit(f"error: --out {args.out} exists; pick another path or remove it")
    specs = [TINY] if args.dry_run else [get_preset(n) for n in args.networks]
    batches = (1, 3) if args.dry_run else tuple(args.batches)
    tables = []
    for framework in args.frameworks:
        tables.append(table(framework, specs, batches, args.dry_run))
        print(tables[-1], end="\n\n", flush=True)
    if args.out:
        header = ["# Inference latency of the thesis's networks", "",
                  ("Written by `python -m benchmarks.inference_latency`; float32, median ms per call of "
                  "`benchmarks.timing.measure`."), "", *[f"- {k}: {v}" for k, v in machine_info().items()], ""]
        with open(args.out, "x") as f:
            f.write("\n".join(header) + "\n" + "\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
