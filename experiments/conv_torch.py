"""The CIFAR-10 convolutional network of :mod:`experiments.conv_net` in PyTorch (NCHW), and one training step.

The mirror of :mod:`experiments.conv_jax`: the same layers, the same init (LeCun normal for the dense
convolution and classifier, as Flax's defaults; the TT layers' variance-exact LeCun init), the same Adam.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tt_torch
from experiments.conv_net import CHANNELS, CLASSIFIER_MODES, KERNEL, POOL_AFTER, ConvNet, Recipe
from experiments.models_torch import BN_MOMENTUM, lecun_normal_

__all__ = ["Net", "Trainer"]


class Net(nn.Module):
    """``[conv -> batch norm -> ReLU (-> max pool)] x 4 -> global average pool -> linear``."""

    def __init__(self, spec: ConvNet, *, order: str = "kernel"):
        super().__init__()
        convs: list[nn.Module] = []
        for k in range(len(CHANNELS) - 1):
            shape = spec.conv_shape(k)
            c_in, c_out = CHANNELS[k], CHANNELS[k + 1]
            if shape is None:
                conv = nn.Conv2d(c_in, c_out, KERNEL, padding=KERNEL // 2, bias=False)
                lecun_normal_(conv.weight, c_in * KERNEL * KERNEL)
            else:
                conv = tt_torch.TTConv2d(shape.in_modes, shape.out_modes, KERNEL, shape.ranks, padding=KERNEL // 2,
                                         bias=False, order=order)
            convs.append(conv)
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c, momentum=BN_MOMENTUM) for c in CHANNELS[1:])
        classifier = spec.classifier_shape()
        if classifier is None:
            self.classifier = nn.Linear(CHANNELS[-1], 10)
            lecun_normal_(self.classifier.weight, CHANNELS[-1])
            nn.init.zeros_(self.classifier.bias)
        else:
            self.classifier = tt_torch.TTLinear(*CLASSIFIER_MODES, classifier.ranks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm, pool in zip(self.convs, self.norms, POOL_AFTER):
            x = torch.relu(norm(conv(x)))
            if pool:
                x = F.max_pool2d(x, 2)
        return self.classifier(x.mean(dim=(2, 3)))


class Trainer:
    """The network of ``spec`` with its Adam optimizer; batches come as NumPy NHWC arrays."""

    def __init__(self, spec: ConvNet, recipe: Recipe):
        torch.manual_seed(recipe.seed)
        self.model = Net(spec)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=recipe.learning_rate)

    def param_count(self) -> int:
        buffers = {id(b) for b in self.model.buffers()}
        return sum(p.numel() for p in self.model.parameters() if id(p) not in buffers)

    @staticmethod
    def _inputs(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def train_step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> tuple[float, int]:
        """One Adam step at ``learning_rate``: the batch's summed loss and correct count."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        logits = self.model(self._inputs(x))
        labels = torch.from_numpy(y)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item() * len(y), int((logits.detach().argmax(1) == labels).sum())

    @torch.no_grad()
    def correct(self, x: np.ndarray, y: np.ndarray) -> int:
        self.model.eval()
        return int((self.model(self._inputs(x)).argmax(1) == torch.from_numpy(y)).sum())
