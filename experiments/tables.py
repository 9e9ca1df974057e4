"""The summary tables of ``experiments/RESULTS.md``: the thesis against each recipe, and the ablation.

Both read the per-epoch metrics of the recorded runs (``metrics.jsonl``), cut at the epoch count the study
plans, so that a study of shorter runs (the CIFAR-10 ablation's 20 epochs) can share runs with a longer one.
Three figures come from one run's metrics:

- ``val``: the test accuracy at the epoch with the best validation accuracy (our protocol; ``None`` without a
  validation holdout);
- ``best``: the best test accuracy over the epochs (the thesis's protocol: the epoch is chosen on the test set);
- ``final``: the test accuracy after the last planned epoch.

>>> rows = [{"epoch": 1, "val_acc": 0.9, "test_acc": 0.91}, {"epoch": 2, "val_acc": 0.95, "test_acc": 0.90},
...         {"epoch": 3, "val_acc": 0.94, "test_acc": 0.93}]
>>> outcome(rows, 3)
Outcome(val=0.9, val_epoch=2, best=0.93, best_epoch=3, final=0.93, epochs=3)
>>> outcome(rows, 1).final, outcome([], 3)
(0.91, None)
>>> format_stats([0.98, 0.982, 0.978])
'98.00 ± 0.20 (3)'
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.presets import get_preset
from experiments.studies import RESULTS_DIR, STUDIES, Study, run_dir
from experiments.train import RunConfig

__all__ = ["Outcome", "ablation_table", "format_stats", "outcome", "thesis_table"]

BACKENDS = ("jax", "torch")


@dataclass(frozen=True)
class Outcome:
    val: float | None
    val_epoch: int | None
    best: float
    best_epoch: int
    final: float
    epochs: int


def outcome(rows: Sequence[dict], epochs: int) -> Outcome | None:
    """The three figures of a run's first ``epochs`` metrics rows; ``None`` before its first epoch."""
    rows = list(rows)[:epochs]
    if not rows:
        return None
    best = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    with_val = [r for r in rows if r.get("val_acc") is not None]
    chosen = max(with_val, key=lambda r: (r["val_acc"], -r["epoch"])) if with_val else None
    return Outcome(None if chosen is None else chosen["test_acc"], None if chosen is None else chosen["epoch"],
                   best["test_acc"], best["epoch"], rows[-1]["test_acc"], len(rows))


def format_stats(values: Sequence[float]) -> str:
    """``mean ± sd (n)`` in percent (the sample standard deviation; no spread for one value)."""
    if not values:
        return "—"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f} ({len(values)})"


def _metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _outcome(study: Study, config: RunConfig, results: Path) -> Outcome | None:
    return outcome(_metrics(run_dir(study, config, results)), config.epochs)


def _planned(study: Study, backend: str, name: str) -> RunConfig | None:
    return next((c for c in study.for_backend(backend) if study.run_name(c) == name), None)


def _cell(study: Study, name: str, backend: str, results: Path, figure: str, full_epochs: int = 0) -> str:
    """One figure of run ``name`` of ``study``, with its epoch and a mark when it has fewer epochs than planned
    (or, with ``full_epochs``, when the study plans a run shorter than the thesis's)."""
    config = _planned(study, backend, name)
    if config is None:
        return "—"
    result = _outcome(study, config, results)
    if result is None:
        return "not run"
    value, epoch = getattr(result, figure), getattr(result, f"{figure}_epoch", None)
    if value is None:
        return "—"
    notes = [] if epoch is None else [f"ep {epoch}"]
    if result.epochs < config.epochs:
        notes.append(f"{result.epochs}/{config.epochs} epochs")
    elif full_epochs and config.epochs != full_epochs:
        notes.append(f"{config.epochs}-epoch run")
    return f"{100 * value:.2f}" + (f" ({', '.join(notes)})" if notes else "")


def thesis_table(results: Path = RESULTS_DIR) -> list[str]:
    """Markdown lines: each thesis network, the thesis's figure, and ours under each recipe, per backend."""
    lines = [
        ("| network | params | thesis (best test epoch) | backend | ours: our recipe, val / best test | thesis recipe "
         "(momentum 0.8), best test | thesis recipe, momentum 0.9, best test | thesis recipe + holdout, val / best "
         "test | improved recipe, val |"),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for dataset, table, thesis, improved in (("mnist", "mnist-table", "thesis-mnist", "improved-mnist"),
                                             ("cifar10", "cifar-table", "thesis-cifar", "improved-cifar")):
        for config in STUDIES[table].runs:
            model, spec = config.model, get_preset(config.model)
            thesis_acc = "—" if spec.thesis_accuracy is None else f"{spec.thesis_accuracy:.2f}"
            for backend in BACKENDS:
                cells = [
                    (f"{_cell(STUDIES[table], model, backend, results, 'val')} / "
                     f"{_cell(STUDIES[table], model, backend, results, 'best')}"),
                    _cell(STUDIES[thesis], model, backend, results, "best"),
                    _cell(STUDIES[thesis], f"{model}-m0.9", backend, results, "best") if dataset == "mnist" else "—",
                    (f"{_cell(STUDIES[thesis], f'{model}-val', backend, results, 'val')} / "
                     f"{_cell(STUDIES[thesis], f'{model}-val', backend, results, 'best')}"),
                    _cell(STUDIES[improved], f"{model}-improved", backend, results, "val", config.epochs),
                ]
                lines.append(f"| {model} | {spec.param_count():,} | {thesis_acc} | {backend} | {' | '.join(cells)} |")
    return lines


def _groups(study: Study) -> dict[str, list[RunConfig]]:
    """Run name without its seed suffix -> the runs (one per seed) of ``study``."""
    groups: dict[str, list[RunConfig]] = {}
    for config in study.runs:
        name = study.run_name(config)
        if config.seed:
            name = name.removesuffix(f"-s{config.seed}")
        groups.setdefault(name, []).append(config)
    return groups


def ablation_table(study: Study, results: Path = RESULTS_DIR) -> list[str]:
    """Markdown lines: per network and factor, per backend, the mean ± sd over seeds of each figure and the
    change of the mean best test accuracy against our recipe (``-ours``) of the same network and backend."""
    lines = [
        ("| network | change from our recipe | backend | test at epoch chosen on val | best test (thesis protocol) "
         "| final test | Δ best test vs ours (points) | runs |"),
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    groups = _groups(study)
    for backend in BACKENDS:
        baseline: dict[str, float] = {}
        for name, configs in groups.items():
            model = configs[0].model
            factor = name.removeprefix(model).lstrip("-")
            runs = [replace(c, backend=backend) for c in configs]
            found = [o for o, c in ((_outcome(study, c, results), c) for c in runs)
                     if o is not None and o.epochs >= c.epochs]  # finished runs only
            best = [o.best for o in found]
            if factor == "ours" and best:
                baseline[model] = statistics.fmean(best)
            delta = (f"{100 * (statistics.fmean(best) - baseline[model]):+.2f}"
                     if best and model in baseline and factor != "ours" else "—")
            vals = [o.val for o in found if o.val is not None]
            lines.append(f"| {model} | {factor} | {backend} | {format_stats(vals)} | {format_stats(best)} | "
                         f"{format_stats([o.final for o in found])} | {delta} | {len(found)}/{len(configs)} |")
    return lines
