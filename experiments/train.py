"""Train a thesis network on MNIST or CIFAR-10 with the JAX or the PyTorch backend.

    python -m experiments.train --dataset mnist --model tt-tt --backend jax --epochs 25

Writes to ``--out`` (default ``runs/<dataset>-<model>-<backend>-<recipe>-s<seed>``): ``config.json``,
``metrics.jsonl`` (one line per epoch), ``checkpoint.safetensors`` (atomic, each epoch: safetensors and JSON, no
pickle; ``--resume`` continues from it with identical results), the weights (``weights-final.safetensors``,
``weights-best-val.safetensors`` or, without a validation holdout, ``weights-best-test.safetensors``; see
:mod:`experiments.weights`), ``curves.png`` and ``summary.json``. The epoch is chosen on the validation split and
its test accuracy is the reported figure; the best test accuracy over epochs (the thesis's protocol) is recorded
too, labelled as such.

A folder that holds a run is never overwritten by accident: a new run there is refused unless ``--resume``
(continue it) or ``--overwrite`` (replace it) is given. Nothing is written before the first epoch ends, so a run
that fails earlier leaves no trace (and a replaced run stays whole until then). Every setting is checked before
any data is loaded; a user's mistake prints one ``error:`` line (``--debug``: the traceback).

``--devices N`` trains data parallel, ``--batch-size`` being the global batch (``docs/multi_device.md``,
:mod:`experiments.parallel`)::

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.train --backend jax --devices 2
    python -m experiments.train --backend torch --devices 2          # or: torchrun --nproc-per-node 2 -m ...
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from experiments import checkpoint as checkpoints
from experiments import parallel
from experiments.checkpoint import CHECKPOINT, LEGACY_CHECKPOINT, Checkpoint
from experiments.cli import USER_ERRORS, add_debug_flag, user_errors
from experiments.data import Dataset, iterate_batches, load_dataset, num_batches, resolve_data_dir
from experiments.machine import cpu_model, cpu_vector_extension
from experiments.memory import retain_freed_memory, retained
from experiments.optim import FLAGS as OPTIMIZER_FLAGS
from experiments.optim import OPTIMIZERS, OptimizerConfig, named
from experiments.presets import PRESETS, Network, get_preset, thesis_network
from experiments.recipes import DENSE_INITS, RECIPES, TT_INITS, check_inits, recipe_config
from experiments.weights import WEIGHTS_FILES, write_weights

__all__ = ["CHECKPOINT", "RUN_FILES", "Distill", "DivergenceError", "RunConfig", "Start", "config_differences",
           "main", "silent_progress", "train"]

DIVERGENCE_LOSS = 1e3  # cross-entropy of 10 classes starts near 2.3; beyond this the run has diverged
#: The files a run writes: a folder holding any of them holds a run, and --overwrite removes them.
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "curves.png", CHECKPOINT, LEGACY_CHECKPOINT,
             *WEIGHTS_FILES.values())


class DivergenceError(RuntimeError):
    """The loss became NaN/inf or exploded."""


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "mnist"
    model: str = "tt-tt"
    backend: str = "jax"
    epochs: int = 25
    batch_size: int = 100
    eval_batch_size: int = 1000
    seed: int = 0
    val_size: int = 5000
    limit: int | None = None  # examples per split, for smoke runs
    max_batches: int | None = None  # training batches per epoch, for time-boxed runs
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data_dir: str | None = None
    recipe: str = "ours"  # the recipe the run started from (experiments.recipes); the fields below may differ
    tt_init: str = "lecun"  # experiments.recipes.TT_INITS
    dense_init: str = "lecun"  # experiments.recipes.DENSE_INITS
    normalize: bool = True  # standardise inputs; False: raw [0, 1] pixels
    label_smoothing: float = 0.0
    devices: int = 1  # data parallel (experiments.parallel): batch_size is the global batch, split over them

    def check(self) -> RunConfig:
        """Returns ``self`` if every field is valid, else a ``ValueError`` names the field and its flag.

        :func:`train` and the CLIs call it before any data is loaded or model built. (Not in ``__post_init__``:
        :mod:`experiments.studies` compares configurations with placeholder fields.)

        >>> RunConfig(batch_size=0).check()
        Traceback (most recent call last):
        ...
        ValueError: batch_size (--batch-size) must be a positive integer, got 0
        """
        for f in fields(self):
            if f.name in _RULES and not _RULES[f.name][0](getattr(self, f.name)):
                raise ValueError(f"{named(f.name, flag(f.name))} must be {_RULES[f.name][1]}, "
                                 f"got {getattr(self, f.name)!r}")
        if not isinstance(self.optimizer, OptimizerConfig):
            raise ValueError(f"optimizer must be an OptimizerConfig, got {type(self.optimizer).__name__}")
        check_inits(self.tt_init, self.dense_init)
        spec = get_preset(self.model)
        if spec.dataset != self.dataset:
            raise ValueError(f"model {self.model!r} (--model) is a {spec.dataset} network, not for "
                             f"--dataset {self.dataset}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping) -> RunConfig:
        """The configuration :meth:`to_dict` gave (a run's ``config.json``), checked; a ``ValueError`` names an
        unknown or a bad field. A ``"network"`` entry (a run of :class:`Start`) is not a field: it is left out.

        >>> RunConfig.from_dict(RunConfig(batch_size=50).to_dict()) == RunConfig(batch_size=50)
        True
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - names - {"network"})
        if unknown:
            raise ValueError(f"not a run configuration: unknown fields {unknown}")
        values = {k: v for k, v in record.items() if k in names}
        if isinstance(values.get("optimizer"), Mapping):
            values["optimizer"] = OptimizerConfig(**values["optimizer"])
        return cls(**values).check()


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation (Hinton et al. 2015) from a teacher, for a run of :class:`Start`.

    The loss of each training step is ``(1 - weight)`` times the run's cross-entropy plus ``weight *
    temperature**2`` times the KL divergence from the teacher's softened distribution (its logits over
    ``temperature``) to the student's. ``teacher`` maps a batch of inputs to the teacher's logits; it is called
    once, on the whole training split, before the first epoch (no augmentation: the logits stay those of each
    example). The reported training loss is this loss.

    >>> Distill(lambda x: x, weight=1.5).check()
    Traceback (most recent call last):
    ...
    ValueError: distill weight must be in (0, 1], got 1.5
    """

    teacher: Callable[[np.ndarray], np.ndarray]
    weight: float = 0.5
    temperature: float = 2.0

    def check(self) -> Distill:
        for name, value, ok, what in (("weight", self.weight, lambda v: 0 < v <= 1, "in (0, 1]"),
                                      ("temperature", self.temperature, lambda v: v > 0, "positive")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not ok(value):
                raise ValueError(f"distill {name} must be {what}, got {value!r}")
        if not callable(self.teacher):
            raise ValueError(f"distill teacher must be callable, got {type(self.teacher).__name__}")
        return self

    def logits(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """The teacher's float32 logits for every row of ``x``, in batches of ``batch_size``."""
        return np.concatenate([np.asarray(self.teacher(x[k:k + batch_size]), np.float32)
                               for k in range(0, len(x), batch_size)])


