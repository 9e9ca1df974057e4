"""The compression study: trained dense MNIST MLPs tensorized at several budgets, then fine-tuned.

    python -m experiments.compress_study --backend torch            # every run planned for torch
    python -m experiments.compress_study --backend jax              # the key rows in JAX
    python -m experiments.compress_study --list

Two dense networks: t3f's tutorial MLP ``t3f-784-625-10`` (no batch norm, as t3f's Keras model; Adam lr 0.001,
batch 64, raw [0, 1] pixels as t3f, with a cosine decay over the run and our 5,000-image validation holdout) and
the thesis's ``fc-fc-fc`` (784-4096-2048-10 with batch norm; the improved recipe, shortened). Each is trained
once, with torch (:data:`DENSE`), and tensorized at the budgets of :data:`SETTINGS`: compression (of the
tensorized layers' parameters) 2x (t3f's MLP only: at 2x ``fc-fc-fc``'s TT layers cost about what its dense ones
do), 10x, 50x, 200x and 500x, and t3f's own setting, rank 16 (for t3f's MLP exactly its tutorial's: the first
layer only, modes ``(7,4,7,4) x (5,5,5,5)``; for ``fc-fc-fc`` every layer at rank 16); ``r16-lr3e-3`` is t3f's
setting fine-tuned (and trained from scratch) with learning rate 0.003 instead of the recipe's 0.001;
``r16-kd`` is t3f's setting fine-tuned with the dense network as a teacher (knowledge distillation, weight 0.5,
temperature 2: :class:`experiments.train.Distill`; no scratch or torch-mpo run). Per budget the runs are:

- ``<model>-<setting>-<backend>``: :func:`experiments.compress.compress`: the accuracy right after conversion,
  then 2 epochs of fine-tuning with the dense run's recipe;
- ``<model>-<setting>-scratch-<backend>``: the same TT network (modes and ranks read from that run) trained from
  its random init for 2 epochs with the same recipe.

- ``<model>-<setting>-torch-mpo-<backend>``: torch-mpo's ``compress_model`` (:mod:`experiments.peer_mpo`) of
  the layers that run tensorized, at the largest uniform rank whose model has no more parameters than that run's,
  then the same 2 epochs of fine-tuning.

Torch runs every row; JAX the key rows (:data:`JAX_ROWS`), from the same torch-trained dense weights converted
in JAX. Runs go to ``experiments/results/compress/``; a run whose ``summary.json`` is complete is skipped, any
other is run again from the start. ``python -m experiments.report`` renders the section of ``RESULTS.md``
(:func:`section`) and the plot of accuracy against parameters (:func:`plot`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.cli import add_debug_flag, user_errors
from experiments.compress import Settings, compress, finetune_config, read_source
from experiments.machine import cpu_description
from experiments.optim import OptimizerConfig
from experiments.peer_mpo import mpo_conversion
from experiments.recipes import recipe_config
from experiments.studies import RESULTS_DIR
from experiments.train import RunConfig, Start, retain_freed_memory_for, silent_progress, train
from experiments.weights import run_network

__all__ = ["DENSE", "JAX_ROWS", "SETTINGS", "STUDY", "main", "plot", "section"]

STUDY = "compress"
FINETUNE_EPOCHS = 2
T3F, FC3 = "t3f-784-625-10", "fc-fc-fc"
# fc-fc-fc: a training step (batch 100) took 0.8 s on the study's shared core, 7 min an epoch: 2 epochs fit.
DENSE_EPOCHS = {T3F: 5, FC3: 2}
#: The dense runs, trained with torch. t3f: its tutorial's optimizer and batch; fc-fc-fc: the improved recipe.
DENSE: dict[str, RunConfig] = {
    T3F: recipe_config("ours", "mnist", T3F, epochs=DENSE_EPOCHS[T3F], batch_size=64, normalize=False,
                       optimizer=OptimizerConfig("adam", 0.001, cosine_epochs=DENSE_EPOCHS[T3F]), backend="torch"),
    FC3: recipe_config("improved", "mnist", FC3, epochs=DENSE_EPOCHS[FC3], backend="torch",
                       optimizer=OptimizerConfig("adam", 0.003, cosine_epochs=DENSE_EPOCHS[FC3])),
}
_BUDGETS = {f"{c}x": Settings(compression=float(c)) for c in (2, 10, 50, 200, 500)}
#: model -> setting -> tensorize's keywords
_T3F_RANK16 = Settings(max_rank=16, include=("layers.0",), modes={"layers.0": ((7, 4, 7, 4), (5, 5, 5, 5))})
SETTINGS: dict[str, dict[str, Settings]] = {
    T3F: {**_BUDGETS, "r16": _T3F_RANK16, "r16-lr3e-3": _T3F_RANK16, "r16-kd": _T3F_RANK16},
    # fc-fc-fc at 2x is left out: its TT layers cost about what the dense ones do per step (the compute budget)
    FC3: {**{k: v for k, v in _BUDGETS.items() if k != "2x"}, "r16": Settings(max_rank=16)},
}
#: settings whose fine-tuning (and training from scratch) replaces the recipe's learning rate
FINETUNE_LR = {"r16-lr3e-3": 0.003}
#: settings fine-tuned with the dense model as a teacher: (weight, temperature) of experiments.train.Distill
DISTILL = {"r16-kd": (0.5, 2.0)}
VARIANTS = (*FINETUNE_LR, *DISTILL)  # settings that vary the fine-tuning of another setting's conversion
JAX_ROWS = ((T3F, "r16"), (T3F, "r16-kd"), (FC3, "50x"))  # the goals' rows, in JAX too
T3F_ACCURACY = 97.65  # t3f's tutorial: rank 16, after fine-tuning
KINDS = ("dense", "ft", "scratch", "mpo")


@dataclass(frozen=True)
class Run:
    kind: str  # one of KINDS
    model: str
    setting: str | None  # None for the dense run
    backend: str

    @property
    def name(self) -> str:
        middle = {"dense": "-dense", "ft": f"-{self.setting}", "scratch": f"-{self.setting}-scratch",
                  "mpo": f"-{self.setting}-torch-mpo"}[self.kind]
        return f"{self.model}{middle}-{self.backend}"

    def out(self, results: Path = RESULTS_DIR) -> Path:
        return results / STUDY / self.name


def planned(backend: str) -> list[Run]:
    """The runs of ``backend``, in the order they depend on each other (dense, then per setting ft and scratch)."""
    runs = []
    for model, settings in SETTINGS.items():
        if backend == "torch":
            runs.append(Run("dense", model, None, "torch"))
        for setting in settings:
            if backend == "jax" and (model, setting) not in JAX_ROWS:
                continue
            runs.append(Run("ft", model, setting, backend))
            if setting in DISTILL:  # a way to fine-tune: nothing to train from scratch
                continue
            runs.append(Run("scratch", model, setting, backend))
            if setting not in FINETUNE_LR:  # one torch-mpo run per budget, at the recipe's learning rate
                runs.append(Run("mpo", model, setting, backend))
    return runs


def _summary(out: Path) -> dict | None:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _done(run: Run, results: Path, limit: int | None) -> bool:
    summary = _summary(run.out(results))
    if summary is None or summary.get("limit") != limit:
        return False
    return summary["epochs_run"] >= summary["epochs_planned"]


def _dense_dir(model: str, results: Path) -> Path:
    return Run("dense", model, None, "torch").out(results)


def _run_one(run: Run, results: Path, limit: int | None, max_batches: int | None, progress) -> dict:
    out = run.out(results)
    if run.kind == "dense":
        config = replace(DENSE[run.model], limit=limit, max_batches=max_batches)
        return train(config, out, overwrite=True, progress=progress)
    source = _dense_dir(run.model, results)
    settings = SETTINGS[run.model][run.setting]
    if run.kind == "ft":
        weight, temperature = DISTILL.get(run.setting, (None, 2.0))
        return compress(source, settings, out, epochs=FINETUNE_EPOCHS, backend=run.backend, overwrite=True,
                        progress=progress, limit=limit, max_batches=max_batches, lr=FINETUNE_LR.get(run.setting),
                        distill=weight, temperature=temperature)
    tuned = Run("ft", run.model, run.setting, run.backend).out(results)
    if _summary(tuned) is None:
        raise ValueError(f"no finished fine-tuning run {tuned.name} to take the TT network from")
    if run.kind == "mpo":
        return _run_mpo(run, source, tuned, out, limit, max_batches, progress)
    _, spec = run_network(tuned)  # the TT network the conversion chose: a scratch run needs its ft run first
    config, _, _ = read_source(source)
    config = finetune_config(config, FINETUNE_EPOCHS, backend=run.backend, limit=limit, max_batches=max_batches,
                             lr=FINETUNE_LR.get(run.setting))
    return train(config, out, overwrite=True, progress=progress,
                 start=Start(replace(spec, name=f"{spec.name}-scratch"), None, {"tt_network_of": str(tuned)}))


def _run_mpo(run: Run, source: Path, tuned: Path, out: Path, limit: int | None, max_batches: int | None,
             progress) -> dict:
    """torch-mpo's conversion of the layers ``tuned`` tensorized, within its parameter count, fine-tuned."""
    ft = _summary(tuned)
    names = [row["name"] for row in ft["start"]["tensorize"]["layers"] if row["status"] == "tt"]
    config, spec, which = read_source(source)
    conversion = mpo_conversion(source, names, ft["params"], which=which, spec=spec,
                                name=f"{spec.name}-torch-mpo-{run.setting}")
    config = finetune_config(config, FINETUNE_EPOCHS, backend=run.backend, limit=limit, max_batches=max_batches,
                             lr=FINETUNE_LR.get(run.setting))
    info = {"source": str(source), "weights": which, "params_of": str(tuned), **conversion.info}
    return train(config, out, overwrite=True, progress=progress, start=Start(conversion.spec, conversion.weights, info))


