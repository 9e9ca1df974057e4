"""Train a thesis network on MNIST or CIFAR-10 with the JAX or the PyTorch backend.

    python -m experiments.train --dataset mnist --model tt-tt --backend jax --epochs 25

Writes to ``--out`` (default ``runs/<dataset>-<model>-<backend>-s<seed>``):
``config.json``, ``metrics.jsonl`` (one line per epoch), ``checkpoint.pkl``
(atomic, each epoch; ``--resume`` continues from it with identical results),
``curves.png`` and ``summary.json``. The epoch is chosen on the validation
split and its test accuracy is the reported figure; the best test accuracy over
epochs (the thesis's protocol) is recorded too, labelled as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from experiments.data import Dataset, iterate_batches, load_dataset, num_batches
from experiments.optim import OPTIMIZERS, OptimizerConfig
from experiments.presets import PRESETS, get_preset
from experiments.machine import cpu_model, cpu_vector_extension
from experiments.memory import retain_freed_memory, retained

__all__ = ["DivergenceError", "RunConfig", "main", "train"]

DIVERGENCE_LOSS = 1e3  # cross-entropy of 10 classes starts near 2.3; beyond this the run has diverged
CHECKPOINT = "checkpoint.pkl"


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

    def to_dict(self) -> dict:
        return asdict(self)


def _backend(config: RunConfig):
    spec = get_preset(config.model)
    if spec.dataset != config.dataset:
        raise ValueError(f"model {config.model!r} is a {spec.dataset} network, not for {config.dataset}")
    if config.backend == "jax":
        from experiments.backend_jax import JaxBackend

        return JaxBackend(spec, config.optimizer, config.seed)
    if config.backend == "torch":
        from experiments.backend_torch import TorchBackend

        return TorchBackend(spec, config.optimizer, config.seed)
    raise ValueError(f"backend must be 'jax' or 'torch', got {config.backend!r}")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_loss(loss: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss) or loss > DIVERGENCE_LOSS:
        raise DivergenceError(
            f"training diverged at epoch {epoch + 1}, step {step}: loss = {loss}. "
            "Lower the learning rate (or check the data normalisation) and start again."
        )


def _train_epoch(backend, data: Dataset, config: RunConfig, epoch: int, progress) -> tuple[float, float]:
    batches = num_batches(len(data.y_train), config.batch_size)
    if config.max_batches:
        batches = min(batches, config.max_batches)
    it = iterate_batches(data.x_train, data.y_train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch)
    losses, corrects, seen = [], [], 0
    bar = progress(total=batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)
    for step, (x, y) in zip(range(batches), it):
        loss, correct = backend.train_step(x, y)
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


def _evaluate(backend, x, y, batch_size: int) -> tuple[float, float]:
    return backend.evaluate(iterate_batches(x, y, batch_size, shuffle=False))


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
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


def _summary(config: RunConfig, data: Dataset, backend, rows: list[dict], params: int) -> dict:
    chosen = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))
    best_test = max(rows, key=lambda r: (r["test_acc"], -r["epoch"]))
    spec = get_preset(config.model)
    return {
        "dataset": data.name,
        "model": config.model,
        "backend": config.backend,
        "device": backend.device,
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
        "train_time_s": sum(r["epoch_time_s"] for r in rows),
        "cpu": cpu_model(),
        "cpu_simd": cpu_vector_extension(),  # same model name, other SIMD: other speed and rounding
        "freed_memory_retained": retained(),  # see experiments.memory: it changes the times, not the results
        "tt_directions": list(spec.tt_directions()),  # the contraction order changes the times, not the results
        "tt_plans": [[list(groups), direction] for groups, direction in backend.tt_plans(config.batch_size)],
    }


def _without_epochs(config: dict) -> dict:
    """A run may be resumed with more epochs than it was started with; nothing else may change."""
    return {k: v for k, v in config.items() if k != "epochs"}


def train(config: RunConfig, out: Path, *, resume: bool = False, progress=None) -> dict:
    """Runs (or resumes) a training run in ``out`` and returns its summary."""
    if progress is None:
        from tqdm.auto import tqdm as progress
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(config.dataset, data_dir=config.data_dir, val_size=config.val_size, seed=config.seed, limit=config.limit)
    backend = _backend(config)
    params = get_preset(config.model).param_count()
    rows: list[dict] = []
    checkpoint = out / CHECKPOINT
    if resume and checkpoint.exists():
        saved = pickle.loads(checkpoint.read_bytes())
        if _without_epochs(saved["config"]) != _without_epochs(config.to_dict()):
            raise ValueError(f"--resume: the checkpoint in {out} was written by a different configuration")
        backend.load_state(saved["backend"])
        rows = saved["rows"]
        print(f"resumed from {checkpoint} after epoch {len(rows)}", file=sys.stderr)
        # A run killed between its metrics line and its checkpoint left one line too many: rewrite from the rows.
        (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        (out / "metrics.jsonl").write_text("")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    print(f"{data.name}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test; "
          f"{config.model} ({params:,} params) with {config.backend} on {backend.device}")
    print(backend.report())
    for epoch in range(len(rows), config.epochs):
        lr = config.optimizer.lr_at(epoch)
        backend.set_learning_rate(lr)
        start = time.perf_counter()
        train_loss, train_acc = _train_epoch(backend, data, config, epoch, progress)
        epoch_time = time.perf_counter() - start
        val_loss, val_acc = _evaluate(backend, data.x_val, data.y_val, config.eval_batch_size)
        test_loss, test_acc = _evaluate(backend, data.x_test, data.y_test, config.eval_batch_size)
        row = {
            "epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "epoch_time_s": epoch_time,
        }
        rows.append(row)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        _write_atomic(checkpoint, pickle.dumps({"config": config.to_dict(), "rows": rows, "backend": backend.state()}))
        print(f"epoch {epoch + 1}: train loss {train_loss:.4f} acc {100 * train_acc:.2f}% | "
              f"val {100 * val_acc:.2f}% | test {100 * test_acc:.2f}% | {epoch_time:.1f}s")
    summary = _summary(config, data, backend, rows, params)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(rows, out / "curves.png", f"{config.model} on {data.name} ({config.backend})")
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument("--model", choices=sorted(PRESETS), default="tt-tt")
    p.add_argument("--backend", choices=("jax", "torch"), default="jax")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--lr", type=float, default=None, help="default: 0.001 (sgd, adam, rmsprop), 1.0 (adadelta)")
    p.add_argument("--momentum", type=float, default=0.9, help="sgd")
    p.add_argument("--beta1", type=float, default=0.9, help="adam")
    p.add_argument("--beta2", type=float, default=0.999, help="adam")
    p.add_argument("--alpha", type=float, default=0.99, help="rmsprop: decay of the squared-gradient average")
    p.add_argument("--rho", type=float, default=0.9, help="adadelta (the CIFAR-10 study uses 0.95)")
    p.add_argument("--eps", type=float, default=None, help="default: 1e-8 (adam, rmsprop), 1e-6 (adadelta)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--decay-every", type=int, default=0, help="step learning-rate decay every N epochs")
    p.add_argument("--decay-gamma", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--limit", type=int, default=None, help="examples per split (smoke runs)")
    p.add_argument("--max-batches", type=int, default=None, help="training batches per epoch (time-boxed runs)")
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar10-jpeg/ (or $TT_DATA_DIR)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto", help="auto: a GPU when the backend sees one")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    lr = args.lr if args.lr is not None else (1.0 if args.optimizer == "adadelta" else 0.001)
    optimizer = OptimizerConfig(
        args.optimizer, learning_rate=lr, momentum=args.momentum, b1=args.beta1, b2=args.beta2,
        decay=args.alpha, rho=args.rho, eps=args.eps, weight_decay=args.weight_decay,
        decay_every=args.decay_every, decay_gamma=args.decay_gamma,
    )
    return RunConfig(
        dataset=args.dataset, model=args.model, backend=args.backend, epochs=args.epochs,
        batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, seed=args.seed,
        val_size=args.val_size, limit=args.limit, max_batches=args.max_batches, optimizer=optimizer,
        data_dir=args.data_dir,
    )


def retain_freed_memory_for(models: list[str]) -> bool:
    """:func:`experiments.memory.retain_freed_memory`, unless a float32 parameter of ``models`` is too large for it.

    The training CLIs call it first thing; ``$TT_RETAIN_MEMORY=0`` turns it off.
    """
    largest = max((get_preset(m).largest_parameter() for m in models), default=0)
    return retain_freed_memory(4 * largest)


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    retain_freed_memory_for([args.model])  # before the backend allocates anything
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    config = config_from_args(args)
    out = args.out or Path("runs") / f"{config.dataset}-{config.model}-{config.backend}-s{config.seed}"
    try:
        summary = train(config, out, resume=args.resume)
    except DivergenceError as error:
        sys.exit(f"error: {error}")
    print(f"\n{summary['model']} on {summary['dataset']} ({summary['backend']}, {summary['device']}): "
          f"test accuracy {100 * summary['test_acc']:.2f}% at epoch {summary['epoch_chosen_on_val']} "
          f"(chosen on validation); best test over epochs {100 * summary['best_test_acc_thesis_protocol']:.2f}% "
          f"(thesis protocol); results in {out}")
    return summary


if __name__ == "__main__":
    main()