@dataclass(frozen=True)
class Start:
    """How a run starts other than as its preset drawn from the seed: :mod:`experiments.compress`'s hook.

    ``spec``: the network trained instead of the preset ``config.model`` (a tensorized one; the run keeps the
    preset's name as ``model`` and records ``spec`` in ``config.json`` under ``"network"``, which
    :func:`experiments.load_model` reads). ``weights``: the parameters and batch-norm statistics to start from,
    in :mod:`tt_common.transfer`'s naming (``None``: drawn from the seed as any run's). A run that starts from
    weights is evaluated before its first epoch; ``summary.json`` holds that under ``"start"``, with ``info``.
    ``distill``: train it against a teacher too (:class:`Distill`).
    """

    spec: Network
    weights: Mapping[str, np.ndarray] | None = None
    info: Mapping[str, object] = field(default_factory=dict)
    distill: Distill | None = None

    def check(self, config: RunConfig) -> Start:
        """Returns ``self`` if ``spec`` fits ``config``'s data (dataset, input size, classes), else a ValueError."""
        preset = get_preset(config.model)
        if not isinstance(self.spec, Network):
            raise ValueError(f"start.spec must be an experiments.presets.Network, got {type(self.spec).__name__}")
        if (self.spec.dataset, self.spec.in_features, self.spec.num_classes) != (
                preset.dataset, preset.in_features, preset.num_classes):
            raise ValueError(f"start.spec {self.spec.name!r} ({self.spec.dataset}, {self.spec.in_features} -> "
                             f"{self.spec.num_classes}) does not fit the data of model {config.model!r}")
        if self.distill is not None:
            if not isinstance(self.distill, Distill):
                raise ValueError(f"start.distill must be an experiments.train.Distill, got "
                                 f"{type(self.distill).__name__}")
            self.distill.check()
        return self


def flag(field_name: str) -> str:
    """The training CLI's flag of a :class:`RunConfig` field (or of an ``optimizer`` field)."""
    return OPTIMIZER_FLAGS.get(field_name) or "--" + field_name.replace("_", "-")


