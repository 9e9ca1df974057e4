"""Where Flax/optax and PyTorch spell the same computation differently: optimizers and batch norm.

Checked against the installed sources (optax 0.2.8 ``scale_by_adam`` / ``trace``,
torch 2.13 ``torch.optim.adam._single_tensor_adam`` / ``sgd._single_tensor_sgd``,
flax 0.12.8 ``nnx.BatchNorm``, ``torch.nn.BatchNorm1d``):

==============  ================================================  ==================================================
                optax / Flax                                      torch
==============  ================================================  ==================================================
SGD momentum    ``sgd(lr, momentum=mu)``: ``m = g + mu m``,       ``SGD(lr=lr, momentum=mu, dampening=0,
                ``m_0 = 0``, ``p -= lr m``                        nesterov=False)``: ``buf = g`` at step 1, then
                                                                  ``buf = mu buf + g``; ``p -= lr buf``
Adam            ``adam(lr, b1, b2, eps, eps_root=0)``:            ``Adam(lr=lr, betas=(b1, b2), eps=eps)``:
                ``p -= lr m_hat / (sqrt(v_hat + eps_root) + eps)``  ``p -= lr m_hat / (sqrt(v) / sqrt(1 - b2^t) + eps)``
                                                                  (same formula: eps outside the root, after the
                                                                  bias correction; no ``eps_root`` in torch)
RMSprop         ``rmsprop(lr, decay=a, eps, initial_scale=0,       ``RMSprop(lr=lr, alpha=a, eps=eps)``:
                eps_in_sqrt=False)``: ``v = a v + (1-a) g^2``,    ``p -= lr g / (sqrt(v) + eps)`` (optax's default
                ``p -= lr g / (sqrt(v) + eps)``                   ``eps_in_sqrt=True`` would differ)
Adadelta        ``adadelta(lr, rho, eps)``: ``v = rho v +         ``Adadelta(lr=lr, rho=rho, eps=eps)``: the same
                (1-rho) g^2``, ``d = sqrt(u + eps) /              formulas (torch's default lr is 1.0)
                sqrt(v + eps) g``, ``u = rho u + (1-rho) d^2``
Weight decay    ``chain(add_decayed_weights(wd), opt)``:          ``weight_decay=wd``: ``g += wd p`` (coupled L2)
                ``g += wd p`` before the optimizer
BN momentum     ``momentum=m``: ``run = m run + (1 - m) batch``   ``momentum=1 - m``: ``run = (1 - momentum) run +
                (default 0.99)                                    momentum batch`` (default 0.1, i.e. Flax's 0.9)
BN running var  biased batch variance                             unbiased batch variance ``* n / (n - 1)``
BN eps          ``epsilon=1e-5``                                  ``eps=1e-5``
==============  ================================================  ==================================================

In training mode both batch norms normalize with the biased batch variance, so
outputs and gradients agree; only the running variance differs (see
:func:`torch_running_var`). In eval mode both use the running statistics.

>>> cfg = Adam(learning_rate=1e-3)
>>> cfg.optax_kwargs()
{'learning_rate': 0.001, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-08, 'eps_root': 0.0}
>>> cfg.torch_kwargs()
{'lr': 0.001, 'betas': (0.9, 0.999), 'eps': 1e-08, 'weight_decay': 0.0, 'amsgrad': False}
>>> torch_bn_momentum(0.99)
0.010000000000000009
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Adadelta", "Adam", "RMSprop", "SGD", "torch_bn_momentum", "torch_running_var"]


@dataclass(frozen=True)
class SGD:
    """SGD with (heavy-ball) momentum: ``optax.sgd(**optax_kwargs())`` == ``torch.optim.SGD(p, **torch_kwargs())``."""

    learning_rate: float
    momentum: float = 0.0

    def optax_kwargs(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "momentum": self.momentum or None, "nesterov": False}

    def torch_kwargs(self) -> dict[str, Any]:
        return {
            "lr": self.learning_rate,
            "momentum": self.momentum,
            "dampening": 0.0,
            "nesterov": False,
            "weight_decay": 0.0,
        }


@dataclass(frozen=True)
class Adam:
    """Adam: ``optax.adam(**optax_kwargs())`` == ``torch.optim.Adam(p, **torch_kwargs())``."""

    learning_rate: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def optax_kwargs(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "b1": self.b1, "b2": self.b2, "eps": self.eps, "eps_root": 0.0}

    def torch_kwargs(self) -> dict[str, Any]:
        return {
            "lr": self.learning_rate,
            "betas": (self.b1, self.b2),
            "eps": self.eps,
            "weight_decay": 0.0,
            "amsgrad": False,
        }


@dataclass(frozen=True)
class RMSprop:
    """RMSprop: ``optax.rmsprop(**optax_kwargs())`` == ``torch.optim.RMSprop(p, **torch_kwargs())``."""

    learning_rate: float
    decay: float = 0.99
    eps: float = 1e-8

    def optax_kwargs(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "decay": self.decay,
            "eps": self.eps,
            "initial_scale": 0.0,
            "eps_in_sqrt": False,
        }

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.learning_rate, "alpha": self.decay, "eps": self.eps, "weight_decay": 0.0}


@dataclass(frozen=True)
class Adadelta:
    """Adadelta: ``optax.adadelta(**optax_kwargs())`` == ``torch.optim.Adadelta(p, **torch_kwargs())``."""

    learning_rate: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6

    def optax_kwargs(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "rho": self.rho, "eps": self.eps}

    def torch_kwargs(self) -> dict[str, Any]:
        return {"lr": self.learning_rate, "rho": self.rho, "eps": self.eps, "weight_decay": 0.0}


def torch_bn_momentum(flax_momentum: float) -> float:
    """The ``torch.nn.BatchNorm1d`` momentum that updates the running mean like Flax's ``momentum``."""
    if not 0.0 <= flax_momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {flax_momentum}")
    return 1.0 - flax_momentum


def torch_running_var(flax_var: Any, initial_var: Any, flax_momentum: float, steps: int, batch_size: int) -> Any:
    """Torch's running variance after ``steps`` training steps, given Flax's (same batches, mapped momentum).

    Both start at ``initial_var``; each step Flax adds ``(1 - m)`` times the biased
    batch variance, torch the unbiased one (``n / (n - 1)`` times larger). The
    decayed initial value ``m**steps * initial_var`` is common to both, so::

        torch_var = n / (n - 1) * (flax_var - m**steps * initial_var) + m**steps * initial_var

    >>> torch_running_var(1.5, 1.0, 0.5, 1, 4)  # flax: 0.5 * 1 + 0.5 * 2; torch: 0.5 * 1 + 0.5 * 8 / 3
    1.8333333333333333
    """
    if batch_size < 2:
        raise ValueError(f"the unbiased variance needs batch_size >= 2, got {batch_size}")
    decayed = flax_momentum**steps * initial_var
    return batch_size / (batch_size - 1) * (flax_var - decayed) + decayed
