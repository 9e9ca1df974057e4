"""PyTorch backend of the experiments: the mirror of :mod:`experiments.backend_jax`."""

from __future__ import annotations

import io

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

    def state(self) -> bytes:
        """Everything a resumed run needs: parameters, batch-norm statistics, optimizer and RNG state."""
        buffer = io.BytesIO()
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng}, buffer)
        return buffer.getvalue()

    def load_state(self, blob: bytes) -> None:
        state = torch.load(io.BytesIO(blob), map_location=self._device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def parameters(self) -> dict[str, np.ndarray]:
        """The weights in the neutral naming of :mod:`tt_common.transfer`."""
        return tt_torch.transfer.export(self.model)
