"""Tensorize a trained run's dense layers and fine-tune the result: compression out of the box.

    python -m experiments.compress --from runs/mnist-fc-fc-fc-torch-improved-s0 --compression 50 --epochs 2
    python -m experiments.compress --from RUN --max-rank 16 --include layers.0 --d 4 --backend jax

Loads the run's weights (``--weights``; default the epoch the run reports: ``best-val``, or ``final`` for a run
without a validation holdout), replaces its dense layers by TT layers built from them by TT-SVD
(:func:`tt_torch.tensorize` or :func:`tt_jax.tensorize` in the backend's framework, default the run's;
``--max-rank``, ``--rtol``, ``--compression``, ``--max-params``, ``--include``, ``--min-size``, ``--d`` are
theirs), prints the report (parameters and FLOPs per example before and after, ratio, relative Frobenius error of
each ``W``), evaluates the converted model, then fine-tunes it ``--epochs`` epochs with the run's recipe (its
optimizer, batch, data split, initializers and label smoothing; ``--lr`` replaces the learning rate; a cosine
decay that spanned the run spans the fine-tuning; ``--distill WEIGHT`` adds the dense model as a teacher, at
``--temperature``) through :func:`experiments.train.train`, whose
:class:`experiments.train.Start` hook starts it from the converted weights.

The output folder (``--out``, default ``<run>-tt-<budget>-<backend>`` beside the run) holds what a training run
writes: ``config.json`` (the run's configuration and, under ``"network"``, the TT network, so that
:func:`experiments.load_model` loads it), ``metrics.jsonl`` (per epoch), ``summary.json`` (under ``"start"``: the
source run, the settings, the report and the accuracy right after conversion), ``curves.png`` and the weights. A
folder that holds a run is refused unless ``--overwrite``. Every setting is checked before anything is loaded; a
user's mistake prints one ``error:`` line (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from experiments.cli import USER_ERRORS, add_debug_flag, non_negative_int, positive_int, user_errors
from experiments.presets import TT, Network
from experiments.train import Distill, DivergenceError, RunConfig, Start, _check_out, retain_freed_memory_for, train
from experiments.weights import WEIGHTS_FILES, _weights_path, load_model, run_network
from tt_common.tensorize import TensorizeReport, check_arguments

__all__ = ["Conversion", "Settings", "compress", "convert", "finetune_config", "main", "read_source",
           "tensorized_network"]


@dataclass(frozen=True)
class Settings:
    """The keywords of ``tensorize`` that choose what becomes TT (see :func:`tt_torch.tensorize`).

    >>> Settings(compression=50).label(), Settings(max_rank=16, include=("layers.0",), d=4).label()
    ('compression50', 'rank16')
    >>> Settings(rtol=-1).check()
    Traceback (most recent call last):
    ...
    ValueError: rtol must be a non-negative finite number, got -1
    """

    max_rank: int | None = None
    rtol: float | None = None
    compression: float | None = None
    max_params: int | None = None
    include: tuple[str, ...] | None = None  # globs on the module names (layers.0, layers.2, ...)
    min_size: int = 0
    d: int | None = None
    modes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None  # per layer (in, out); API only

    def check(self) -> Settings:
        """Returns ``self`` if ``tensorize`` would take these keywords, else a ``ValueError`` names the bad one."""
        check_arguments(self.max_rank, self.rtol, self.compression, self.max_params, self.min_size, self.d)
        if self.include is not None and (isinstance(self.include, str) or not all(
                isinstance(g, str) for g in self.include) or not self.include):
            raise ValueError(f"include must be a non-empty tuple of globs, got {self.include!r}")
        return self

    def kwargs(self) -> dict:
        """The keywords for ``tensorize`` (those set)."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        if "include" in values:
            values["include"] = list(values["include"])
        return values

    def label(self) -> str:
        """A short name of the budget, for folder names: ``compression50``, ``rank16``, ``rtol0.1``."""
        for name, key in (("compression", self.compression), ("params", self.max_params), ("rtol", self.rtol),
                          ("rank", self.max_rank)):
            if key is not None:
                return f"{name}{key:g}"
        raise ValueError("no budget set")  # check() refuses such settings first

    def to_dict(self) -> dict:
        """JSON of the settings (modes as lists)."""
        values = asdict(self)
        if self.modes is not None:
            values["modes"] = {k: [list(v[0]), list(v[1])] for k, v in self.modes.items()}
        return values