def run_study(backend: str, *, models: list[str] | None = None, settings: list[str] | None = None,
              kinds: list[str] | None = None, limit: int | None = None, max_batches: int | None = None,
              results: Path = RESULTS_DIR, progress=None) -> list[tuple[str, str]]:
    """Runs (or skips, when done) every planned run of ``backend`` that the filters keep; returns (name, status)."""
    runs = [r for r in planned(backend) if (not models or r.model in models)
            and (not settings or r.setting is None or r.setting in settings) and (not kinds or r.kind in kinds)]
    statuses = []
    for run in runs:
        if _done(run, results, limit):
            print(f"[{STUDY}] {run.name}: done, skipped", file=sys.stderr)
            statuses.append((run.name, "skipped"))
            continue
        print(f"[{STUDY}] {run.name}: starting", file=sys.stderr)
        try:
            summary = _run_one(run, results, limit, max_batches, progress)
        except ValueError as error:  # a budget the planner refuses (below the smallest TT), or no ft run for it
            message = str(error)
            print(f"[{STUDY}] {run.name}: failed: {message}", file=sys.stderr)
            run.out(results).mkdir(parents=True, exist_ok=True)
            (run.out(results) / "status.json").write_text(json.dumps({"status": "failed", "message": message}))
            statuses.append((run.name, f"failed: {message}"))
            continue
        (run.out(results) / "status.json").unlink(missing_ok=True)
        statuses.append((run.name, f"test acc {100 * summary['test_acc']:.2f}%"))
    return statuses


