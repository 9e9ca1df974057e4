"""One optimizer configuration for both backends: name, hyperparameters, weight decay, step decay.

The mapping of each optimizer's hyperparameters between optax and torch.optim
is the table of :mod:`experiments.conventions` (eps placement included). Weight
decay is coupled L2 in both (``g += wd * p`` before the optimizer, as torch's
``weight_decay`` argument does). The step decay multiplies the learning rate
by ``decay_gamma`` every ``decay_every`` epochs; both backends set the learning
rate at the start of each epoch from :meth:`OptimizerConfig.lr_at`.

>>> cfg = OptimizerConfig("sgd", learning_rate=0.1, momentum=0.9, decay_every=10, decay_gamma=0.5)
>>> [cfg.lr_at(e) for e in (0, 9, 10, 25)]
[0.1, 0.1, 0.05, 0.025]
>>> cfg.convention()
SGD(learning_rate=0.1, momentum=0.9)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from experiments import conventions

__all__ = ["OPTIMIZERS", "OptimizerConfig"]

OptimizerName = Literal["sgd", "adam", "rmsprop", "adadelta"]
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adadelta")


@dataclass(frozen=True)
class OptimizerConfig:
    name: OptimizerName = "sgd"
    learning_rate: float = 0.001
    momentum: float = 0.9  # sgd
    b1: float = 0.9  # adam
    b2: float = 0.999  # adam
    decay: float = 0.99  # rmsprop (torch's alpha)
    rho: float = 0.9  # adadelta
    eps: float | None = None  # None: the optimizer's usual default (adam/rmsprop 1e-8, adadelta 1e-6)
    weight_decay: float = 0.0
    decay_every: int = 0  # epochs between step decays; 0: no decay
    decay_gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")

    def convention(self, epoch: int = 0):
        """The :mod:`experiments.conventions` object for ``epoch``'s learning rate."""
        lr = self.lr_at(epoch)
        if self.name == "sgd":
            return conventions.SGD(lr, self.momentum)
        if self.name == "adam":
            return conventions.Adam(lr, self.b1, self.b2, 1e-8 if self.eps is None else self.eps)
        if self.name == "rmsprop":
            return conventions.RMSprop(lr, self.decay, 1e-8 if self.eps is None else self.eps)
        return conventions.Adadelta(lr, self.rho, 1e-6 if self.eps is None else self.eps)

    def lr_at(self, epoch: int) -> float:
        """The step-decayed learning rate of ``epoch`` (0-based)."""
        steps = epoch // self.decay_every if self.decay_every else 0
        return self.learning_rate * self.decay_gamma**steps

    def to_dict(self) -> dict:
        return asdict(self)
