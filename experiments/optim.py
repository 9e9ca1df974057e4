"""One optimizer configuration for both backends: name, hyperparameters, weight decay, step decay.

The mapping of each optimizer's hyperparameters between optax and torch.optim
is the table of :mod:`experiments.conventions` (eps placement included). Weight
decay is coupled L2 in both (``g += wd * p`` before the optimizer, as torch's
``weight_decay`` argument does). The step decay multiplies the learning rate
by ``decay_gamma`` every ``decay_every`` epochs; both backends set the learning
rate at the start of each epoch from :meth:`OptimizerConfig.lr_at`. ``cosine_epochs`` instead decays it
along a half cosine from ``learning_rate`` to zero over that many epochs (per epoch, as the step decay).

>>> cfg = OptimizerConfig("sgd", learning_rate=0.1, momentum=0.9, decay_every=10, decay_gamma=0.5)
>>> [cfg.lr_at(e) for e in (0, 9, 10, 25)]
[0.1, 0.1, 0.05, 0.025]
>>> cfg.convention()
SGD(learning_rate=0.1, momentum=0.9)
>>> [round(OptimizerConfig("adam", 0.1, cosine_epochs=4).lr_at(e), 4) for e in range(5)]
[0.1, 0.0854, 0.05, 0.0146, 0.0]
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Literal

from experiments import conventions

__all__ = ["FLAGS", "OPTIMIZERS", "OptimizerConfig", "named"]

OptimizerName = Literal["sgd", "adam", "rmsprop", "adadelta"]
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adadelta")
#: OptimizerConfig field -> the training CLI's flag
FLAGS = {
    "name": "--optimizer", "learning_rate": "--lr", "momentum": "--momentum", "b1": "--beta1", "b2": "--beta2",
    "decay": "--alpha", "rho": "--rho", "eps": "--eps", "weight_decay": "--weight-decay",
    "decay_every": "--decay-every", "decay_gamma": "--decay-gamma", "cosine_epochs": "--cosine-epochs",
}


def named(field: str, flag: str) -> str:
    """How an error names a setting: its field and the CLI flag that sets it, ``"batch_size (--batch-size)"``."""
    return f"{field} ({flag})"


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# field -> (check, what it must be); eps may also be None (the optimizer's default)
_RULES = {
    "learning_rate": (lambda v: _real(v) and v > 0, "a positive finite number"),
    **{f: (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)") for f in ("momentum", "b1", "b2", "decay", "rho")},
    "eps": (lambda v: v is None or (_real(v) and v > 0), "a positive finite number"),
    "weight_decay": (lambda v: _real(v) and v >= 0, "a non-negative finite number"),
    "decay_every": (lambda v: _integer(v) and v >= 0, "a non-negative integer (0: no step decay)"),
    "decay_gamma": (lambda v: _real(v) and v > 0, "a positive finite number"),
    "cosine_epochs": (lambda v: _integer(v) and v >= 0, "a non-negative integer (0: no cosine decay)"),
}


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
    cosine_epochs: int = 0  # epochs of a half-cosine decay to zero; 0: none

    def __post_init__(self) -> None:
        """Every field is checked here, so that a bad value is refused before any data or model exists.

        >>> OptimizerConfig("adam", learning_rate=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: learning_rate (--lr) must be a positive finite number, got -1.0
        """
        if self.name not in OPTIMIZERS:
            raise ValueError(f"{named('name', FLAGS['name'])} must be one of {OPTIMIZERS}, got {self.name!r}")
        for f in fields(self):
            if f.name in _RULES and not _RULES[f.name][0](getattr(self, f.name)):
                raise ValueError(f"{named(f.name, FLAGS[f.name])} must be {_RULES[f.name][1]}, "
                                 f"got {getattr(self, f.name)!r}")
        if self.cosine_epochs and self.decay_every:
            raise ValueError("choose one schedule: cosine_epochs (--cosine-epochs) or decay_every (--decay-every), "
                             "not both")

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
        """The learning rate of ``epoch`` (0-based): step-decayed, cosine-decayed or constant."""
        if self.cosine_epochs:
            return self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(epoch, self.cosine_epochs) / self.cosine_epochs))
        steps = epoch // self.decay_every if self.decay_every else 0
        return self.learning_rate * self.decay_gamma**steps

    def to_dict(self) -> dict:
        return asdict(self)
