"""Choosing modes: balanced factorizations and FLOP-aware layer shapes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from tt_common.contraction import choose_direction, contraction_flops
from tt_common.shapes import TTMatrixShape

__all__ = ["factorizations", "factorize", "suggest_shape"]


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _sorted_factorizations(n: int, d: int, smallest: int) -> Iterator[tuple[int, ...]]:
    if d == 1:
        if n >= smallest:
            yield (n,)
        return
    for f in range(smallest, n + 1):
        if f ** d > n:
            break
        if n % f == 0:
            for rest in _sorted_factorizations(n // f, d - 1, f):
                yield (f,) + rest


def _spread(factors: tuple[int, ...]) -> float:
    """Sum of squared log-deviations from the geometric mean (0 when all equal)."""
    logs = [math.log(f) for f in factors]
    mean = sum(logs) / len(logs)
    return sum((v - mean) ** 2 for v in logs)


def factorizations(n: int, d: int) -> list[tuple[int, ...]]:
    """All ways to write ``n`` as ``d`` ascending factors (1s allowed), most balanced first.

    >>> factorizations(12, 2)
    [(3, 4), (2, 6), (1, 12)]
    """
    _positive(n, "n")
    _positive(d, "d")
    return sorted(_sorted_factorizations(n, d, 1), key=lambda f: (_spread(f), f))


def factorize(n: int, d: int) -> tuple[int, ...]:
    """The most balanced factorization of ``n`` into ``d`` factors, ascending.

    >>> factorize(1024, 5), factorize(784, 4), factorize(10, 3)
    ((4, 4, 4, 4, 4), (4, 4, 7, 7), (1, 2, 5))
    """
    return factorizations(n, d)[0]


def suggest_shape(
    in_features: int,
    out_features: int,
    d: int,
    ranks: int,
    *,
    candidates: int = 8,
) -> TTMatrixShape:
    """A FLOP-aware TT shape for an ``in_features -> out_features`` layer.

    Among the ``candidates`` most balanced factorizations of each size, each in
    ascending or descending order, picks the pair whose cheaper contraction
    direction needs the fewest FLOPs (ties: fewer parameters).

    >>> shape = suggest_shape(1024, 256, d=4, ranks=4)
    >>> shape.in_features, shape.out_features, shape.d
    (1024, 256, 4)
    """
    _positive(in_features, "in_features")
    _positive(out_features, "out_features")
    _positive(ranks, "ranks")

    def orders(n: int) -> list[tuple[int, ...]]:
        found = factorizations(n, d)[:candidates]
        return list(dict.fromkeys(itertools.chain.from_iterable((f, f[::-1]) for f in found)))

    def cost(shape: TTMatrixShape) -> tuple[int, int]:
        return sum(contraction_flops(shape, 1, choose_direction(shape))), shape.num_params

    shapes = (
        TTMatrixShape.create(m, n, ranks)
        for m in orders(in_features)
        for n in orders(out_features)
    )
    return min(shapes, key=cost)
