"""Generate ``experiments/RESULTS.md`` from the committed metrics of the studies.

    python -m experiments.report                 # reads experiments/results/, writes experiments/RESULTS.md

For every study of :mod:`experiments.studies` and both backends, one row per run: our parameter count and the
thesis's, the test accuracy at the epoch chosen on the validation split (the figure we report), the best test
accuracy over epochs (the thesis's protocol, which picks the epoch on the test set: optimistic, shown for
comparison only), the thesis's accuracy, the training time per epoch, the device and the epochs run. Runs not
made yet show as such; shortened runs (fewer epochs than planned, a data ``limit`` or ``max_batches``) are
flagged in the notes. Each study with a run under way or done gets ``<results>/<study>/curves.png`` (validation
accuracy and training loss per epoch of all its runs), linked below its table. A run that several studies plan is
trained once and shown in each, noted as the run of the study that owns it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from experiments.cli import add_debug_flag, user_errors
from experiments.compress_study import STUDY as COMPRESS_STUDY
from experiments.compress_study import plot as plot_compress
from experiments.compress_study import section as compress_section
from experiments.conv_study import STUDY as CONV_STUDY
from experiments.conv_study import plot as plot_conv
from experiments.conv_study import section as conv_section
from experiments.machine import cpu_description
from experiments.presets import get_preset
from experiments.studies import RESULTS_DIR, STUDIES, Study, home_study, run_dir
from experiments.tables import ablation_table, thesis_table
from experiments.train import RunConfig

__all__ = ["main", "plot_study", "render", "study_curves"]

OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
BACKENDS = ("jax", "torch")
DATASET_LABEL = {"mnist": "MNIST", "cifar10": "CIFAR-10 (JPEG q75 copy)"}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _at_epoch(value: float | None, epoch: int | None) -> str:
    """``98.69% (ep 25)``, or ``—`` for a figure the run has not (no validation holdout: no epoch chosen on it)."""
    return "—" if value is None or epoch is None else f"{_pct(value)} (ep {epoch})"


def _thesis_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _load(out: Path) -> dict:
    """What a run directory holds: summary, status and the number of epochs with metrics."""
    found: dict = {}
    for name in ("summary", "status", "config"):
        path = out / f"{name}.json"
        if path.exists():
            found[name] = _json(path, path.read_text())
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    found["rows"] = [_json(metrics, row) for row in lines if row.strip()]
    return found


def _json(path: Path, text: str):
    try:
        return json.loads(text)
    except ValueError as error:  # the CLI prints it as one line: say which file
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _format_plans(plans: list) -> str:
    """``[[[2, 3], "rtl"], ...]`` as ``(2, 3) rtl, ...`` (merged runs of cores, direction)."""
    return ", ".join(f"({', '.join(map(str, groups))}{',' if len(groups) == 1 else ''}) {direction}"
                     for groups, direction in plans)


def _xla_cpu_product_flops() -> float:
    """tt_jax's planner cost on XLA:CPU, imported only when a JAX CPU row needs it (tt_jax loads JAX)."""
    from tt_jax._xla_cpu import XLA_CPU_PRODUCT_FLOPS

    return XLA_CPU_PRODUCT_FLOPS


