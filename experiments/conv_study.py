"""A convolutional network on CIFAR-10 with its convolutions and classifier in TT form, against the same network
dense (issue #40, item 5), in both backends.

    python -m experiments.conv_study --backend torch                  # every setting, 10 epochs each
    python -m experiments.conv_study --backend jax --settings dense tt-r8
    python -m experiments.conv_study --backend torch --epochs 1 --limit 512 --results /tmp/r   # a smoke run

The network and the recipe are :mod:`experiments.conv_net`'s (Adam 0.003 with a cosine decay, batch 128, random
crops and flips); settings are the dense network and its TT version at ranks 16, 8 and 4 (11x, 26x and 74x fewer
parameters). The TT convolutions run with ``order="kernel"`` (the kernel built from the cores, then the dense
convolution: the same function as the other orders, several times faster on a CPU at these channel counts).
Each run writes ``experiments/results/conv-cifar/<setting>-<backend>/``: ``config.json``, ``metrics.jsonl``
(one line per epoch) and, once finished, ``summary.json``; a finished run is skipped, an unfinished one trained
anew. ``python -m experiments.report`` puts the table and the plot into ``experiments/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

from experiments.cli import add_debug_flag, user_errors
from experiments.conv_net import ConvNet, Recipe, augment
from experiments.data import Dataset, iterate_batches, load_dataset, num_batches
from experiments.machine import cpu_description, cpu_model
from experiments.studies import RESULTS_DIR

__all__ = ["SETTINGS", "STUDY", "main", "plot", "run_setting", "section"]

STUDY = "conv-cifar"
SETTINGS: dict[str, ConvNet] = {n.name: n for n in (ConvNet(None), ConvNet(16), ConvNet(8), ConvNet(4))}
EVAL_BATCH = 1000
THESIS_BEST_CIFAR = 72.92  # the thesis's best CIFAR-10 network (4xTT-FC, 225K parameters), fully connected
GOAL_RATIO, GOAL_POINTS = 20, 2.0


def _trainer(backend: str, spec: ConvNet, recipe: Recipe):
    if backend == "torch":
        from experiments.conv_torch import Trainer
    else:
        from experiments.conv_jax import Trainer
    return Trainer(spec, recipe)


def _device(backend: str) -> str:
    cpu = cpu_description(cpu_model())
    if backend == "torch":
        import torch

        return f"torch {torch.__version__} cpu ({cpu}), {torch.get_num_threads()} threads"
    import jax

    return f"jax {jax.__version__} {jax.devices()[0].platform} ({cpu})"


def _accuracy(trainer, x: np.ndarray, y: np.ndarray) -> float:
    return sum(trainer.correct(xb, yb) for xb, yb in iterate_batches(x, y, EVAL_BATCH, shuffle=False)) / len(y)


def run_setting(setting: str, backend: str, *, recipe: Recipe | None = None, results: Path = RESULTS_DIR,
                limit: int | None = None, max_batches: int | None = None, data: Dataset | None = None,
                log=print) -> dict:
    """Trains ``setting`` with ``backend`` into ``results/conv-cifar/<setting>-<backend>/``; its summary.

    ``recipe`` defaults to :class:`experiments.conv_net.Recipe`'s; ``data``: NHWC CIFAR-10 splits (default:
    :func:`experiments.data.load_dataset`'s, ``limit`` examples each).
    """
    recipe = Recipe() if recipe is None else recipe
    spec = SETTINGS[setting]
    out = results / STUDY / f"{setting}-{backend}"
    summary_path = out / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["epochs"] == recipe.epochs and summary.get("limit") == limit:
            log(f"{out.name}: finished, skipped")
            return summary
    data = load_dataset("cifar10", flatten=False, limit=limit) if data is None else data
    if len(data.y_train) < recipe.batch_size:
        raise ValueError(f"batch_size {recipe.batch_size} is larger than the {len(data.y_train)} training images")
    trainer = _trainer(backend, spec, recipe)
    params = trainer.param_count()
    if params != spec.param_count():
        raise AssertionError(f"{setting}: the built network has {params} parameters, the spec {spec.param_count()}")
    out.mkdir(parents=True, exist_ok=True)
    config = {"setting": setting, "backend": backend, "network": spec.describe(), "params": params,
              "recipe": dataclasses.asdict(recipe), "dataset": data.name, "limit": limit, "max_batches": max_batches,
              "device": _device(backend), "python": platform.python_version()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    steps = num_batches(len(data.y_train), recipe.batch_size, drop_last=True)
    steps = min(steps, max_batches) if max_batches else steps
    rng = np.random.default_rng([recipe.seed, 40])
    records = []
    for epoch in range(1, recipe.epochs + 1):
        start, loss, correct, seen = time.perf_counter(), 0.0, 0, 0
        batches = iterate_batches(data.x_train, data.y_train, recipe.batch_size, seed=recipe.seed, epoch=epoch,
                                  drop_last=True)
        for step, (xb, yb) in zip(range(steps), batches):
            lr = recipe.learning_rate_at((epoch - 1) * steps + step, steps)
            batch_loss, batch_correct = trainer.train_step(augment(xb, rng, recipe.crop_padding), yb, lr)
            loss, correct, seen = loss + batch_loss, correct + batch_correct, seen + len(yb)
        train_time = time.perf_counter() - start
        record = {"epoch": epoch, "train_loss": loss / seen, "train_acc": correct / seen,
                  "val_acc": _accuracy(trainer, data.x_val, data.y_val),
                  "test_acc": _accuracy(trainer, data.x_test, data.y_test), "train_time_s": train_time}
        records.append(record)
        with metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log(f"{out.name} epoch {epoch}/{recipe.epochs}: loss {record['train_loss']:.4f}, val "
            f"{100 * record['val_acc']:.2f}%, test {100 * record['test_acc']:.2f}% ({train_time:.0f} s)")
    chosen = max(records, key=lambda r: (r["val_acc"], r["epoch"]))
    summary = {"setting": setting, "backend": backend, "params": params, "epochs": recipe.epochs, "limit": limit,
               "chosen_epoch": chosen["epoch"], "val_acc": chosen["val_acc"], "test_acc": chosen["test_acc"],
               "final_test_acc": records[-1]["test_acc"], "best_test_acc": max(r["test_acc"] for r in records),
               "train_time_per_epoch_s": float(np.median([r["train_time_s"] for r in records])),
               "dataset": data.name, "device": config["device"]}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _summaries(results: Path) -> dict[tuple[str, str], dict]:
    found = {}
    for setting in SETTINGS:
        for backend in ("torch", "jax"):
            path = results / STUDY / f"{setting}-{backend}" / "summary.json"
            if path.exists():
                found[setting, backend] = json.loads(path.read_text())
    return found


def section(results: Path = RESULTS_DIR, plot_link: str | None = None) -> list[str]:
    """The study's part of ``experiments/RESULTS.md``: the table, the goal and the plot."""
    found = _summaries(results)
    lines = [f"## {STUDY}: a convolutional network on CIFAR-10, dense and with TT convolutions (issue #40)", "",
             (f"Run with `python -m experiments.conv_study --backend torch|jax` (`experiments/conv_study.py`). "
              f"{_describe()}"), ""]
    if not found:
        return [*lines, "No run recorded yet.", ""]
    lines += [("| setting | backend | params | ratio | test acc (epoch chosen on val) | final test acc | "
               "best test acc | epochs | time/epoch (train) | device |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    dense = SETTINGS["dense"].param_count()
    for (setting, backend), s in found.items():
        lines.append(f"| {setting} | {backend} | {s['params']:,} | {dense / s['params']:.1f}x | "
                     f"{100 * s['test_acc']:.2f} (ep {s['chosen_epoch']}) | {100 * s['final_test_acc']:.2f} | "
                     f"{100 * s['best_test_acc']:.2f} | {s['epochs']} | {s['train_time_per_epoch_s']:.0f} s | "
                     f"{s['device']} |")
    lines += ["", ("Goal: a TT network with at most 1/20 of the dense network's parameters within 2 points of it "
                   "(test accuracy at the epoch chosen on validation, same backend), both far above the thesis's fully "
                   f"connected {THESIS_BEST_CIFAR}%:"), ""]
    for backend in ("torch", "jax"):
        base = found.get(("dense", backend))
        small = [(s["test_acc"], name) for (name, b), s in found.items()
                 if b == backend and name != "dense" and dense / s["params"] >= GOAL_RATIO]
        if base is None or not small:
            lines.append(f"- {backend}: not measured (needs the dense run and a TT run at >= {GOAL_RATIO}x).")
            continue
        acc, name = max(small)
        gap = 100 * (base["test_acc"] - acc)
        met = "met" if gap <= GOAL_POINTS and 100 * acc > THESIS_BEST_CIFAR else "NOT met"
        lines.append(f"- {backend}: `{name}` ({dense / SETTINGS[name].param_count():.0f}x fewer parameters) "
                     f"{100 * acc:.2f}% against the dense {100 * base['test_acc']:.2f}%, {gap:+.2f} points: {met}.")
    lines.append("")
    if plot_link:
        lines += [f"![{STUDY}: test accuracy against parameters]({plot_link})", ""]
    return lines


def _describe() -> str:
    recipe = Recipe()
    return (f"Dataset: CIFAR-10 (JPEG q75 copy), 5,000 training images held out for validation. Network: "
            f"{SETTINGS['dense'].describe()} ({SETTINGS['dense'].param_count():,} parameters); TT settings: "
            f"{SETTINGS['tt-r8'].describe().replace('TT rank 8', 'TT rank r')}. Recipe: Adam lr "
            f"{recipe.learning_rate} with a cosine decay to 0, batch {recipe.batch_size}, {recipe.epochs} epochs, "
            f"random {recipe.crop_padding}-pixel crops and horizontal flips, seed {recipe.seed}; LeCun normal init "
            "(the TT layers' variance-exact one). TT convolutions run with `order=\"kernel\"`. Single-threaded on "
            "one core of a shared 2-core VM.")


def plot(results: Path = RESULTS_DIR) -> Path | None:
    """``results/conv-cifar/accuracy-vs-params.png``: test accuracy against parameters, one line per backend."""
    found = _summaries(results)
    if not found:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for backend, style in (("torch", "-"), ("jax", "--")):
        points = sorted((s["params"], 100 * s["test_acc"]) for (_, b), s in found.items() if b == backend)
        if points:
            ax.plot(*zip(*points), marker="o", linestyle=style, label=f"{backend} (epoch chosen on validation)")
    ax.axhline(THESIS_BEST_CIFAR, color="gray", linewidth=0.8, label="thesis's best (fully connected TT), 72.92%")
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy (%)", title="CIFAR-10 (JPEG q75 copy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    path = results / STUDY / "accuracy-vs-params.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.conv_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("jax", "torch"), default="torch")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--epochs", type=int, default=Recipe.epochs)
    p.add_argument("--limit", type=int, help="examples per split (smoke runs)")
    p.add_argument("--max-batches", type=int, help="training batches per epoch (smoke runs)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    with user_errors(args.debug):
        if args.epochs < 1:
            raise ValueError(f"--epochs must be positive, got {args.epochs}")
        recipe = Recipe(epochs=args.epochs)
        return [run_setting(s, args.backend, recipe=recipe, results=args.results, limit=args.limit,
                            max_batches=args.max_batches) for s in args.settings]


if __name__ == "__main__":
    main()
