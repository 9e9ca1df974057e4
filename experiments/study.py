"""Run one of the thesis's studies (see :mod:`experiments.studies`) with one backend.

    python -m experiments.study mnist-table --backend jax
    python -m experiments.study mnist-table --backend torch --only tt-tt tt-fc
    python -m experiments.study --list

Runs go one after the other into ``experiments/results/<study>/<run>-<backend>/``. A run whose ``summary.json``
shows all its epochs is skipped; a run with a checkpoint (killed earlier) is resumed from it with identical
results; a run folder without a checkpoint is trained anew, replacing what it holds; a run that diverges is
recorded in ``status.json`` and the study goes on. ``--epochs`` shortens (or lengthens) every run, e.g. to give
``fc-fc`` only what fits; the summary records epochs run and planned.
Afterwards, ``python -m experiments.report`` regenerates ``experiments/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from experiments.checkpoint import LEGACY_CHECKPOINT
from experiments.cli import add_debug_flag, user_errors
from experiments.studies import RESULTS_DIR, STUDIES, Study, run_dir
from experiments.train import CHECKPOINT, DivergenceError, RunConfig, retain_freed_memory_for, train

__all__ = ["main", "run_study"]


def _done(out: Path, config: RunConfig) -> bool:
    path = out / "summary.json"
    if not path.exists():
        return False
    summary = json.loads(path.read_text())
    return summary.get("epochs_run", 0) >= config.epochs and summary.get("limit") == config.limit


def selected_runs(study: Study, backend: str, only: list[str] | None = None) -> list[RunConfig]:
    """The runs of ``study`` whose model or run name is in ``only`` (all of them without it)."""
    return [c for c in study.for_backend(backend)
            if not only or c.model in only or study.run_name(c) in only]


def run_study(study: Study, backend: str, *, only: list[str] | None = None, epochs: int | None = None,
              limit: int | None = None, max_batches: int | None = None, results: Path = RESULTS_DIR,
              progress=None) -> list[dict]:
    """Runs (or resumes, or skips) every run of ``study``; returns one status dict per run.

    Every run's configuration is checked (a ``ValueError`` names the setting) before the first one starts. A run
    folder without a checkpoint is trained anew, replacing what it holds: the study owns its folders.
    """
    overrides = {k: v for k, v in (("epochs", epochs), ("limit", limit), ("max_batches", max_batches))
                 if v is not None}
    configs = [replace(config, **overrides).check() for config in selected_runs(study, backend, only)]
    statuses = []
    for config in configs:
        out = run_dir(study, config, results)
        status = {"run": out.name, "out": str(out)}
        if _done(out, config):
            print(f"[{study.name}] {out.name}: done, skipped", file=sys.stderr)
            statuses.append({**status, "status": "skipped"})
            continue
        # A checkpoint of the earlier pickle format is passed on to train, which refuses it with a clear message.
        resume = (out / CHECKPOINT).exists() or (out / LEGACY_CHECKPOINT).exists()
        print(f"[{study.name}] {out.name}: {'resuming' if resume else 'starting'} ({config.epochs} epochs)",
              file=sys.stderr)
        try:
            summary = train(config, out, resume=resume, overwrite=not resume, progress=progress)
        except DivergenceError as error:
            out.mkdir(parents=True, exist_ok=True)  # a run that diverged in its first epoch left no folder
            (out / "status.json").write_text(json.dumps({"status": "diverged", "message": str(error)}, indent=2))
            print(f"[{study.name}] {out.name}: {error}", file=sys.stderr)
            statuses.append({**status, "status": "diverged", "message": str(error)})
            continue
        (out / "status.json").unlink(missing_ok=True)
        statuses.append({**status, "status": "finished", "test_acc": summary["test_acc"]})
    return statuses


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.study", description=__doc__.split("\n\n")[0])
    p.add_argument("study", nargs="?", choices=sorted(STUDIES))
    p.add_argument("--backend", choices=("jax", "torch"), default="jax")
    p.add_argument("--only", nargs="+", help="run only these models (or run names, e.g. tt-tt-adam)")
    p.add_argument("--epochs", type=int, help="override every run's epoch count")
    p.add_argument("--limit", type=int, help="examples per split (smoke runs)")
    p.add_argument("--max-batches", type=int, help="training batches per epoch (time-boxed runs)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"default: {RESULTS_DIR}")
    p.add_argument("--list", action="store_true", help="list the studies and their runs")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    if args.list or args.study is None:
        for study in STUDIES.values():
            print(f"{study.name}: {study.description}")
            for config in study.for_backend(args.backend):
                opt = config.optimizer
                print(f"    {run_dir(study, config, args.results).name}: {config.dataset} {config.model}, "
                      f"{config.epochs} epochs, batch {config.batch_size}, {opt.name} lr {opt.learning_rate}")
        return []
    with user_errors(args.debug):
        retain_freed_memory_for([c.model for c in selected_runs(STUDIES[args.study], args.backend, args.only)])
        statuses = run_study(STUDIES[args.study], args.backend, only=args.only, epochs=args.epochs,
                             limit=args.limit, max_batches=args.max_batches, results=args.results)
    for s in statuses:
        extra = f" test acc {100 * s['test_acc']:.2f}%" if s.get("test_acc") is not None else ""
        print(f"{s['run']}: {s['status']}{extra}")
    return statuses


if __name__ == "__main__":
    main()
