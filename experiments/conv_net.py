"""The convolutional network of the CIFAR-10 study (issue #40), framework-neutral: its layers, parameter count,
recipe and data augmentation. :mod:`experiments.conv_torch` and :mod:`experiments.conv_jax` build and train it.

Four ``3x3 conv -> batch norm -> ReLU`` blocks of 32, 64, 128 and 256 channels, a 2x2 max pool after each of the
first three (32 -> 16 -> 8 -> 4 pixels), a global average pool and a linear classifier 256 -> 10. The dense
network has 391,466 parameters. Its TT version (``rank`` set) holds the last three convolutions as
``TTConv2d`` (channel modes below, every rank ``rank``, the link rank to the spatial core at most 9) and the
classifier as a ``TTLinear`` 256 (4,8,8) -> 10 (5,2,1); the first convolution, with its 3 input channels, stays
dense. Convolutions have no bias (batch norm follows); parameters count weights, biases and batch-norm scales
and offsets, as :mod:`experiments.presets` does.

>>> [ConvNet(r).param_count() for r in (None, 16, 8, 4)]
[391466, 35549, 14882, 5286]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tt_common.conv import TTConvShape
from tt_common.shapes import TTMatrixShape

__all__ = ["CHANNELS", "CLASSIFIER_MODES", "CONV_MODES", "ConvNet", "Recipe", "augment"]

CHANNELS = (3, 32, 64, 128, 256)
POOL_AFTER = (True, True, True, False)  # a 2x2 max pool after block k
CONV_MODES = (None, ((2, 4, 4), (4, 4, 4)), ((4, 4, 4), (4, 4, 8)), ((4, 4, 8), (4, 8, 8)))  # None: dense
CLASSIFIER_MODES = ((4, 8, 8), (5, 2, 1))
KERNEL = 3


@dataclass(frozen=True)
class ConvNet:
    """The network: dense (``rank=None``) or with TT convolutions and classifier at ``rank``."""

    rank: int | None = None

    @property
    def name(self) -> str:
        return "dense" if self.rank is None else f"tt-r{self.rank}"

    def conv_shape(self, block: int) -> TTConvShape | None:
        """The TT shape of block ``block``'s convolution (``None``: dense)."""
        modes = CONV_MODES[block]
        if self.rank is None or modes is None:
            return None
        return TTConvShape.create(*modes, KERNEL, self.rank, padding=KERNEL // 2)

    def classifier_shape(self) -> TTMatrixShape | None:
        return None if self.rank is None else TTMatrixShape.create(*CLASSIFIER_MODES, self.rank)

    def param_count(self) -> int:
        total = 0
        for k in range(len(CHANNELS) - 1):
            shape = self.conv_shape(k)
            c_in, c_out = CHANNELS[k], CHANNELS[k + 1]
            total += (KERNEL * KERNEL * c_in * c_out if shape is None else shape.matrix.num_params) + 2 * c_out
        classifier = self.classifier_shape()
        features, classes = CHANNELS[-1], math.prod(CLASSIFIER_MODES[1])
        return total + (features * classes if classifier is None else classifier.num_params) + classes

    def describe(self) -> str:
        if self.rank is None:
            return "dense: 4 conv blocks 32-64-128-256, global average pool, linear 256 -> 10"
        return (f"TT rank {self.rank}: the last three convolutions TTConv2d {CONV_MODES[1]}, {CONV_MODES[2]}, "
                f"{CONV_MODES[3]}, the classifier TTLinear {CLASSIFIER_MODES}; the first convolution dense")


@dataclass(frozen=True)
class Recipe:
    """How every network of the study trains: Adam with a cosine decay to 0 over the run, random crops (4-pixel
    zero padding) and horizontal flips, the epoch chosen on a validation split."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.003
    seed: int = 0
    crop_padding: int = 4

    def learning_rate_at(self, step: int, steps_per_epoch: int) -> float:
        """The cosine decay's value at optimizer step ``step`` (0-based), as ``optax.cosine_decay_schedule``."""
        total = self.epochs * steps_per_epoch
        return self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def augment(x: np.ndarray, rng: np.random.Generator, padding: int) -> np.ndarray:
    """Random ``padding``-pixel crops of the zero-padded NHWC images and random horizontal flips.

    >>> x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1) + 1
    >>> y = augment(x, np.random.default_rng(0), 0)  # no padding: each image as it is or flipped
    >>> all(np.array_equal(y[k], x[k]) or np.array_equal(y[k], x[k, :, ::-1]) for k in range(2))
    True
    >>> y = augment(x, np.random.default_rng(0), 1)  # a shifted crop: the zeros of the padding come in
    >>> y.shape, bool((y == 0).any())
    ((2, 4, 4, 1), True)
    """
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if padding else x
    dy, dx = rng.integers(0, 2 * padding + 1, size=(2, n))
    flip = rng.random(n) < 0.5
    out = np.empty_like(x)
    for k in range(n):
        crop = padded[k, dy[k]:dy[k] + h, dx[k]:dx[k] + w]
        out[k] = crop[:, ::-1] if flip[k] else crop
    return out