def _integer(value: object, low: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _optional(check):
    return lambda v: v is None or check(v)


_POSITIVE = (lambda v: _integer(v, 1), "a positive integer")
# field -> (check, what it must be)
_RULES = {
    "dataset": (lambda v: v in ("mnist", "cifar10"), "'mnist' or 'cifar10'"),
    "model": (lambda v: v in PRESETS, f"one of {sorted(PRESETS)}"),
    "backend": (lambda v: v in ("jax", "torch"), "'jax' or 'torch'"),
    "epochs": _POSITIVE, "batch_size": _POSITIVE, "eval_batch_size": _POSITIVE, "devices": _POSITIVE,
    "seed": (lambda v: _integer(v, 0), "a non-negative integer"),
    "val_size": (lambda v: _integer(v, 0), "a non-negative integer (0: no validation holdout)"),
    "limit": (_optional(_POSITIVE[0]), "a positive integer or None (all examples)"),
    "max_batches": (_optional(_POSITIVE[0]), "a positive integer or None (every batch)"),
    "data_dir": (_optional(lambda v: isinstance(v, (str, os.PathLike))), "a path or None"),
    "recipe": (lambda v: v in RECIPES, f"one of {sorted(RECIPES)}"),
    "normalize": (lambda v: isinstance(v, bool), "True or False"),
    "label_smoothing": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < 1,
                        "a number in [0, 1)"),
}


def _backend(config: RunConfig, spec: Network, world: parallel.World = parallel.SINGLE):
    if config.backend == "jax":
        from experiments.backend_jax import JaxBackend

        return JaxBackend(spec, config.optimizer, config.seed, devices=config.devices, **_model_options(config))
    if config.backend == "torch":
        from experiments.backend_torch import TorchBackend

        return TorchBackend(spec, config.optimizer, config.seed, world=world, **_model_options(config))
    raise ValueError(f"backend must be 'jax' or 'torch', got {config.backend!r}")


def _model_options(config: RunConfig) -> dict:
    return {"tt_init": config.tt_init, "dense_init": config.dense_init, "label_smoothing": config.label_smoothing}


def _check_loss(loss: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss) or loss > DIVERGENCE_LOSS:
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step}: loss = {loss}. "
            "Lower the learning rate (or check the data normalisation) and start again."
        )


def _train_epoch(backend, data: Dataset, config: RunConfig, epoch: int, progress,
                 teacher: np.ndarray | None = None) -> tuple[float, float]:
    """One epoch; ``teacher``: the teacher's logits of every training example (distillation)."""
    batches = num_batches(len(data.y_train), config.batch_size)
    if config.max_batches is not None:
        batches = min(batches, config.max_batches)
    # With a teacher the batches carry the examples' indices (the same order), to take their logits too.
    labels = data.y_train if teacher is None else np.arange(len(data.y_train))
    it = iterate_batches(data.x_train, labels, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch)
    losses, corrects, seen = [], [], 0
    bar = progress(total=batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)
    for step, (x, y) in zip(range(batches), it):
        if teacher is None:
            loss, correct = backend.train_step(x, y)
        else:
            index, y = y, data.y_train[y]
            loss, correct = backend.train_step(x, y, teacher[index])
        losses.append(loss)
        corrects.append(correct)
        seen += len(y)
        if step % 20 == 0 or step == batches - 1:  # syncs with the device only now and then
            current = float(loss)
            _check_loss(current, epoch, step)
            bar.set_postfix(loss=f"{current:.4f}", acc=f"{int(sum(int(c) for c in corrects[-20:])) / min(seen, 20 * config.batch_size):.3f}")
        bar.update(1)
    bar.close()
    mean_loss = float(np.mean([float(v) for v in losses]))
    _check_loss(mean_loss, epoch, batches)
    return mean_loss, sum(int(c) for c in corrects) / seen


