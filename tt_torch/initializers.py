"""Initializers for TT cores that give the dense matrix a chosen variance (PyTorch).

The same rule as :mod:`tt_jax.initializers`: core entries are drawn i.i.d. with
the per-core std of :func:`tt_common.core_std`, so the dense matrix ``W`` has
exactly the entry variance ``scale / fan`` of the named dense initializer,
whichever distribution the cores use. (Same distributions, not the same draws:
the two frameworks' random streams differ; move weights with ``transfer``.)

A TT initializer is called as ``init(generator, shape, dtype=None, device=None)``
with a ``torch.Generator`` (or ``None`` for the global one) and a
:class:`tt_common.TTMatrixShape`, and returns one tensor per core.

>>> import torch
>>> from tt_common import TTMatrixShape
>>> cores = lecun_normal()(torch.Generator().manual_seed(0), TTMatrixShape.create((4, 4), (2, 2), 2))
>>> [tuple(c.shape) for c in cores]
[(1, 4, 2, 2), (2, 4, 2, 1)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tt_common.init import (
    TRUNCATED_NORMAL_STD,
    Distribution,
    FanMode,
    check_distribution,
    core_std,
    named_initializer,
    target_variance,
    thesis_bias_bound,
    thesis_core_bounds,
)
from tt_common.shapes import TTMatrixShape

__all__ = [
    "CoresInitializer",
    "ThesisBias",
    "ThesisPerCore",
    "VarianceScaling",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "thesis_bias",
    "thesis_per_core",
    "variance_scaling",
]

CoresInitializer = Callable[..., tuple[torch.Tensor, ...]]


def _sample(
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    std: float,
    distribution: str,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    with torch.no_grad():
        if distribution == "normal":
            return out.normal_(0.0, std, generator=generator)
        if distribution == "truncated_normal":
            torch.nn.init.trunc_normal_(out, 0.0, 1.0, -2.0, 2.0, generator=generator)
            return out.mul_(std / TRUNCATED_NORMAL_STD)
        bound = std * 3.0**0.5
        return out.uniform_(-bound, bound, generator=generator)


@dataclass(frozen=True)
class VarianceScaling:
    """Cores whose dense matrix has entry variance ``scale / fan`` (``fan`` by ``mode``).

    A picklable callable (so ``torch.save(model)`` and ``copy.deepcopy`` work);
    build it with :func:`variance_scaling`.
    """

    scale: float
    mode: FanMode
    distribution: Distribution = "normal"

    def __post_init__(self) -> None:
        target_variance(TTMatrixShape.create((1,), (1,), 1), self.scale, self.mode)  # validates early
        check_distribution(self.distribution)

    def __call__(
        self,
        generator: torch.Generator | None,
        shape: TTMatrixShape,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, ...]:
        std = core_std(shape, target_variance(shape, self.scale, self.mode))
        return tuple(_sample(generator, s, std, self.distribution, dtype, device) for s in shape.core_shapes)


def variance_scaling(scale: float, mode: FanMode, distribution: Distribution = "normal") -> CoresInitializer:
    """Cores whose dense matrix has entry variance ``scale / fan`` (``fan`` by ``mode``).

    >>> variance_scaling(2.0, "fan_in", "uniform")
    VarianceScaling(scale=2.0, mode='fan_in', distribution='uniform')
    """
    return VarianceScaling(scale, mode, distribution)


glorot_normal = named_initializer("glorot_normal", variance_scaling)
glorot_uniform = named_initializer("glorot_uniform", variance_scaling)
he_normal = named_initializer("he_normal", variance_scaling)
he_uniform = named_initializer("he_uniform", variance_scaling)
lecun_normal = named_initializer("lecun_normal", variance_scaling)  # Flax's default kernel variance 1 / M (nn.Linear's is 1 / (3 M))
lecun_uniform = named_initializer("lecun_uniform", variance_scaling)


@dataclass(frozen=True)
class ThesisPerCore:
    """The thesis's per-core init (picklable); build it with :func:`thesis_per_core`."""

    def __call__(
        self,
        generator: torch.Generator | None,
        shape: TTMatrixShape,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, ...]:
        cores = []
        for s, bound in zip(shape.core_shapes, thesis_core_bounds(shape)):
            core = torch.empty(s, dtype=dtype, device=device)
            with torch.no_grad():
                cores.append(core.uniform_(-bound, bound, generator=generator))
        return tuple(cores)


def thesis_per_core() -> CoresInitializer:
    """The thesis's per-core init: core ``k`` uniform on ``±1 / sqrt(r_{k-1} r_k n_k)``, each core on its own.

    The thesis's code calls ``kaiming_uniform_(a=sqrt(5))`` on each core in its ``(m, r, r, n)`` layout (see
    :func:`tt_common.init.thesis_core_bounds`); the same distribution, drawn in our layout. Not a
    variance-exact rule: ``W`` gets a tiny scale, which batch norm after the layer turns into a large effective
    learning rate. Use it to reproduce the thesis, not as a default.

    >>> import torch
    >>> from tt_common import TTMatrixShape
    >>> cores = thesis_per_core()(torch.Generator().manual_seed(0), TTMatrixShape.create((2, 2), (4, 4), 2))
    >>> [bool(c.abs().max() <= 8 ** -0.5) for c in cores]
    [True, True]
    """
    return ThesisPerCore()


@dataclass(frozen=True)
class ThesisBias:
    """Fills a bias uniformly on ``±bound`` in place (picklable); build it with :func:`thesis_bias`."""

    bound: float

    def __call__(self, bias: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return bias.uniform_(-self.bound, self.bound)


def thesis_bias(shape: TTMatrixShape) -> ThesisBias:
    """The thesis's TT bias init for a layer of ``shape``: uniform on ``±1 / sqrt(r_1 n_1)``, as ``bias_init``.

    >>> from tt_common import TTMatrixShape
    >>> thesis_bias(TTMatrixShape.create((2, 2), (4, 4), 2))
    ThesisBias(bound=0.35355339059327373)
    """
    return ThesisBias(thesis_bias_bound(shape))
