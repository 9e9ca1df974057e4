"""The layers benchmarked: the thesis's TT layers and Novikov et al.'s VGG layer.

Each entry fixes the input modes, the output modes and the rank; the full rank
tuple is clipped by :meth:`tt_common.TTMatrixShape.create`, exactly as the
layers do.

>>> [c.name for c in LAYERS]
['784-262144', '262144-10', '3072-32768', '32768-8192', '1024-1024', '25088-4096']
>>> get("32768-8192").shape.ranks
(1, 4, 4, 4, 4, 1)
>>> [c.name for c in LAYERS if c.large]
['784-262144', '3072-32768', '32768-8192', '25088-4096']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from tt_common import TTMatrixShape, choose_direction, flop_table
from tt_common.contraction import Direction
from tt_common.fused import fused_traffic_bytes

__all__ = ["LARGE_FLOP_RATIO", "LAYERS", "SMOKE_LAYERS", "LayerConfig", "get"]

LARGE_FLOP_RATIO = 5.0


@dataclass(frozen=True)
class LayerConfig:
    name: str
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    rank: int
    source: str

    @cached_property
    def shape(self) -> TTMatrixShape:
        return TTMatrixShape.create(self.in_modes, self.out_modes, self.rank)

    @property
    def direction(self) -> Direction:
        return choose_direction(self.shape)

    def tt_flops(self, batch: int) -> int:
        """Forward FLOPs of the TT product in the direction the layer picks."""
        return flop_table(self.shape, batch)[self.direction]

    def dense_flops(self, batch: int) -> int:
        return flop_table(self.shape, batch)["dense_matmul"]

    def state_sizes(self, batch: int) -> list[int]:
        """Elements of the contraction's state: the input, then after each step (execution order).

        >>> get("1024-1024").state_sizes(1)
        [1024, 8192, 8192, 8192, 8192, 1024]
        """
        m, n, r = self.shape.in_modes, self.shape.out_modes, self.shape.ranks
        d = self.shape.d
        if self.direction == "ltr":  # after step k: B r_k n_1..n_k m_{k+1}..m_d
            after = [r[k + 1] * math.prod(n[: k + 1]) * math.prod(m[k + 1 :]) for k in range(d)]
        else:  # after step k (k = d-1 .. 0): B r_k m_1..m_k n_{k+1}..n_d
            after = [r[k] * math.prod(m[:k]) * math.prod(n[k:]) for k in range(d - 1, -1, -1)]
        return [batch * s for s in [self.shape.in_features, *after]]

    def traffic_bytes(self, batch: int, itemsize: int = 4) -> int:
        """Least memory traffic of the core-by-core forward: each step reads its state and writes the next.

        A lower bound (no transposes, caches ignored); with the machine's copy
        bandwidth it bounds the achievable GFLOP/s (a roofline).
        """
        sizes = self.state_sizes(batch)
        return itemsize * sum(a + b for a, b in zip(sizes, sizes[1:]))

    def train_traffic_bytes(self, batch: int, itemsize: int = 4) -> int:
        """Least memory traffic of the core-by-core training step: the forward's (:meth:`traffic_bytes`), then
        per step the backward reads the step's output gradient and input state and writes its input gradient.

        >>> cfg = get("1024-1024")
        >>> cfg.train_traffic_bytes(1) == cfg.traffic_bytes(1) + 4 * sum(
        ...     2 * a + b for a, b in zip(cfg.state_sizes(1), cfg.state_sizes(1)[1:]))
        True
        """
        sizes = self.state_sizes(batch)
        backward = sum(2 * a + b for a, b in zip(sizes, sizes[1:]))
        return self.traffic_bytes(batch, itemsize) + itemsize * backward

    def fused_traffic_bytes(self, batch: int, itemsize: int = 4, *, train: bool = False) -> int:
        """Least traffic of any product (:func:`tt_common.fused.fused_traffic_bytes`: input in, output out);
        ``train``: a training step, which also reads the output gradient and writes the input gradient."""
        once = fused_traffic_bytes(self.shape, batch, itemsize)
        return 2 * once if train else once

    @property
    def flop_ratio(self) -> float:
        """Dense FLOPs over TT FLOPs (independent of the batch size)."""
        return self.dense_flops(1) / self.tt_flops(1)

    @property
    def large(self) -> bool:
        """A "large layer" of the issue's goals: TT FLOPs at least 5x below dense."""
        return self.flop_ratio >= LARGE_FLOP_RATIO

    def dense_bytes(self, itemsize: int = 4) -> int:
        """Bytes of the dense weight matrix (one copy)."""
        return self.shape.in_features * self.shape.out_features * itemsize

    def describe(self) -> str:
        m = "x".join(map(str, self.in_modes))
        n = "x".join(map(str, self.out_modes))
        return f"{self.shape.in_features} ({m}) -> {self.shape.out_features} ({n}), r={self.rank}"


LAYERS: tuple[LayerConfig, ...] = (
    LayerConfig("784-262144", (2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4, "thesis, MNIST layer 1"),
    LayerConfig("262144-10", (8, 16, 16, 16, 8), (5, 2, 1, 1, 1), 4, "thesis, MNIST layer 2"),
    LayerConfig("3072-32768", (4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4, "thesis, CIFAR-10 layer 1"),
    LayerConfig("32768-8192", (8, 8, 8, 8, 8), (8, 4, 8, 4, 8), 4, "thesis, CIFAR-10 layer 2"),
    LayerConfig("1024-1024", (4, 4, 4, 4, 4), (4, 4, 4, 4, 4), 8, "thesis, square layer"),
    LayerConfig("25088-4096", (2, 7, 8, 8, 7, 4), (4, 4, 4, 4, 4, 4), 4, "Novikov et al. 2015, VGG fc6"),
)


# Not in the default run: a layer small enough for the CPU smoke run of benchmarks/gpu_session.sh, where the
# kernels run interpreted (non-power-of-two modes, so the kernels' padding is exercised).
SMOKE_LAYERS: tuple[LayerConfig, ...] = (
    LayerConfig("smoke-96-64", (2, 6, 8), (4, 4, 4), 2, "smoke test only"),
)


def get(name: str) -> LayerConfig:
    """The layer called ``name`` among :data:`LAYERS` and :data:`SMOKE_LAYERS`."""
    for cfg in (*LAYERS, *SMOKE_LAYERS):
        if cfg.name == name:
            return cfg
    raise KeyError(f"unknown layer {name!r}; choose from {[c.name for c in (*LAYERS, *SMOKE_LAYERS)]}")