def _evaluate(backend, x, y, batch_size: int) -> tuple[float | None, float | None]:
    """Mean loss and accuracy over ``(x, y)``; ``(None, None)`` for an empty split (no validation holdout)."""
    if len(y) == 0:
        return None, None
    return backend.evaluate(iterate_batches(x, y, batch_size, shuffle=False))


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        if rows[0][f"{split}_acc"] is None:  # no validation holdout
            continue
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], marker="o", label=split)
        ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in rows], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary(config: RunConfig, data: Dataset, backend, rows: list[dict], spec: Network) -> dict:
    """What the run achieved. Without a validation holdout no epoch is chosen: ``test_acc`` is ``None``."""
    has_val = rows[0]["val_acc"] is not None
    chosen = max(rows, key=lambda r: (r["val_acc"], -r["epoch"])) if has_val else dict.fromkeys(rows[0])
    best_test = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    params = spec.param_count()
    return {
        "dataset": data.name,
        "model": config.model,
        "network": spec.name,
        "recipe": config.recipe,
        "backend": config.backend,
        "device": backend.device,
        "devices": config.devices,
        "seed": config.seed,
        "params": params,
        "thesis_params": spec.thesis_params,
        "thesis_accuracy": spec.thesis_accuracy,
        "epochs_run": len(rows),
        "epochs_planned": config.epochs,
        "max_batches_per_epoch": config.max_batches,
        "limit": config.limit,
        "epoch_chosen_on_val": chosen["epoch"],
        "val_acc": chosen["val_acc"],
        "test_acc": chosen["test_acc"],
        "best_test_acc_thesis_protocol": best_test["test_acc"],
        "best_test_epoch_thesis_protocol": best_test["epoch"],
        "final_test_acc": rows[-1]["test_acc"],
        "best_test_loss_x100_thesis_protocol": 100 * best_test["test_loss"],  # the thesis table's "loss"
        "train_time_s": sum(r["epoch_time_s"] for r in rows),
        "cpu": cpu_model(),
        "cpu_simd": cpu_vector_extension(),  # same model name, other SIMD: other speed and rounding
        "freed_memory_retained": retained(),  # see experiments.memory: it changes the times, not the results
        "tt_directions": list(spec.tt_directions()),  # the contraction order changes the times, not the results
        "tt_plans": [[list(groups), direction] for groups, direction in backend.tt_plans(config.batch_size)],
    }


def _comparable(config: dict) -> dict:
    """A configuration as resuming compares it: flat (``optimizer.learning_rate``), ``data_dir`` resolved to the
    folder it means (unset, relative and absolute spellings of one folder are equal), ``epochs`` left out (a run
    may be resumed with more epochs) and ``devices`` too (a run resumes on any device count that divides its batch:
    :func:`experiments.parallel.check_resume`)."""
    flat = {}
    for key, value in config.items():
        if key in ("epochs", "devices"):
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key == "data_dir":
            resolved = resolve_data_dir(value)
            flat[key] = None if resolved is None else str(resolved.resolve())
        else:
            flat[key] = value
    return flat


def config_differences(saved: dict, current: dict) -> list[str]:
    """Each setting (but ``epochs``) in which two run configurations differ, with flag and both values.

    >>> a = RunConfig().to_dict()
    >>> b = RunConfig(batch_size=50, optimizer=OptimizerConfig(learning_rate=0.1)).to_dict()
    >>> config_differences(a, b)
    ['batch_size (--batch-size): 100 in the checkpoint, 50 now', 'optimizer.learning_rate (--lr): 0.001 in the checkpoint, 0.1 now']
    >>> config_differences(a, {**a, "epochs": 50, "devices": 2, "data_dir": None})
    []
    """
    # Through JSON, as the checkpoint went: tuples and lists compare equal.
    a, b = _comparable(json.loads(json.dumps(saved))), _comparable(json.loads(json.dumps(current)))
    absent = object()
    differences = []
    for key in [*a, *(k for k in b if k not in a)]:
        old, new = a.get(key, absent), b.get(key, absent)
        if old != new:
            show = ["(not set)" if v is absent else repr(v) for v in (old, new)]
            name = named(key, flag(key.rpartition(".")[2]))
            differences.append(f"{name}: {show[0]} in the checkpoint, {show[1]} now")
    return differences


def _default_out(config: RunConfig, *, resume: bool, overwrite: bool) -> Path:
    """``runs/<dataset>-<model>-<backend>-<recipe>-s<seed>``, or, when that holds a run and neither ``--resume`` nor
    ``--overwrite`` was given, the first free ``...-2``, ``...-3`` (said on stderr): a rerun never stops on a folder
    the user did not name, and never touches the earlier run. An explicit ``--out`` is never renamed."""
    out = Path("runs") / f"{config.dataset}-{config.model}-{config.backend}-{config.recipe}-s{config.seed}"
    if resume or overwrite or not any((out / name).exists() for name in RUN_FILES):
        return out
    fresh = _free_name(out)
    print(f"{out} holds a run: writing to {fresh} (--resume or --overwrite to use {out})", file=sys.stderr)
    return fresh


def _free_name(out: Path) -> Path:
    """The first of ``out-2``, ``out-3``, ... that does not exist, for an error to suggest."""
    k = 2
    while out.with_name(f"{out.name}-{k}").exists():
        k += 1
    return out.with_name(f"{out.name}-{k}")