def _row(study: Study, config: RunConfig, results: Path) -> str:
    spec = get_preset(config.model)
    out = run_dir(study, config, results)
    found = _load(out)
    name = study.run_name(config)
    owner, planned = home_study(study, config)
    shared = []
    if owner is not study:  # trained once, in the study that owns it
        shared.append(f"same run as {owner.name}'s {owner.run_name(planned)}")
    thesis = f"| {_count(spec.thesis_params)} | {_thesis_pct(spec.thesis_accuracy)} |"
    head = f"| {name} | {config.backend} | {spec.param_count():,} "
    summary, status, rows = found.get("summary"), found.get("status"), found["rows"]
    if summary is None:
        if status and status.get("status") == "diverged":
            note = f"diverged: {status['message']}"
        elif rows:
            note = f"in progress / interrupted after {len(rows)} of {config.epochs} epochs"
        else:
            note = "not run yet"
        note = "; ".join([note, *shared])
        return f"{head}{thesis} — | — | — | — | {len(rows)}/{config.epochs} | {note} |"
    notes = list(shared)
    if summary["epochs_run"] < config.epochs:
        notes.append(f"shortened: {summary['epochs_run']} of {config.epochs} planned epochs")
    if summary.get("limit"):
        notes.append(f"data limited to {summary['limit']} examples per split")
    if summary.get("max_batches_per_epoch"):
        notes.append(f"{summary['max_batches_per_epoch']} batches per epoch")
    if summary.get("freed_memory_retained"):
        notes.append("freed memory retained")
    ran, today = summary.get("tt_directions"), list(spec.tt_directions())
    if ran is not None and ran != today:
        notes.append(f"TT layers contracted {', '.join(ran)} (today {', '.join(today)}: a later direction rule; "
                     "today's time per epoch differs)")
    xla_cpu = config.backend == "jax" and "cpu" in summary["device"]
    today = spec.tt_plans(config.batch_size, product_flops=_xla_cpu_product_flops() if xla_cpu else 0.0)
    plans, plans_today = summary.get("tt_plans"), [[list(g), d] for g, d in today]
    if plans is not None and plans != plans_today:
        notes.append(f"TT layers ran the plans {_format_plans(plans)} (today {_format_plans(plans_today)}: "
                     "a later planning rule; today's time per epoch differs)")
    per_epoch = summary["train_time_s"] / max(summary["epochs_run"], 1)
    device = summary["device"]
    if "cpu" in device and summary.get("cpu"):
        device = f"{device} ({cpu_description(summary['cpu'], summary.get('cpu_simd'))})"
    return (
        f"{head}{thesis} {_at_epoch(summary['test_acc'], summary['epoch_chosen_on_val'])} | "
        f"{_at_epoch(summary['best_test_acc_thesis_protocol'], summary['best_test_epoch_thesis_protocol'])} | "
        f"{_duration(per_epoch)} | {device} | {summary['epochs_run']}/{config.epochs} | "
        f"{'; '.join(notes) or '—'} |"
    )


HEADER = (
    "| run | backend | params | thesis params | thesis test acc | test acc (epoch chosen on val) "
    "| best test acc (epoch chosen on test, thesis protocol) | time/epoch (train) | device | epochs | notes |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"
)


def study_curves(study: Study, results: Path = RESULTS_DIR) -> dict[tuple[str, str], list[dict]]:
    """``(run name, backend) -> metrics rows`` of every run of ``study`` with at least one epoch."""
    curves = {}
    for backend in BACKENDS:
        for config in study.for_backend(backend):
            rows = _load(run_dir(study, config, results))["rows"]
            if rows:
                curves[study.run_name(config), backend] = rows
    return curves


def plot_study(study: Study, results: Path = RESULTS_DIR) -> Path | None:
    """``<results>/<study>/curves.png``: validation accuracy and training loss per epoch of every run of ``study``
    (one colour per run, solid JAX, dashed torch); ``None`` when no run has an epoch yet."""
    curves = study_curves(study, results)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for name, _ in curves))
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (name, backend), rows in curves.items():
        epochs = [r["epoch"] for r in rows]
        style = {"color": colours[name], "linestyle": "-" if backend == "jax" else "--", "label": f"{name} ({backend})",
                 "marker": "o" if len(rows) <= 3 else None}  # a run of one epoch is a point
        split = "val" if rows[0].get("val_acc") is not None else "test"  # no holdout: the test curve, labelled
        if split == "test":
            style["label"] += ", test"
        ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in rows], **style)
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], **style)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy (test where no holdout)")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="training loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize="small", loc="upper right")
    fig.suptitle(f"{study.name}: {study.description} ({DATASET_LABEL[study.runs[0].dataset]})")
    fig.tight_layout()
    path = results / study.name / "curves.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _networks(study: Study) -> list[str]:
    """One bullet per network the study trains: its preset name and what it is (modes, ranks, layers)."""
    models = dict.fromkeys(config.model for config in study.runs)
    return [f"- `{model}`: {get_preset(model).description}" for model in models]


