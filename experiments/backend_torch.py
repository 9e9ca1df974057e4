"""PyTorch backend of the experiments: the mirror of :mod:`experiments.backend_jax`."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import tt_torch
from experiments.models_torch import build
from experiments.optim import OptimizerConfig
from experiments.presets import Network

__all__ = ["TorchBackend"]

_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
}


class TorchBackend:
    """Trains one :class:`experiments.presets.Network` with PyTorch (CUDA when available)."""

    name = "torch"

    def __init__(self, spec: Network, optimizer: OptimizerConfig, seed: int, *, tt_init: str = "lecun",
                 dense_init: str = "lecun", label_smoothing: float = 0.0):
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = build(spec, seed=seed, tt_init=tt_init, dense_init=dense_init, device=self._device)
        self.label_smoothing = label_smoothing
        kwargs = {**optimizer.convention().torch_kwargs(), "weight_decay": optimizer.weight_decay}
        self.optimizer = _OPTIMIZERS[optimizer.name](self.model.parameters(), **kwargs)

    @property
    def device(self) -> str:
        if self._device.type == "cuda":
            return f"torch cuda: {torch.cuda.get_device_name(self._device)}"
        return "torch cpu"

    def report(self) -> str:
        return tt_torch.compression_report(self.model)

    def tt_plans(self, batch_size: int) -> list[tuple[tuple[int, ...], str]]:
        """Each TT layer's merge of cores and direction for a batch of ``batch_size``."""
        return [layer.plan(batch_size) for layer in self.model.modules() if isinstance(layer, tt_torch.TTLinear)]

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x).to(self._device), torch.from_numpy(y).to(self._device)

    def train_step(self, x: np.ndarray, y: np.ndarray):
        """One step; returns the (loss, number correct) as device tensors (no sync)."""
        self.model.train()
        x, y = self._tensors(x, y)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.argmax(-1) == y).sum()

    @torch.no_grad()
    def evaluate(self, batches) -> tuple[float, float]:
        """Mean loss and accuracy over ``(x, y)`` batches, in eval mode (running batch-norm statistics)."""
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in batches:
            x, y = self._tensors(x, y)
            logits = self.model(x)
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
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