@dataclass(frozen=True)
class Conversion:
    """A run's model tensorized: the TT network, its weights (``tt_common.transfer`` naming) and the report;
    ``source``: the loaded dense model it came from (untouched by ``tensorize``)."""

    spec: Network
    weights: dict[str, np.ndarray]
    report: TensorizeReport
    source: Any = None


def read_source(run_dir: str | os.PathLike, which: str | None = None) -> tuple[RunConfig, Network, str]:
    """A finished run's configuration, network, and which weights to take (default: those the run reports).

    A ``ValueError`` says what is missing (no ``config.json``, no such weights file) before anything is built.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--from {run_dir}: no such folder")
    record, spec = run_network(run_dir)
    config = RunConfig.from_dict(record)
    if which is None:
        which = "best-val" if config.val_size > 0 else "final"
    _weights_path(run_dir, which)  # the file must be there: a ValueError names the ones that are
    return config, spec, which


def finetune_config(source: RunConfig, epochs: int, *, backend: str | None = None, lr: float | None = None,
                    **overrides) -> RunConfig:
    """The run's configuration for ``epochs`` of fine-tuning: its recipe, and a cosine decay that spanned the run
    spanning these epochs (as :func:`experiments.train.config_from_args` does for ``--epochs``).

    >>> from experiments.recipes import recipe_config
    >>> tuned = finetune_config(recipe_config("improved", "mnist", "fc-fc-fc"), 2, backend="jax")  # cosine over 25
    >>> tuned.epochs, tuned.optimizer.cosine_epochs, tuned.optimizer.learning_rate, tuned.backend
    (2, 2, 0.003, 'jax')
    """
    optimizer = source.optimizer
    if optimizer.cosine_epochs and optimizer.cosine_epochs == source.epochs:
        optimizer = replace(optimizer, cosine_epochs=epochs)
    if lr is not None:
        optimizer = replace(optimizer, learning_rate=lr)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(source, epochs=epochs, backend=backend or source.backend, optimizer=optimizer, **given).check()


def _tt_layer(row) -> TT:
    if (int(np.prod(row.in_modes)), int(np.prod(row.out_modes))) != (row.in_features, row.out_features):
        raise ValueError(f"layer {row.name} became a zero-padded TT, which experiments' networks cannot hold")
    return TT(tuple(row.in_modes), tuple(row.out_modes), tuple(row.ranks))


def tensorized_network(spec: Network, report: TensorizeReport, name: str) -> Network:
    """``spec`` with each layer that ``report`` replaced by a TT layer of the report's modes and ranks.

    The result is a network like any preset (built by :mod:`experiments.models_torch` or ``models_jax``, with the
    same transfer names), without the thesis's figures: it is not the thesis's network.
    """
    rows = {row.name: row for row in report.layers if row.status == "tt"}
    layers = tuple(_tt_layer(rows[n]) if n in rows else layer for n, layer in zip(spec.module_names(), spec.layers))
    parts = [f"{n}: TT {layer.in_modes} -> {layer.out_modes} ranks {layer.ranks}"
             for n, layer in zip(spec.module_names(), layers) if n in rows]
    return replace(spec, name=name, layers=layers, thesis_params=None, thesis_accuracy=None, based_on=None,
                   description=f"{spec.name} tensorized ({'; '.join(parts) or 'no layer replaced'})")


def convert(run_dir: str | os.PathLike, settings: Settings, *, backend: str, which: str, spec: Network,
            batch_size: int = 100, name: str | None = None) -> Conversion:
    """Loads the run's ``which`` weights into ``backend``'s framework, tensorizes them and returns the result."""
    model = load_model(run_dir, backend=backend, which=which)
    if backend == "torch":
        import tt_torch

        new, report = tt_torch.tensorize(model, batch_size=batch_size, **settings.kwargs())
        weights = tt_torch.transfer.export(new)
    else:
        import tt_jax

        new, report = tt_jax.tensorize(model, batch_size=batch_size, **settings.kwargs())
        weights = tt_jax.transfer.export(new)
    name = name or f"{spec.name}-tt-{settings.label()}"
    return Conversion(tensorized_network(spec, report, name), weights, report, model)


def _report_info(report: TensorizeReport) -> dict:
    """The report as JSON: totals and one entry per dense layer."""
    return {"params_before": report.params_before, "params_after": report.params_after, "ratio": report.ratio,
            "flops_before": report.flops_before, "flops_after": report.flops_after,
            "layers": [asdict(row) for row in report.layers]}


def _source_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None


def teacher_of(model, backend: str):
    """A batch of inputs -> the logits of ``model`` (a loaded run's, in eval mode), as NumPy: a distillation
    teacher (:class:`experiments.train.Distill`)."""
    if backend == "torch":
        import torch

        device = next(model.parameters()).device

        def logits(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x).to(device)).cpu().numpy()

        return logits
    from flax import nnx

    forward = nnx.jit(lambda m, x: m(x))
    return lambda x: np.asarray(forward(model, x))


def compress(run_dir: str | os.PathLike, settings: Settings, out: str | os.PathLike, *, epochs: int,
             backend: str | None = None, which: str | None = None, lr: float | None = None,
             overwrite: bool = False, progress=None, limit: int | None = None, max_batches: int | None = None,
             data_dir: str | None = None, distill: float | None = None, temperature: float = 2.0) -> dict:
    """Tensorizes the run in ``run_dir`` with ``settings``, fine-tunes it ``epochs`` epochs in ``out`` and returns
    the summary (the accuracy right after conversion under ``summary["start"]["before_training"]``).

    ``distill``: the weight of the dense model as a teacher during fine-tuning (knowledge distillation at
    ``temperature``, :class:`experiments.train.Distill`); ``None``: the run's loss alone.

    Everything is checked first (settings, the source run, the fine-tuning configuration, that ``out`` holds no
    run unless ``overwrite``): a ``ValueError`` says what, before any weight is loaded.
    """
    settings.check()
    run_dir, out = Path(run_dir), Path(out)
    source, spec, which = read_source(run_dir, which)
    config = finetune_config(source, epochs, backend=backend, lr=lr, limit=limit, max_batches=max_batches,
                             data_dir=data_dir)
    if distill is not None:
        Distill(len, distill, temperature).check()  # the weight and temperature, before anything is loaded
    _check_out(out, config, resume=False, overwrite=overwrite, resumable=False)
    conversion = convert(run_dir, settings, backend=config.backend, which=which, spec=spec,
                         batch_size=config.batch_size)
    report = conversion.report
    print(report)
    print(f"params {report.params_before:,} -> {report.params_after:,} ({report.ratio:.1f}x), FLOPs/example "
          f"{report.flops_before:,} -> {report.flops_after:,}")
    summary = _source_summary(run_dir)
    info = {"source": str(run_dir), "source_model": source.model, "source_backend": source.backend,
            "source_test_acc": None if summary is None else summary.get("test_acc"), "weights": which,
            "settings": settings.to_dict(), "tensorize": _report_info(report)}
    teacher = None
    if distill is not None:
        info["distill"] = {"weight": distill, "temperature": temperature, "teacher": which}
        teacher = Distill(teacher_of(conversion.source, config.backend), distill, temperature)
    return train(config, out, overwrite=overwrite, progress=progress,
                 start=Start(conversion.spec, conversion.weights, info, distill=teacher))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.compress", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", type=Path, required=True, help="the folder of a finished training run")
    p.add_argument("--weights", choices=sorted(WEIGHTS_FILES), default=None,
                   help="default: best-val (final for a run without a validation holdout)")
    p.add_argument("--backend", choices=("jax", "torch"), default=None, help="default: the run's")
    budget = p.add_argument_group("tensorize (one of --max-rank, --rtol, --compression, --max-params; "
                                  "--max-rank may cap a budget)")
    budget.add_argument("--max-rank", type=positive_int, default=None, help="every inner TT-rank at most")
    budget.add_argument("--rtol", type=float, default=None, help="||W - TT||_F <= rtol ||W||_F per layer")
    budget.add_argument("--compression", type=float, default=None,
                        help="dense parameters of the tensorized layers over their TT parameters")
    budget.add_argument("--max-params", type=positive_int, default=None,
                        help="TT parameters (cores and biases) of the tensorized layers")
    budget.add_argument("--include", nargs="+", default=None, help="module globs, e.g. layers.0 (default: all)")
    budget.add_argument("--min-size", type=non_negative_int, default=0, help="leave layers of fewer weights dense")
    budget.add_argument("--d", type=positive_int, default=None, help="cores per layer (default: by its size)")
    p.add_argument("--epochs", type=positive_int, default=2, help="epochs of fine-tuning (default 2)")
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the run's)")
    p.add_argument("--distill", type=float, default=None, metavar="WEIGHT",
                   help="distil from the dense model while fine-tuning, this weight in (0, 1] on its term")
    p.add_argument("--temperature", type=float, default=2.0, help="the distillation's temperature (default 2)")
    p.add_argument("--limit", type=positive_int, default=None, help="examples per split (default: the run's)")
    p.add_argument("--max-batches", type=positive_int, default=None, help="training batches per epoch")
    p.add_argument("--data-dir", default=None, help="default: the run's (or $TT_DATA_DIR)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto", help="auto: a GPU when the backend sees one")
    p.add_argument("--out", type=Path, default=None, help="default: <run>-tt-<budget>-<backend> beside the run")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (refused without it)")
    add_debug_flag(p)
    return p


def default_out(source: Path, settings: Settings, backend: str) -> Path:
    """``<run>-tt-<budget>-<backend>`` beside the run."""
    return source.parent / f"{source.name}-tt-{settings.label()}-{backend}"


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    with user_errors(args.debug, (*USER_ERRORS, DivergenceError)):
        settings = Settings(args.max_rank, args.rtol, args.compression, args.max_params,
                            None if args.include is None else tuple(args.include), args.min_size, args.d).check()
        source, _, _ = read_source(args.source, args.weights)
        retain_freed_memory_for([source.model])  # before the backend allocates anything
        if args.device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        backend = args.backend or source.backend
        out = args.out or default_out(args.source, settings, backend)
        summary = compress(args.source, settings, out, epochs=args.epochs, backend=backend, which=args.weights,
                           lr=args.lr, overwrite=args.overwrite, limit=args.limit, max_batches=args.max_batches,
                           data_dir=args.data_dir, distill=args.distill, temperature=args.temperature)
    start = summary["start"]
    print(f"\n{start['source_model']} -> {summary['network']}: {start['tensorize']['params_before']:,} -> "
          f"{summary['params']:,} parameters ({start['tensorize']['ratio']:.1f}x); test accuracy "
          f"{_pct(start['source_test_acc'])} dense, {_pct(start['before_training']['test_acc'])} after conversion, "
          f"{_pct(summary['final_test_acc'])} after {summary['epochs_run']} epochs; results in {out}")
    return summary


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


if __name__ == "__main__":
    main()