def render(results: Path = RESULTS_DIR, plots: dict[str, str] | None = None) -> str:
    """The markdown of ``RESULTS.md`` for the runs under ``results``; ``plots``: study name -> link to its curves."""
    plots = plots or {}
    parts = [
        "# Results: the thesis's studies, reproduced with the JAX and the PyTorch backend",
        "",
        "Generated by `python -m experiments.report` from `experiments/results/*/*/` (do not edit by hand).",
        "Run a study with `python -m experiments.study NAME --backend jax|torch`; see `experiments/studies.py`.",
        "",
        "- **test acc (epoch chosen on val)**: the test accuracy at the epoch with the best validation accuracy "
        "(5,000 training examples held out). This is the figure we report.",
        "- **best test acc (thesis protocol)**: the best test accuracy over all epochs, i.e. the epoch chosen on "
        "the test set, as the thesis did. Optimistically biased; shown only to compare with the thesis.",
        "- **params** count weights, biases and batch-norm scales/offsets (not running statistics), as the thesis "
        "does. **time/epoch** is the training time of one epoch (evaluation excluded) on the listed device. "
        "CPU rows ran on shared 2-core VMs (Intel Xeon or AMD EPYC); later rows (from 2026-12-02's torch "
        "`cifar-tt` on) also name the CPU's widest SIMD extension (e.g. AVX-512), which decides the kernels math "
        "libraries run. VMs of one "
        "model name differ in speed and in float32 rounding, so a seeded run's metrics can differ between VMs "
        "from the first epoch on (resuming on one VM gives identical results). Rows noted *freed memory retained* "
        "ran with "
        "`experiments.memory.retain_freed_memory()` (on by default since 2026-11-28; up to 2.7x faster steps on the "
        "262,144-wide networks), the others with glibc's default malloc. Runs record how their TT layers merged "
        "cores and in which direction they contracted; a row whose plan differs from today's says so (that "
        "changes the time, not the results). `modes`' `tt-tt-d6` torch ran before plans were recorded, with its "
        "first layer merged `(3, 1, 2)` right to left; commit 7920165 plans merges in the layer's direction and "
        "gives `(2, 1, 3)`: that layer's training step took 126 instead of 204 ms in torch, 90 instead of 193 ms "
        "in JAX (batch 100; `docs/performance.md`, findings).",
        "- CIFAR-10 rows use the local JPEG quality-75 copy of CIFAR-10 (lossy, not the canonical pixels): "
        "\"CIFAR-10 (JPEG q75 copy)\".",
        "",
        "## The thesis's figures against each recipe",
        "",
        "The recipes are `experiments/recipes.py`'s (see `experiments/README.md`). *val*: test accuracy at the epoch "
        "chosen on the validation split (our protocol); *best test*: the best test accuracy over the epochs (the "
        "thesis's protocol). The thesis recipe trains on all training images, so it has no validation figure; its "
        "*+ holdout* run holds 5,000 out to give one. Figures in percent, with the epoch they come from.",
        "",
        *thesis_table(results),
        "",
        "## Ablation: one factor at a time from our recipe to the thesis's",
        "",
        "Mean ± sample standard deviation over seeds (the count in brackets), finished runs only. *Δ best test*: "
        "the change of the mean best test accuracy from our recipe's on the same network and backend. *thesis* "
        "changes every factor at once (the thesis recipe). CIFAR-10's ablation is cut at "
        f"{STUDIES['ablation-cifar'].runs[0].epochs} epochs.",
        "",
        *ablation_table(STUDIES["ablation"], results),
        "",
        *ablation_table(STUDIES["ablation-cifar"], results),
    ]
    for study in STUDIES.values():
        dataset = DATASET_LABEL[study.runs[0].dataset]
        opt = study.runs[0].optimizer
        parts += [
            "",
            f"## {study.name}: {study.description}",
            "",
            f"Dataset: {dataset}. Batch {study.runs[0].batch_size}, seed {study.runs[0].seed}"
            + ("" if study.label_optimizer else f", {opt.name} lr {opt.learning_rate}") + ".",
            "",
            *_networks(study),
            "",
            HEADER,
        ]
        for backend in BACKENDS:
            for config in study.for_backend(backend):
                parts.append(_row(study, config, results))
        if study.name in plots:
            parts += ["", f"![{study.name}: validation accuracy and training loss per epoch]({plots[study.name]})"]
    parts += ["", *compress_section(results, plots.get(COMPRESS_STUDY))]
    parts += ["", *conv_section(results, plots.get(CONV_STUDY))]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--output", type=Path, default=OUTPUT)
    add_debug_flag(p)
    args = p.parse_args(argv)
    with user_errors(args.debug):  # an unreadable results file or an unwritable --output: one error line
        plots = {}
        for study in STUDIES.values():
            path = plot_study(study, args.results)
            if path is not None:
                plots[study.name] = Path(os.path.relpath(path, args.output.resolve().parent)).as_posix()
        for name, make in ((COMPRESS_STUDY, plot_compress), (CONV_STUDY, plot_conv)):
            path = make(args.results)
            if path is not None:
                plots[name] = Path(os.path.relpath(path, args.output.resolve().parent)).as_posix()
        args.output.write_text(render(args.results, plots))
    print(f"wrote {args.output}")
    return args.output


if __name__ == "__main__":
    main()