# --------------------------------------------------------------------------------------------------
# The section of RESULTS.md


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _epoch_acc(out: Path, epoch: int) -> float | None:
    rows = _rows(out)
    return rows[epoch - 1]["test_acc"] if len(rows) >= epoch else None


def collect(results: Path = RESULTS_DIR) -> dict[str, dict]:
    """Per model: the dense summary and, per (setting, backend), the figures of the ft and scratch runs."""
    found = {}
    for model, settings in SETTINGS.items():
        dense = _summary(_dense_dir(model, results))
        entries = {}
        for setting in settings:
            for backend in ("torch", "jax"):
                ft_out = Run("ft", model, setting, backend).out(results)
                ft = _summary(ft_out)
                status = ft_out / "status.json"
                failed = json.loads(status.read_text())["message"] if status.exists() and ft is None else None
                if ft is None and not _rows(ft_out) and failed is None:
                    continue
                scratch_out = Run("scratch", model, setting, backend).out(results)
                mpo_out = Run("mpo", model, setting, backend).out(results)
                entries[setting, backend] = {"ft": ft, "ft_out": ft_out, "scratch_out": scratch_out, "failed": failed,
                                             "scratch": _summary(scratch_out), "mpo_out": mpo_out,
                                             "mpo": _summary(mpo_out)}
        found[model] = {"dense": dense, "entries": entries}
    return found


