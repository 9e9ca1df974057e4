"""PyTorch backend of the experiments: the mirror of :mod:`experiments.backend_jax`.

On several devices (a :class:`experiments.parallel.World` of several processes, one device each) the model is
wrapped in ``DistributedDataParallel``, its batch norms are :class:`GlobalBatchNorm1d` (the global batch's
statistics) and each rank trains on its rows of every global batch (:func:`experiments.parallel.shard`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed import _functional_collectives as funcol

import tt_torch
from experiments.models_torch import build
from experiments.optim import OptimizerConfig
from experiments.parallel import SINGLE, World, shard
from experiments.presets import Network

__all__ = ["GlobalBatchNorm1d", "TorchBackend", "global_batch_norms"]

_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
}


def _summed(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, differentiably."""
    return funcol.all_reduce(t, "sum", torch.distributed.group.WORLD)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that, in training under ``torch.distributed``, normalises with the mean and (biased)
    variance of the global batch, all ranks' rows together, and updates its running statistics with them (the
    unbiased variance, as ``nn.BatchNorm1d``): the single-device batch norm of the global batch, up to rounding.

    ``nn.SyncBatchNorm`` computes the same but refuses CPU tensors (torch 2.13), so gloo runs could not use it;
    this one runs on CPUs and GPUs alike, and the path tested here is the path run on GPUs. The all-reduces are
    ``torch.distributed._functional_collectives.all_reduce`` (what torch 2.13 names as the successor of the
    deprecated ``torch.distributed.nn.functional.all_reduce``), which autograd differentiates: its backward
    all-reduces the gradient, so each rank's input gradient includes the other ranks' losses, as on one
    device. Outside a process group, or in eval mode, it is ``nn.BatchNorm1d``. Same parameters and buffers (state_dict keys).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
            return super().forward(x)
        if x.dim() != 2 or not (self.affine and self.track_running_stats):
            raise ValueError("GlobalBatchNorm1d covers (batch, features) inputs with affine parameters and running "
                             f"statistics; got a {x.dim()}-d input, affine={self.affine}, "
                             f"track_running_stats={self.track_running_stats}")
        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)
        sums = _summed(torch.cat([x.sum(0), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        var = _summed(((x - mean) ** 2).sum(0)) / n  # two passes: as exact as the single-device kernel
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - factor).add_(factor * mean)
            self.running_var.mul_(1 - factor).add_(factor * var * n / (n - 1).clamp(min=1))
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def global_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with every ``nn.BatchNorm1d`` replaced by a :class:`GlobalBatchNorm1d` holding the same
    parameters and buffers (the same tensors: an optimizer made before still updates them).

    >>> net = global_batch_norms(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)))
    >>> type(net[1]).__name__, net[1].momentum
    ('GlobalBatchNorm1d', 0.1)
    """
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            norm = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats, device=child.running_mean.device)
            norm.weight, norm.bias = child.weight, child.bias
            norm.running_mean, norm.running_var = child.running_mean, child.running_var
            norm.num_batches_tracked = child.num_batches_tracked
            norm.train(child.training)
            setattr(module, name, norm)
        else:
            global_batch_norms(child)
    return module


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of ``rank``'s dropout masks in ``epoch``: a pure function, so a resumed run draws them again."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class TorchBackend:
    """Trains one :class:`experiments.presets.Network` with PyTorch (CUDA when available), on one device or as one
    rank of a ``DistributedDataParallel`` world (``world``: its process group must be initialized)."""

    name = "torch"

    def __init__(self, spec: Network, optimizer: OptimizerConfig, seed: int, *, tt_init: str = "lecun",
                 dense_init: str = "lecun", label_smoothing: float = 0.0, world: World = SINGLE):
        self.world = world
        cuda = torch.cuda.is_available()
        self._device = torch.device("cuda", world.local_rank) if cuda and world.processes > 1 else \
            torch.device("cuda" if cuda else "cpu")
        self.model = build(spec, seed=seed, tt_init=tt_init, dense_init=dense_init, device=self._device)
        self._step_model: nn.Module = self.model  # what the training step calls: the model, or its DDP wrapper
        if world.processes > 1:
            from torch.nn.parallel import DistributedDataParallel

            global_batch_norms(self.model)
            # DDP broadcasts rank 0's parameters and buffers (all ranks built the same ones from the seed anyway)
            self._step_model = DistributedDataParallel(self.model, device_ids=[self._device.index] if cuda else None)
        self.seed = seed
        self.label_smoothing = label_smoothing
        self.distill: tuple[float, float] | None = None  # (weight, temperature): set_distillation
        kwargs = {**optimizer.convention().torch_kwargs(), "weight_decay": optimizer.weight_decay}
        self.optimizer = _OPTIMIZERS[optimizer.name](self.model.parameters(), **kwargs)

    @property
    def device(self) -> str:
        many = self.world.processes
        if self._device.type == "cuda":
            name = torch.cuda.get_device_name(self._device)
            return f"torch cuda: {name}" if many == 1 else f"torch cuda: {many} x {name} (DDP, NCCL)"
        return "torch cpu" if many == 1 else f"torch cpu: {many} processes (DDP, gloo)"

    def report(self) -> str:
        return tt_torch.compression_report(self.model)

    def tt_plans(self, batch_size: int) -> list[tuple[tuple[int, ...], str]]:
        """Each TT layer's merge of cores and direction for a batch of ``batch_size``."""
        return [layer.plan(batch_size) for layer in self.model.modules() if isinstance(layer, tt_torch.TTLinear)]

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def begin_epoch(self, epoch: int) -> None:
        """On several ranks: seeds each rank's dropout for ``epoch`` apart (one stream would give every shard the
        same masks). One process keeps its one stream, as before (saved and restored by the checkpoint)."""
        if self.world.processes > 1:
            torch.manual_seed(_rank_seed(self.seed, epoch, self.world.rank))

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x).to(self._device), torch.from_numpy(y).to(self._device)

    def _rows(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of a global batch."""
        start, stop = shard(len(y), self.world.processes, self.world.rank)
        return self._tensors(x[start:stop], y[start:stop])

    def set_distillation(self, weight: float, temperature: float) -> None:
        """The weight and temperature of the teacher's term in the loss of the steps given teacher logits."""
        self.distill = (float(weight), float(temperature))

    def _distilled(self, loss: torch.Tensor, logits: torch.Tensor, teacher: np.ndarray) -> torch.Tensor:
        """:class:`experiments.train.Distill`'s loss: ``(1 - w) loss + w T^2 KL(teacher_T || student_T)``."""
        weight, temperature = self.distill
        soft = F.log_softmax(torch.from_numpy(teacher).to(self._device) / temperature, -1)
        kl = F.kl_div(F.log_softmax(logits / temperature, -1), soft, log_target=True, reduction="batchmean")
        return (1 - weight) * loss + weight * temperature**2 * kl

    def train_step(self, x: np.ndarray, y: np.ndarray, teacher: np.ndarray | None = None):
        """One step on the global batch ``(x, y)``; returns its (mean loss, number correct) as device tensors (no
        sync on one device; on several, one all-reduce of the two). ``teacher``: the teacher's logits for the
        batch (distillation, one device only: :meth:`set_distillation`)."""
        self.model.train()
        if self.world.processes == 1:
            x, y = self._tensors(x, y)
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            if teacher is not None:
                loss = self._distilled(loss, logits, teacher)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return loss.detach(), (logits.argmax(-1) == y).sum()
        return self._distributed_step(x, y)

    def _distributed_step(self, x: np.ndarray, y: np.ndarray):
        total = len(y)
        x, y = self._rows(x, y)
        logits = self._step_model(x)
        summed = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing, reduction="sum")
        # DDP averages the ranks' gradients: (1 / N) * sum over ranks of (N / B) * (rank's summed loss) is the
        # gradient of the global batch's mean loss, whatever the split (a short last batch too).
        loss = summed * (self.world.processes / total)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        metrics = torch.stack([summed.detach().double(), (logits.argmax(-1) == y).sum().double()])
        torch.distributed.all_reduce(metrics)
        return metrics[0] / total, metrics[1]

    @torch.no_grad()
    def evaluate(self, batches) -> tuple[float, float]:
        """Mean loss and accuracy over ``(x, y)`` batches, in eval mode (running batch-norm statistics); on several
        ranks each evaluates its rows of every batch and the sums are all-reduced."""
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in batches:
            x, y = self._rows(x, y) if self.world.processes > 1 else self._tensors(x, y)
            if len(y) == 0:  # a short batch may leave a rank no rows
                continue
            logits = self.model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
        if self.world.processes > 1:
            sums = torch.tensor([total_loss, correct, count], dtype=torch.float64, device=self._device)
            torch.distributed.all_reduce(sums)
            total_loss, correct, count = float(sums[0]), int(sums[1]), int(sums[2])
        return total_loss / count, correct / count
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything a resumed run needs (parameters, batch-norm statistics, optimizer and RNG state) as named
        NumPy arrays (views: save them before the next step), and the rest as JSON (the parameter groups)."""
        arrays = {f"model/{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        values: dict[str, dict] = {}  # non-tensor entries of the optimizer's per-parameter state
        for index, entries in optimizer["state"].items():
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    arrays[f"optimizer/{index}/{name}"] = value.detach().cpu().numpy()
                else:
                    values.setdefault(str(index), {})[name] = value
        arrays["rng/cpu"] = torch.get_rng_state().numpy()
        if torch.cuda.is_available():
            arrays.update({f"rng/cuda/{i}": s.numpy() for i, s in enumerate(torch.cuda.get_rng_state_all())})
        return arrays, {"param_groups": optimizer["param_groups"], "optimizer_values": values}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restores :meth:`state`; a ``ValueError`` says what does not fit this model."""
        tensors = {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}  # writable copies
        model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, entries in meta["optimizer_values"].items():
            state.setdefault(int(index), {}).update(entries)
        try:
            self.model.load_state_dict(model)
            self.optimizer.load_state_dict({"state": state, "param_groups": self._groups(meta["param_groups"])})
        except (RuntimeError, KeyError) as error:
            raise ValueError(f"the saved state does not fit this model: {error}") from None
        torch.set_rng_state(tensors["rng/cpu"])
        cuda = [tensors[f"rng/cuda/{i}"] for i in range(sum(k.startswith("rng/cuda/") for k in tensors))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)

    def _groups(self, saved: list[dict]) -> list[dict]:
        """The saved parameter groups, with the tuples that JSON made lists (Adam's betas) tuples again."""
        current = self.optimizer.state_dict()["param_groups"]
        if len(saved) != len(current):
            raise ValueError(f"the saved state has {len(saved)} parameter groups, this optimizer {len(current)}")
        return [{k: tuple(v) if isinstance(now.get(k), tuple) else v for k, v in group.items()}
                for group, now in zip(saved, current)]

    def parameters(self) -> dict[str, np.ndarray]:
        """The weights in the neutral naming of :mod:`tt_common.transfer`."""
        return tt_torch.transfer.export(self.model)

    def load_parameters(self, weights: dict[str, np.ndarray]) -> None:
        """Sets the weights (and batch-norm statistics) from :meth:`parameters`' naming, e.g. a converted model's;
        the optimizer's state stays as it is (fresh before the first step)."""
        tt_torch.transfer.load(self.model, weights)