def _check_out(out: Path, config: RunConfig, *, resume: bool, overwrite: bool,
               resumable: bool = True) -> Checkpoint | None:
    """Refuses what would lose a run (before any data is loaded); returns the checkpoint to resume from, if any.

    ``resumable``: whether the refusal may suggest ``--resume`` (not for runs of :class:`Start`)."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if resume:
        return _saved_run(out, config)
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not overwrite:
        hint = "continue it with --resume, replace it" if resumable else "replace it"
        raise ValueError(f"{out} holds a run ({', '.join(held)}): {hint} with --overwrite, or write elsewhere "
                         f"with --out (e.g. --out {_free_name(out)})")
    return None


def _saved_run(out: Path, config: RunConfig) -> Checkpoint:
    path = out / CHECKPOINT
    if not path.is_file():
        if (out / LEGACY_CHECKPOINT).exists():
            raise ValueError(f"--resume: {out / LEGACY_CHECKPOINT} is a checkpoint of the earlier pickle format, "
                             "which is not loaded (unpickling a file can run any code in it); start the run again "
                             "with --overwrite")
        raise ValueError(f"--resume: no checkpoint in {out} (no {CHECKPOINT}); check --out, or start a new run "
                         "without --resume")
    saved = checkpoints.read(path)
    differences = config_differences(saved.config, config.to_dict())
    if differences:
        hint = (" A cosine decay spans the run it was started for: resume with --cosine-epochs "
                f"{saved.config['optimizer']['cosine_epochs']} to keep it." if any(
                    d.startswith("optimizer.cosine_epochs") for d in differences) else "")
        raise ValueError(f"--resume: the checkpoint in {out} was written by a different configuration: "
                         f"{'; '.join(differences)} (only --epochs and --devices may change).{hint}")
    if config.epochs < len(saved.rows):
        raise ValueError(f"--resume: epochs (--epochs) is {config.epochs}, but the checkpoint in {out} has "
                         f"already run {len(saved.rows)} epochs")
    parallel.check_resume(saved.config, config, out)
    return saved


def _make_out(out: Path) -> list[Path]:
    """Creates ``out`` if needed and checks that it takes files; returns the folders it created, deepest first."""
    created, folder = [], out
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        _remove_empty(created)
        raise ValueError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Removes the folders a run created, deepest first, as long as they are empty (a run that wrote is kept)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_weights(out: Path, which: str, backend, config: RunConfig, epoch: int) -> None:
    metadata = {"model": config.model, "dataset": config.dataset, "backend": config.backend,
                "recipe": config.recipe, "seed": str(config.seed), "epoch": str(epoch), "which": which}
    write_weights(out / WEIGHTS_FILES[which], backend.parameters(), metadata)


def _config_record(config: RunConfig, start: Start | None) -> dict:
    """What ``config.json`` holds: the configuration, and the network of a :class:`Start` that is no preset."""
    return config.to_dict() if start is None else {**config.to_dict(), "network": start.spec.to_dict()}


def _commit_epoch(out: Path, config: RunConfig, backend, rows: list[dict], *, first: bool, replace_run: bool,
                  record: dict) -> None:
    """Writes what an epoch leaves: the best weights if it is the best epoch so far, the checkpoint, the metrics.

    The first epoch of a process also writes ``config.json`` (``record``), after removing the files of the run it
    replaces. Checkpoint before metrics: a kill in between leaves a line short, and resuming rewrites the lines
    from it.
    """
    if first:
        if replace_run:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        checkpoints.write_atomic(out / "config.json", json.dumps(record, indent=2).encode())
    split = "val" if rows[0]["val_acc"] is not None else "test"
    if max(rows, key=lambda r: (r[f"{split}_acc"], -r["epoch"])) is rows[-1]:  # ties: the earliest, as _summary
        _write_weights(out, f"best-{split}", backend, config, rows[-1]["epoch"])
    arrays, meta = backend.state()
    checkpoints.write(out / CHECKPOINT, Checkpoint(config.to_dict(), rows, config.backend, arrays, meta))
    checkpoints.write_atomic(out / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())


class _SilentBar:
    def set_postfix(self, **_) -> None:
        pass

    def update(self, _) -> None:
        pass

    def close(self) -> None:
        pass


def silent_progress(**_) -> _SilentBar:
    """A ``progress`` factory for :func:`train` that shows nothing (tests, scripts that log elsewhere)."""
    return _SilentBar()


def train(config: RunConfig, out: Path, *, resume: bool = False, overwrite: bool = False, progress=None,
          start: Start | None = None) -> dict:
    """Runs (or resumes) a training run in ``out`` and returns its summary.

    ``resume`` continues from the checkpoint in ``out`` (an error if there is none, or if another configuration
    wrote it: only ``epochs`` and ``devices`` may change); ``overwrite`` replaces the run in ``out``; without either
    a folder that holds a run is refused. Nothing is written before the first epoch ends (a replaced run stays whole
    until then), and a folder created for a run that fails before then is removed. ``start``: train another
    network than the preset, or from given weights (:class:`Start`; such a run is not resumed, and runs on one
    device).

    ``config.devices > 1`` trains data parallel (:mod:`experiments.parallel`): JAX in this process over a device
    mesh; torch in ``devices`` processes, started here (``torch.multiprocessing``) unless a launcher (torchrun)
    started this one as one of them. The device count is checked, with the batch split, before any data is loaded.
    Only the main process (rank 0) writes ``out`` and reports progress.
    """
    if progress is None:
        from tqdm.auto import tqdm as progress
    out = Path(out)
    config.check()
    if start is not None:
        start.check(config)
        if resume:
            raise ValueError("--resume: a run started from a converted or another network (experiments.compress) "
                             "is not resumed; run it again")
        if config.devices != 1:
            raise ValueError(f"--devices {config.devices}: a run started from a converted or another network "
                             "(experiments.compress) trains on one device")
    saved = _check_out(out, config, resume=resume, overwrite=overwrite, resumable=start is None)
    world = parallel.start(config)  # checks the devices against the batch and what is present
    created = _make_out(out) if world.is_main else []
    try:
        data = _load(config)
        if parallel.spawns(config, world):
            args = (config, out, _shared(data), saved is not None, progress, overwrite, retained())
            return parallel.spawn("experiments.train:_spawned_run", config.devices, *args)
        return _run(world, config, out, data, saved, progress, replace_run=overwrite, start=start)
    except BaseException:
        _remove_empty(created)
        raise


def _load(config: RunConfig) -> Dataset:
    return load_dataset(config.dataset, data_dir=config.data_dir, val_size=config.val_size, seed=config.seed,
                        normalize=config.normalize, limit=config.limit)


def _shared(data: Dataset) -> Dataset:
    """``data`` with its arrays as torch tensors, which ``torch.multiprocessing`` hands to the processes it starts
    through shared memory (one copy for all, not one pickle each)."""
    import torch

    return replace(data, **{name: torch.from_numpy(getattr(data, name)) for name in _ARRAYS})


_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _spawned_run(world: parallel.World, config: RunConfig, out: Path, data: Dataset, resume: bool, progress,
                 replace_run: bool, retain: bool) -> dict | None:
    """One rank of a run that :func:`train` started in several processes (:func:`experiments.parallel.spawn`)."""
    if retain:
        retain_freed_memory_for([config.model])  # as the parent did; before the backend allocates anything
    data = replace(data, **{name: getattr(data, name).numpy() for name in _ARRAYS})
    saved = checkpoints.read(out / CHECKPOINT) if resume else None  # the parent has checked it
    summary = _run(world, config, out, data, saved, progress, replace_run=replace_run)
    return summary if world.is_main else None


def _say(world: parallel.World):
    """``print`` on the main process, nothing on the others (one process reports a run)."""
    return print if world.is_main else (lambda *args, **kwargs: None)


def _evaluate_start(backend, data: Dataset, config: RunConfig) -> dict:
    """The losses and accuracies of the weights a run starts from (a converted model's), before any step."""
    val_loss, val_acc = _evaluate(backend, data.x_val, data.y_val, config.eval_batch_size)
    test_loss, test_acc = _evaluate(backend, data.x_test, data.y_test, config.eval_batch_size)
    val = "—" if val_acc is None else f"{100 * val_acc:.2f}%"
    print(f"before training: val {val} | test {100 * test_acc:.2f}%")
    return {"val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc}


def _run(world: parallel.World, config: RunConfig, out: Path, data: Dataset, saved: Checkpoint | None, progress, *,
         replace_run: bool, start: Start | None = None) -> dict:
    with parallel.process_group(world, config.backend):
        return _epochs(world, config, out, data, saved, progress if world.is_main else silent_progress,
                       replace_run=replace_run, start=start)


def _epochs(world: parallel.World, config: RunConfig, out: Path, data: Dataset, saved: Checkpoint | None, progress,
            *, replace_run: bool, start: Start | None = None) -> dict:
    say = _say(world)
    spec = get_preset(config.model) if start is None else start.spec
    backend = _backend(config, spec, world)
    params = spec.param_count()
    begun = None
    if start is not None and start.weights is not None:
        backend.load_parameters(dict(start.weights))
        begun = _evaluate_start(backend, data, config)
    teacher = None
    if start is not None and start.distill is not None:
        teacher = start.distill.logits(data.x_train, config.eval_batch_size)
        backend.set_distillation(start.distill.weight, start.distill.temperature)
    rows: list[dict] = []
    if saved is not None:
        try:
            backend.load_state(saved.arrays, saved.meta)
        except (ValueError, KeyError) as error:
            raise checkpoints.CheckpointError(f"{out / CHECKPOINT}: {error}") from None
        rows = list(saved.rows)
        say(f"resumed from {out / CHECKPOINT} after epoch {len(rows)}", file=sys.stderr)
    say(f"{data.name}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test; "
        f"{spec.name} ({params:,} params) with {config.backend} on {backend.device}")
    say(backend.report())
    first = len(rows)
    record = _config_record(config, start)
    for epoch in range(first, config.epochs):
        lr = config.optimizer.lr_at(epoch)
        backend.set_learning_rate(lr)
        backend.begin_epoch(epoch)
        tick = time.perf_counter()
        train_loss, train_acc = _train_epoch(backend, data, config, epoch, progress, teacher)
        epoch_time = time.perf_counter() - tick
        val_loss, val_acc = _evaluate(backend, data.x_val, data.y_val, config.eval_batch_size)
        test_loss, test_acc = _evaluate(backend, data.x_test, data.y_test, config.eval_batch_size)
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "epoch_time_s": epoch_time,
        }
        rows.append(row)
        if world.is_main:  # every process holds the same state: one writes it
            _commit_epoch(out, config, backend, rows, first=epoch == first, replace_run=replace_run, record=record)
        val = "—" if val_acc is None else f"{100 * val_acc:.2f}%"
        say(f"epoch {epoch + 1}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
            f"val {val} | test {100 * test_acc:.2f}% | {epoch_time:.1f}s")
    summary = _summary(config, data, backend, rows, spec)
    if start is not None:
        summary["start"] = {**start.info, "before_training": begun}
    if world.is_main:
        _write_weights(out, "final", backend, config, len(rows))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        _plot(rows, out / "curves.png", f"{spec.name} on {data.name} ({config.backend})")
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--model", choices=sorted(PRESETS), default="tt-tt")
    p.add_argument("--backend", choices=("jax", "torch"), default="jax")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="improved",
                   help="the defaults of every flag below that has none (experiments.recipes; default: improved)")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (MNIST 25, CIFAR-10 100)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the recipe's")
    p.add_argument("--lr", type=float, default=None,
                   help="default: the recipe's, or 0.001 (sgd, adam, rmsprop) and 1.0 (adadelta) for another optimizer")
    p.add_argument("--momentum", type=float, default=None, help="sgd (ours 0.9, thesis 0.8)")
    p.add_argument("--beta1", type=float, default=None, help="adam (0.9)")
    p.add_argument("--beta2", type=float, default=None, help="adam (0.999)")
    p.add_argument("--alpha", type=float, default=None, help="rmsprop: decay of the squared-gradient average (0.99)")
    p.add_argument("--rho", type=float, default=None, help="adadelta (ours 0.95, thesis 0.9)")
    p.add_argument("--eps", type=float, default=None, help="default: 1e-8 (adam, rmsprop), 1e-6 (adadelta)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--decay-every", type=int, default=None, help="step learning-rate decay every N epochs")
    p.add_argument("--decay-gamma", type=float, default=None)
    p.add_argument("--cosine-epochs", type=int, default=None, help="half-cosine learning-rate decay over N epochs")
    p.add_argument("--tt-init", choices=TT_INITS, default=None, help="lecun (variance-exact) or thesis (per core)")
    p.add_argument("--dense-init", choices=DENSE_INITS, default=None, help="lecun (nnx.Linear's) or torch (nn.Linear's)")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardise the inputs (--no-normalize: raw [0, 1] pixels)")
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=None, help="training examples held out (ours 5000, thesis 0)")
    p.add_argument("--limit", type=int, default=None, help="examples per split (smoke runs)")
    p.add_argument("--max-batches", type=int, default=None, help="training batches per epoch (time-boxed runs)")
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar10-jpeg/ (or $TT_DATA_DIR)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto", help="auto: a GPU when the backend sees one")
    p.add_argument("--devices", type=int, default=None,
                   help="data parallel over N devices, --batch-size the global batch (default: 1, or torchrun's "
                        "WORLD_SIZE); JAX shards each batch over N of its devices, torch runs N DDP processes "
                        "(docs/multi_device.md)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (refused without it)")
    add_debug_flag(p)
    return p