def _max_error(ft: dict) -> str:
    errors = [row["error"] for row in ft["start"]["tensorize"]["layers"] if row["status"] == "tt"]
    return f"{max(errors):.3f}" if errors else "—"


def _mpo_cell(entry: dict) -> str:
    """torch-mpo's conversion of the row: its rank, parameters and accuracy after conversion and fine-tuning."""
    mpo = entry["mpo"]
    if mpo is None:
        return "—"
    start = mpo["start"]
    return (f"r{start['rank']}, {mpo['params']:,}, {_pct(start['before_training']['test_acc'])} / "
            f"{_pct(_epoch_acc(entry['mpo_out'], FINETUNE_EPOCHS))}")


def _table(model: str, data: dict) -> list[str]:
    dense = data["dense"]
    lines = [
        ("| setting | backend | params | ratio (model) | max rel. error of W | FLOPs/example | test acc after "
        "conversion | after 1 epoch | after 2 epochs | TT from scratch, 2 epochs | torch-mpo: rank, params, "
        "after conversion / 2 epochs | fine-tune time/epoch |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if dense is not None:
        lines.append(f"| dense ({dense['epochs_run']} epochs) | {dense['backend']} | {dense['params']:,} | 1.0 | — | "
                     f"— | — | — | {_pct(dense['test_acc'])} (epoch {dense['epoch_chosen_on_val']}, chosen on val) "
                     f"| — | — | {dense['train_time_s'] / dense['epochs_run']:.1f} s (training) |")
    for (setting, backend), e in data["entries"].items():
        ft, scratch = e["ft"], e["scratch"]
        if ft is None:
            why = f"failed: {e['failed']}" if e["failed"] else "interrupted"
            lines.append(f"| {setting} | {backend} | | | | | | | | | | {why} |")
            continue
        t = ft["start"]["tensorize"]
        flops = f"{t['flops_before']:,} -> {t['flops_after']:,}"
        scratch_acc = _epoch_acc(e["scratch_out"], FINETUNE_EPOCHS) if scratch is not None else None
        lines.append(
            f"| {setting} | {backend} | {ft['params']:,} | {t['ratio']:.1f} | {_max_error(ft)} | {flops} | "
            f"{_pct(ft['start']['before_training']['test_acc'])} | {_pct(_epoch_acc(e['ft_out'], 1))} | "
            f"{_pct(_epoch_acc(e['ft_out'], 2))} | {_pct(scratch_acc)} | {_mpo_cell(e)} | "
            f"{ft['train_time_s'] / ft['epochs_run']:.1f} s |")
    return lines


def _goals(found: dict) -> list[str]:
    """Whether the study's two goals are met, from the recorded figures."""
    lines = []
    for setting, backend in [(s, b) for s in SETTINGS[T3F] if s.startswith("r16") for b in ("torch", "jax")]:
        e = found.get(T3F, {"entries": {}})["entries"].get((setting, backend))
        if e and e["ft"]:
            final, first = (_epoch_acc(e["ft_out"], k) for k in (FINETUNE_EPOCHS, 1))
            lines.append(f"- t3f's setting (rank 16) as `{setting}`, {backend}: {_pct(final)}% after "
                         f"{FINETUNE_EPOCHS} epochs of "
                         f"fine-tuning ({_pct(first)}% after 1; goal >= 97.90%; t3f {T3F_ACCURACY:.2f}%): "
                         f"{'met' if final >= 0.979 else 'NOT met'}.")
    if FC3 not in found:
        return lines
    dense = found[FC3]["dense"]
    for (setting, backend), e in found[FC3]["entries"].items():
        # 50x of the tensorized layers (the setting) or of the whole model (batch norm included)
        at_least_50 = (SETTINGS[FC3][setting].compression or 0) >= 50 or (
            e["ft"] is not None and e["ft"]["start"]["tensorize"]["ratio"] >= 50)
        if dense is None or not e["ft"] or not at_least_50:
            continue
        final = _epoch_acc(e["ft_out"], FINETUNE_EPOCHS)
        if final is None:
            continue
        gap = 100 * (dense["test_acc"] - final)
        lines.append(f"- fc-fc-fc at {setting} ({e['ft']['start']['tensorize']['ratio']:.0f}x of the model), "
                     f"{backend}: {_pct(final)}% after fine-tuning, {gap:+.2f} points below the dense "
                     f"{_pct(dense['test_acc'])}% (goal: within 0.3): {'met' if gap <= 0.3 else 'NOT met'}.")
    return lines


def section(results: Path = RESULTS_DIR, plot_link: str | None = None) -> list[str]:
    """The lines of ``RESULTS.md``'s compression section, from the runs under ``results/compress``."""
    found = collect(results)
    dense = next((d["dense"] for d in found.values() if d["dense"]), None)
    machine = "—" if dense is None else cpu_description(dense["cpu"], dense.get("cpu_simd"))
    lines = [
        "## compress: trained dense MLPs tensorized, then fine-tuned",
        "",
        ("Run with `python -m experiments.compress_study --backend torch|jax` (see `experiments/compress_study.py`); "
        "each row's fine-tuning is `python -m experiments.compress --from <dense run> ... --epochs 2`. The dense "
        f"networks are trained once with torch: `{T3F}` (t3f's tutorial MLP, no batch norm, as t3f's Keras model) "
        f"{DENSE_EPOCHS[T3F]} epochs, Adam lr 0.001 with a cosine decay, batch 64, raw pixels; `{FC3}` "
        f"{DENSE_EPOCHS[FC3]} epochs with the improved recipe (Adam lr 0.003, cosine decay over the run, label "
        "smoothing 0.1). The weights of the epoch chosen on validation are tensorized (in the row's backend: "
        "JAX rows convert the same torch-trained weights) and fine-tuned "
        f"{FINETUNE_EPOCHS} epochs with the dense run's recipe (its cosine decay spanning the fine-tuning). "
        "*TT from scratch*: the same TT modes and ranks trained from their random init (the recipe's TT init) "
        f"for {FINETUNE_EPOCHS} epochs with that recipe. *torch-mpo*: torch-mpo 0.2.3's `compress_model` of the "
        "same layers at the largest uniform rank (its one rank for every layer) whose model has no more parameters "
        "than the row's, its cores copied into our layers (checked to compute the same), then the same fine-tuning: "
        "the two conversions compared under one loop (`experiments/peer_mpo.py`; installed with `--no-deps "
        "--ignore-requires-python`, as its wheels declare Python >= 3.12). Settings *Nx*: `compression=N` over the "
        "tensorized layers "
        "(the model's ratio, batch norm and dense layers included, is the *ratio* column); *r16*: t3f's setting, "
        f"rank 16 (for `{T3F}` exactly t3f's: the first layer only, modes (7,4,7,4) x (5,5,5,5); for `{FC3}` every "
        "layer); *r16-lr3e-3*: t3f's setting fine-tuned and trained from scratch with lr 0.003. Test accuracy "
        "in percent after each epoch (not chosen on validation); the dense row's is at its "
        f"epoch chosen on validation. Every run: single-threaded on one core of a shared 2-core VM ({machine}), "
        "`OMP_NUM_THREADS=1`, JAX with XLA's multi-threaded Eigen off, seed 0; other jobs shared that core, so the "
        "times are wall times of a loaded core (compare within a row's kind only)."),
        "",
    ]
    for model, data in found.items():
        lines += [f"### {model}", "", *_table(model, data), ""]
    lines += ["Goals:", "", *(_goals(found) or ["- no run recorded yet."]), ""]
    missing = [run.name for backend in ("torch", "jax") for run in planned(backend)
               if _summary(run.out(results)) is None and not (run.out(results) / "status.json").exists()]
    if missing:
        lines += [(f"Planned but not run (or interrupted): {', '.join(f'`{m}`' for m in missing)}. The study had "
                  "about 80 minutes of one shared core; TT layers at high ranks cost more per step than the dense "
                  "layers they replace (the FLOPs column: `fc-fc-fc` at 50x is 3x its dense FLOPs per example), "
                  "so these did not fit."), ""]
    if plot_link:
        lines += [f"![compress: test accuracy against parameters]({plot_link})", ""]
    return lines


def plot(results: Path = RESULTS_DIR) -> Path | None:
    """``results/compress/accuracy-vs-params.png``: test accuracy against parameters, one panel per model."""
    found = collect(results)
    if not any(d["dense"] for d in found.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(found), figsize=(6 * len(found), 4.5), squeeze=False)
    for ax, (model, data) in zip(axes[0], found.items()):
        series: dict[str, list[tuple[int, float]]] = {}
        for (setting, backend), e in data["entries"].items():
            if e["ft"] is None or setting in VARIANTS:  # one point per budget: the recipe's fine-tuning
                continue
            params = e["ft"]["params"]
            converted = e["ft"]["start"]["before_training"]["test_acc"]
            points = {f"after conversion ({backend}; lower points off the axis)": converted,
                      f"fine-tuned {FINETUNE_EPOCHS} epochs ({backend})": _epoch_acc(e["ft_out"], FINETUNE_EPOCHS),
                      f"TT from scratch {FINETUNE_EPOCHS} epochs ({backend})":
                          _epoch_acc(e["scratch_out"], FINETUNE_EPOCHS) if e["scratch"] else None}
            for label, acc in points.items():
                if acc is not None:
                    series.setdefault(label, []).append((params, acc))
            mpo_acc = _epoch_acc(e["mpo_out"], FINETUNE_EPOCHS) if e["mpo"] else None
            if mpo_acc is not None:  # at its own parameter count (at most the row's)
                series.setdefault(f"torch-mpo fine-tuned {FINETUNE_EPOCHS} epochs ({backend})", []).append(
                    (e["mpo"]["params"], mpo_acc))
        for label, points in series.items():
            points.sort()
            ax.plot([p for p, _ in points], [100 * a for _, a in points], marker="o", linestyle="-" if "torch" in label
                    else "--", label=label)
        if data["dense"]:
            ax.axhline(100 * data["dense"]["test_acc"], color="black", linewidth=0.8,
                       label=f"dense ({data['dense']['params']:,} params)")
        ax.set(xscale="log", xlabel="parameters (model)", ylabel="test accuracy (%)", title=model,
               ylim=(85, 100))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower right")
    fig.tight_layout()
    path = results / STUDY / "accuracy-vs-params.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.compress_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("jax", "torch"), default="torch")
    p.add_argument("--models", nargs="+", choices=sorted(SETTINGS))
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS[T3F]))
    p.add_argument("--kinds", nargs="+", choices=KINDS)
    p.add_argument("--limit", type=int, help="examples per split (smoke runs)")
    p.add_argument("--max-batches", type=int, help="training batches per epoch (smoke runs)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--list", action="store_true", help="list the planned runs")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    args = _parser().parse_args(argv)
    if args.list:
        for run in planned(args.backend):
            print(run.name)
        return []
    with user_errors(args.debug):
        retain_freed_memory_for(list(args.models or SETTINGS))
        statuses = run_study(args.backend, models=args.models, settings=args.settings, kinds=args.kinds,
                             limit=args.limit, max_batches=args.max_batches, results=args.results,
                             progress=silent_progress)
    for name, status in statuses:
        print(f"{name}: {status}")
    return statuses


if __name__ == "__main__":
    main()
