"""Search TT modes and ranks that reproduce the thesis's parameter counts where it gives only the count.

    python -m experiments.search_modes            # all three searches, about 30 s on one core

The thesis gives ``tt-tt-tt`` (30,574), ``tt-tt-fc`` (50,622) and a second ``4xTT-FC`` CIFAR-10 network
(225,278) by their parameter counts only. Counts are ``cores + bias + 2 * features (batch norm)`` per layer
(see :mod:`experiments.presets`). A count alone does not pin the modes down: the searches below report how many
choices hit each count exactly, and the most plausible ones (the thesis's own modes kept where possible,
balanced power-of-two modes elsewhere, fewest distinct ranks).

Results (the presets use the first line of each):

- MNIST, three layers, the same first two layers in ``tt-tt-tt`` and ``tt-tt-fc`` (hit together), input modes
  kept at the thesis's ``(2,2,7,4,7)`` and output modes ``(5,2,1,1,1)``:
  ``4096 (4,8,4,8,4)`` r8, ``2048 (8,2,4,8,4)`` r8, last layer r4 (also ``4096 (4,16,4,4,4)``,
  ``2048 (8,4,4,4,4)``). No choice with rank 4 in every layer, balanced modes and the thesis's input modes
  hits; with rank 4 everywhere only modes like ``784 (2,2,2,2,49)`` do.
- CIFAR-10 225,278: no uniform or per-layer change of ranks (1..32) of the 146,814 network hits it; with the
  same layer sizes and free modes thousands of choices do (none balanced). A wider network of the same family,
  ``3072 -> 32768 (8,8,8,8,8) -> 16384 -> 4096 -> 4096 -> dense 10``, all ranks 4, hits it with
  ``16384 (4,8,8,8,8)``, ``4096 (4,4,16,4,4)``, ``4096 (4,4,8,4,8)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

from tt_common.factorize import factorizations
from tt_common.shapes import TTMatrixShape  # noqa: F401  (used by the doctests)

__all__ = ["cifar_rank_only", "cifar_wide", "mnist_three_layers", "mode_orders"]


def cores(in_modes: tuple[int, ...], out_modes: tuple[int, ...], rank: int) -> int:
    """Core parameters of a TT layer (ranks clipped to their useful maximum, as the layers do).

    >>> cores((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4) == TTMatrixShape.create((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4).num_params
    True
    """
    d = len(in_modes)
    sizes = [m * n for m, n in zip(in_modes, out_modes)]
    r = [1] + [rank] * (d - 1) + [1]
    r = [min(r[k], math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(d + 1)]
    return sum(r[k] * sizes[k] * r[k + 1] for k in range(d))


def mode_orders(n: int, d: int = 5, *, ones: bool = False) -> list[tuple[int, ...]]:
    """Every ordering of every factorization of ``n`` into ``d`` factors (without 1s unless ``ones``)."""
    found: set[tuple[int, ...]] = set()
    for f in factorizations(n, d):
        if ones or 1 not in f:
            found.update(itertools.permutations(f))
    return sorted(found)


def spread(modes: Iterable[int]) -> float:
    """Squared log2-deviations from the mean: 0 for perfectly balanced modes."""
    logs = [math.log2(m) for m in modes]
    mean = sum(logs) / len(logs)
    return sum((v - mean) ** 2 for v in logs)


def bn_bias(features: int) -> int:
    """Bias + batch-norm scale and offset of a layer with ``features`` outputs."""
    return 3 * features


def mnist_three_layers(ranks: Iterable[int] = (2, 4, 8)) -> list[tuple]:
    """``784 -> 4096 -> 2048 -> 10`` hitting 30,574 (TT last) and 50,622 (dense last) with shared layers 1-2."""
    first = (2, 2, 7, 4, 7)
    outs = [(5, 2, 1, 1, 1), (2, 5, 1, 1, 1), (1, 1, 1, 2, 5), (1, 1, 1, 5, 2)]
    fixed_tt = bn_bias(4096) + bn_bias(2048) + bn_bias(10)
    fixed_fc = bn_bias(4096) + bn_bias(2048) + 2048 * 10 + bn_bias(10)
    a_modes, b_modes = mode_orders(4096), mode_orders(2048)
    hits = []
    for r1, r2, r3 in itertools.product(ranks, repeat=3):
        for a in a_modes:
            c1 = cores(first, a, r1)
            for b in b_modes:
                c12 = c1 + cores(a, b, r2)
                if c12 + fixed_fc != 50_622:
                    continue
                for out in outs:
                    if c12 + cores(b, out, r3) + fixed_tt == 30_574:
                        hits.append((len({r1, r2, r3}), spread(a) + spread(b), (r1, r2, r3), first, a, b, out))
    return sorted(hits)


CIFAR_146K = ((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), (8, 4, 8, 4, 8), (4, 4, 4, 4, 4), (4, 4, 4, 4, 4))


def _cifar_total(chain: tuple[tuple[int, ...], ...], ranks: tuple[int, ...]) -> int:
    layers = sum(cores(chain[k], chain[k + 1], ranks[k]) + bn_bias(math.prod(chain[k + 1])) for k in range(4))
    last = math.prod(chain[-1])
    return layers + last * 10 + bn_bias(10)


def cifar_rank_only(max_rank: int = 32) -> list[tuple[int, ...]]:
    """Per-layer ranks of the 146,814 network (modes unchanged) that give 225,278: none is natural."""
    rng = range(1, max_rank + 1)
    return [r for r in itertools.product(rng, repeat=4) if _cifar_total(CIFAR_146K, r) == 225_278]


def cifar_wide(sizes: tuple[int, int, int] = (16384, 4096, 4096), rank: int = 4, top: int = 40) -> list[tuple]:
    """``3072 -> 32768 (8,8,8,8,8) -> sizes -> dense 10`` hitting 225,278, most balanced modes first."""
    hits = []
    pools = [sorted(mode_orders(n), key=spread)[:top] for n in sizes]
    for b, c, e in itertools.product(*pools):
        chain = (CIFAR_146K[0], CIFAR_146K[1], b, c, e)
        if _cifar_total(chain, (rank,) * 4) == 225_278:
            hits.append((spread(b) + spread(c) + spread(e), b, c, e))
    return sorted(hits)


def main() -> None:
    assert _cifar_total(CIFAR_146K, (4, 4, 4, 4)) == 146_814
    mnist = mnist_three_layers()
    print(f"MNIST tt-tt-tt + tt-tt-fc: {len(mnist)} shared choices hit both counts; most plausible:")
    for hit in sorted(mnist, key=lambda h: (h[0], h[1], h[6] != (5, 2, 1, 1, 1)))[:6]:
        print("  ranks", hit[2], "modes", " -> ".join(map(str, hit[3:])))
    ranks = cifar_rank_only()
    print(f"CIFAR 225,278 by ranks of the 146k network alone: {len(ranks)} per-layer rank choices, e.g. {ranks[:4]}")
    wide = cifar_wide()
    print(f"CIFAR 225,278, 3072 -> 32768 -> 16384 -> 4096 -> 4096 -> 10, rank 4: {len(wide)} balanced hits, e.g.")
    for hit in wide[:4]:
        print("  ", hit[1:])


if __name__ == "__main__":
    main()