# argparse destination -> OptimizerConfig field (the optimizer's name is handled apart)
_OPTIMIZER_FLAGS = {f.removeprefix("--").replace("-", "_"): field for field, f in OPTIMIZER_FLAGS.items()
                    if field != "name"}
# CLI flag -> RunConfig field, for the fields a recipe sets
_RUN_FLAGS = ("epochs", "val_size", "tt_init", "dense_init", "normalize", "label_smoothing")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The recipe's configuration for the model, with every flag the user gave replacing the recipe's value.

    Checked (:meth:`RunConfig.check`): a ``ValueError`` names a bad flag."""
    base = recipe_config(args.recipe, args.dataset, args.model)
    optimizer = base.optimizer
    if args.optimizer is not None and args.optimizer != optimizer.name:  # another optimizer: its usual settings
        optimizer = OptimizerConfig(args.optimizer, learning_rate=1.0 if args.optimizer == "adadelta" else 0.001)
    given = {field: getattr(args, flag) for flag, field in _OPTIMIZER_FLAGS.items() if getattr(args, flag) is not None}
    if optimizer.cosine_epochs == base.epochs and args.epochs is not None and args.cosine_epochs is None:
        given["cosine_epochs"] = args.epochs  # the recipe's cosine spans its run: so it does the run the user asks
    optimizer = replace(optimizer, **given)
    run = {flag: getattr(args, flag) for flag in _RUN_FLAGS if getattr(args, flag) is not None}
    return replace(base, backend=args.backend, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                   seed=args.seed, limit=args.limit, max_batches=args.max_batches, optimizer=optimizer,
                   data_dir=args.data_dir, devices=parallel.requested_devices(args.devices, args.backend),
                   **run).check()


def retain_freed_memory_for(models: list[str]) -> bool:
    """:func:`experiments.memory.retain_freed_memory`, unless a float32 parameter of ``models`` is too large for it.

    The training CLIs call it first thing; ``$TT_RETAIN_MEMORY=0`` turns it off.
    """
    largest = max((get_preset(m).largest_parameter() for m in models), default=0)
    return retain_freed_memory(4 * largest)


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    with user_errors(args.debug, (*USER_ERRORS, DivergenceError)):
        config = config_from_args(args)  # checks every setting: nothing is loaded or built yet
        retain_freed_memory_for([config.model])  # before the backend allocates anything
        if args.device == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        out = args.out or _default_out(config, resume=args.resume, overwrite=args.overwrite)
        summary = train(config, out, resume=args.resume, overwrite=args.overwrite)
    if parallel.is_main_process():  # under a launcher, every process runs main(): one reports
        print(f"\n{result_line(summary)}; results in {out}")
        if (line := thesis_line(summary)) is not None:
            print(line)
    return summary


def result_line(summary: dict) -> str:
    """One line: the test accuracy at the epoch chosen on validation (if any) and the best test epoch's."""
    chosen = ("no validation holdout" if summary["test_acc"] is None else
              f"test accuracy {100 * summary['test_acc']:.2f}% at epoch {summary['epoch_chosen_on_val']} (chosen on "
              "validation)")
    return (f"{summary['model']} on {summary['dataset']} ({summary['backend']}, {summary['device']}, recipe "
            f"{summary['recipe']}): {chosen}; best test over epochs {100 * summary['best_test_acc_thesis_protocol']:.2f}% "
            f"at epoch {summary['best_test_epoch_thesis_protocol']} (thesis protocol)")


def thesis_line(summary: dict) -> str | None:
    """How the run compares with the thesis's figure for its network (or the network it varies), if any."""
    spec = get_preset(summary["model"])
    base = thesis_network(spec)
    if base is None:
        return None
    ours = summary["test_acc"] if summary["test_acc"] is not None else summary["best_test_acc_thesis_protocol"]
    protocol = "chosen on validation" if summary["test_acc"] is not None else "best test epoch"
    return (f"thesis: {base.name} {base.thesis_accuracy:.2f}% (best test epoch) with {base.thesis_params or base.param_count():,} "
            f"parameters; this run: {100 * ours:.2f}% ({protocol}) with {summary['params']:,} parameters")


if __name__ == "__main__":
    # Through the imported module, not this __main__ copy of it: the processes that --devices starts (and the errors
    # they send back) then know one RunConfig and one DivergenceError, the CLI's error handler catches them.
    from experiments.train import main as _main

    _main()
