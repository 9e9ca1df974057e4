"""Framework-neutral specifications of every network of the thesis, its sweeps and improved variants.

Nothing here imports JAX or PyTorch: :mod:`experiments.models_jax` and :mod:`experiments.models_torch` build a
network from a :class:`Network`, and :meth:`Network.param_count` counts its parameters without building it.

A :class:`Network` is a chain of linear layers (:class:`TT` or :class:`Dense`), each followed by batch norm
(unless ``batch_norm=False``), then a ReLU, then dropout (hidden layers only, when ``dropout > 0``). Parameters are
counted as the thesis counts them: weights (TT cores or dense kernel) + biases + batch-norm scale and offset (2 per
feature; the running statistics are state, not parameters).

``t3f-784-625-10`` is not the thesis's: it is the dense MLP of t3f's Keras tutorial on compressing a trained
network (784 -> 625 ReLU -> 10 softmax, no batch norm), the starting point of the ``compress`` study
(:mod:`experiments.compress_study`).

Thesis quirk: the output layer too goes through batch norm *and a ReLU* before the softmax
(``relu_after_last=True``), so the logits are non-negative. The ``-improved`` variants (same layers, same count)
drop that last ReLU.

Choices the thesis leaves open (found by ``python -m experiments.search_modes``):

- ``tt-tt-tt`` (30,574) and ``tt-tt-fc`` (50,622): only the counts are known. Keeping the thesis's first-layer
  input modes ``784 = (2,2,7,4,7)`` and its output modes ``10 = (5,2,1,1,1)`` rank 4, both counts are hit
  *together* (the same first two layers in both networks) by ``784 (2,2,7,4,7) -> 4096 (4,8,4,8,4)`` rank 8 and
  ``4096 (4,8,4,8,4) -> 2048 (8,2,4,8,4)`` rank 8, then ``2048 (8,2,4,8,4) -> 10 (5,2,1,1,1)`` rank 4
  (``tt-tt-tt``) or a dense ``2048 -> 10`` (``tt-tt-fc``). With rank 4 everywhere only odd modes such as
  ``(2,2,2,2,49)`` hit them.
- ``cifar-4tt-fc-146k`` (146,814) is exactly ``cifar-tt`` with its last TT layer (1024 -> 10) replaced by a dense
  one. ``cifar-4tt-fc-225k`` (225,278) is underdetermined: no change of the ranks alone of the 146k network hits
  it (uniform or per-layer ranks 1..32), while thousands of mode choices do. We use a wider network of the same
  family, all ranks 4, that hits it exactly: ``3072 (4,8,4,8,3) -> 32768 (8,8,8,8,8) -> 16384 (4,8,8,8,8)
  -> 4096 (4,4,16,4,4) -> 4096 (4,4,8,4,8) -> dense 10``. The thesis's actual sizes are unknown.
- Dropout 0.2 of the CIFAR-10 TT networks follows every hidden ReLU; the dense CIFAR-10 baseline has none.

>>> get_preset("tt-tt").param_count()
791294
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from tt_common.contraction import choose_direction, layer_plan
from tt_common.shapes import TTMatrixShape

__all__ = ["PRESETS", "TT", "Dense", "Network", "get_preset", "network_from_dict", "thesis_network"]


@dataclass(frozen=True)
class TT:
    """A TT linear layer ``prod(in_modes) -> prod(out_modes)`` with a bias."""

    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: int | tuple[int, ...]

    @property
    def shape(self) -> TTMatrixShape:
        return TTMatrixShape.create(self.in_modes, self.out_modes, self.ranks)

    @property
    def in_features(self) -> int:
        return self.shape.in_features

    @property
    def out_features(self) -> int:
        return self.shape.out_features

    def param_count(self) -> int:
        return self.shape.num_params + self.out_features


@dataclass(frozen=True)
class Dense:
    """A dense linear layer with a bias."""

    in_features: int
    out_features: int

    def param_count(self) -> int:
        return self.in_features * self.out_features + self.out_features


@dataclass(frozen=True)
class Network:
    """``[layer -> batch norm -> ReLU (-> dropout)]`` per layer; no ReLU after the last unless ``relu_after_last``,
    no batch norm if not ``batch_norm``."""

    name: str
    dataset: str  # "mnist" or "cifar10"
    layers: tuple[TT | Dense, ...]
    dropout: float = 0.0
    relu_after_last: bool = True  # the thesis's quirk
    thesis_params: int | None = None
    thesis_accuracy: float | None = None  # percent, best epoch picked on test (thesis protocol)
    description: str = ""
    based_on: str | None = None  # the thesis network this one varies (the -improved variants)
    batch_norm: bool = True  # every network of the thesis has it; t3f's MLP has none

    def __post_init__(self) -> None:
        for k in range(1, len(self.layers)):
            if self.layers[k].in_features != self.layers[k - 1].out_features:
                raise ValueError(
                    f"{self.name}: layers {k - 1} and {k} do not chain "
                    f"({self.layers[k - 1].out_features} outputs, {self.layers[k].in_features} inputs)"
                )

    @property
    def in_features(self) -> int:
        return self.layers[0].in_features

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    def param_count(self) -> int:
        """Weights + biases + batch-norm scales and offsets."""
        norm = 2 if self.batch_norm else 0
        return sum(layer.param_count() + norm * layer.out_features for layer in self.layers)

    def module_names(self) -> tuple[str, ...]:
        """The dotted module name of each linear layer in the built models (``layers.K``; batch norms between).

        >>> get_preset("fc-fc-fc").module_names(), get_preset("t3f-784-625-10").module_names()
        (('layers.0', 'layers.2', 'layers.4'), ('layers.0', 'layers.1'))
        """
        step = 2 if self.batch_norm else 1
        return tuple(f"layers.{step * k}" for k in range(len(self.layers)))

    def to_dict(self) -> dict:
        """JSON of the network (a run's ``config.json`` records a network that is no preset so).

        >>> network_from_dict(get_preset("tt-tt-tt").to_dict()) == get_preset("tt-tt-tt")
        True
        """
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "layers"},
                "layers": [_layer_dict(layer) for layer in self.layers]}

    def tt_directions(self) -> tuple[str, ...]:
        """The direction each TT layer contracts in (the models build them with ``direction="auto"``).

        >>> get_preset("tt-tt").tt_directions(), get_preset("tt-tt-d3").tt_directions()
        (('rtl', 'rtl'), ('rtl', 'rtl'))
        """
        return tuple(choose_direction(layer.shape) for layer in self.layers if isinstance(layer, TT))

    def tt_plans(self, batch_size: int, product_flops: float = 0.0) -> tuple[tuple[tuple[int, ...], str], ...]:
        """The merge of cores (run lengths) and the direction of each TT layer for a batch of ``batch_size``.

        ``product_flops``: the planner's cost per small matrix product (``tt_jax`` on a CPU sets
        :data:`tt_jax._xla_cpu.XLA_CPU_PRODUCT_FLOPS`, ``tt_torch`` 0).

        >>> get_preset("tt-tt").tt_plans(100), get_preset("tt-tt").tt_plans(100, product_flops=1e5)
        ((((2, 1, 1, 1), 'rtl'), ((2, 3), 'rtl')), (((2, 1, 2), 'rtl'), ((2, 3), 'rtl')))
        """
        return tuple(layer_plan(layer.shape, batch_size, product_flops=product_flops)
                     for layer in self.layers if isinstance(layer, TT))

    def largest_parameter(self) -> int:
        """Elements of the largest single parameter (a dense weight, a TT core or a bias).

        >>> get_preset("fc-fc").largest_parameter(), get_preset("tt-tt").largest_parameter()
        (205520896, 262144)
        """
        sizes = []
        for layer in self.layers:
            weights = [layer.in_features * layer.out_features] if isinstance(layer, Dense) else [
                math.prod(s) for s in layer.shape.core_shapes]
            sizes += [*weights, layer.out_features]
        return max(sizes)


# MNIST
TT1 = TT((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)  # 784 -> 262144
TT2 = TT((8, 16, 16, 16, 8), (5, 2, 1, 1, 1), 4)  # 262144 -> 10
TT3_1 = TT((2, 2, 7, 4, 7), (4, 8, 4, 8, 4), 8)  # 784 -> 4096 (chosen to hit the thesis's counts)
TT3_2 = TT((4, 8, 4, 8, 4), (8, 2, 4, 8, 4), 8)  # 4096 -> 2048
TT3_3 = TT((8, 2, 4, 8, 4), (5, 2, 1, 1, 1), 4)  # 2048 -> 10
# CIFAR-10
CIFAR_TT = (
    TT((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4),  # 3072 -> 32768
    TT((8, 8, 8, 8, 8), (8, 4, 8, 4, 8), 4),  # 32768 -> 8192
    TT((8, 4, 8, 4, 8), (4, 4, 4, 4, 4), 4),  # 8192 -> 1024
    TT((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), 4),  # 1024 -> 1024
)
CIFAR_TT_WIDE = (  # chosen to hit 225,278; see the module docstring
    TT((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4),  # 3072 -> 32768
    TT((8, 8, 8, 8, 8), (4, 8, 8, 8, 8), 4),  # 32768 -> 16384
    TT((4, 8, 8, 8, 8), (4, 4, 16, 4, 4), 4),  # 16384 -> 4096
    TT((4, 4, 16, 4, 4), (4, 4, 8, 4, 8), 4),  # 4096 -> 4096
)

# Sweeps around tt-tt: d (number of cores) -> (784 modes, 262144 modes, 10 modes).
RANK_SWEEP = (1, 2, 4, 8, 16)
MODE_SWEEP = {
    2: ((28, 28), (512, 512), (5, 2)),
    3: ((7, 16, 7), (64, 64, 64), (5, 2, 1)),
    4: ((4, 7, 7, 4), (16, 32, 32, 16), (5, 2, 1, 1)),
    5: ((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), (5, 2, 1, 1, 1)),  # the thesis's tt-tt
    6: ((2, 2, 7, 7, 2, 2), (8, 8, 8, 8, 8, 8), (5, 2, 1, 1, 1, 1)),
}


def tt_tt(rank: int = 4, d: int = 5) -> tuple[TT, TT]:
    """The two layers of ``tt-tt`` with every rank ``rank`` and ``d`` cores (modes of :data:`MODE_SWEEP`)."""
    m_in, m_hidden, m_out = MODE_SWEEP[d]
    return TT(m_in, m_hidden, rank), TT(m_hidden, m_out, rank)


def _thesis() -> list[Network]:
    m, c = "mnist", "cifar10"
    return [
        Network("fc-fc", m, (Dense(784, 262144), Dense(262144, 10)), thesis_params=208_928_798, thesis_accuracy=98.38,
                description="784 -> 262144 -> 10, dense"),
        Network("tt-tt", m, (TT1, TT2), thesis_params=791_294, thesis_accuracy=98.59,
                description="TT 784 (2,2,7,4,7) -> 262144 (8,16,16,16,8) r4, TT -> 10 (5,2,1,1,1) r4"),
        Network("tt-fc", m, (TT1, Dense(262144, 10)), thesis_params=3_411_518, thesis_accuracy=98.71,
                description="TT 784 -> 262144 r4, dense 262144 -> 10"),
        Network("fc-fc-fc", m, (Dense(784, 4096), Dense(4096, 2048), Dense(2048, 10)), thesis_params=11_638_814, thesis_accuracy=98.34,
                description="784 -> 4096 -> 2048 -> 10, dense"),
        Network("tt-tt-tt", m, (TT3_1, TT3_2, TT3_3), thesis_params=30_574, thesis_accuracy=98.21,
                description="TT 784 (2,2,7,4,7) -> 4096 (4,8,4,8,4) r8 -> 2048 (8,2,4,8,4) r8 -> 10 (5,2,1,1,1) r4"),
        Network("tt-tt-fc", m, (TT3_1, TT3_2, Dense(2048, 10)), thesis_params=50_622, thesis_accuracy=98.53,
                description="TT 784 -> 4096 r8 -> 2048 r8 (as tt-tt-tt), dense 2048 -> 10"),
        Network("cifar-fc", c, (Dense(3072, 4096), Dense(4096, 4096), Dense(4096, 1024), Dense(1024, 10)),
                thesis_accuracy=59.2, description="3072 -> 4096 -> 4096 -> 1024 -> 10, dense"),
        Network("cifar-tt", c, (*CIFAR_TT, TT((4, 4, 4, 4, 4), (5, 2, 1, 1, 1), 4)), dropout=0.2,
                thesis_params=136_926, description="5 TT layers 3072 -> 32768 -> 8192 -> 1024 -> 1024 -> 10, r4"),
        Network("cifar-4tt-fc-146k", c, (*CIFAR_TT, Dense(1024, 10)), dropout=0.2, thesis_params=146_814,
                thesis_accuracy=71.67, description="cifar-tt with a dense output layer 1024 -> 10"),
        Network("cifar-4tt-fc-225k", c, (*CIFAR_TT_WIDE, Dense(4096, 10)), dropout=0.2, thesis_params=225_278,
                thesis_accuracy=72.92,
                description="4 TT layers 3072 -> 32768 -> 16384 -> 4096 -> 4096 r4 (sizes chosen to hit the "
                            "count), dense 4096 -> 10"),
    ]


def _improved(net: Network) -> Network:
    return replace(net, name=f"{net.name}-improved", relu_after_last=False, thesis_params=None,
                   thesis_accuracy=None, based_on=net.name, description=f"{net.description}; no ReLU after the last batch norm")


def _sweeps() -> list[Network]:
    out = []
    for r in RANK_SWEEP:
        if r != 4:
            out.append(Network(f"tt-tt-r{r}", "mnist", tt_tt(r, 5),
                               description=f"tt-tt with every TT-rank {r} (both TT layers)"))
    for d, modes in MODE_SWEEP.items():
        if d != 5:
            m_in, m_hidden, m_out = (f"({','.join(map(str, m))})" for m in modes)
            out.append(Network(f"tt-tt-d{d}", "mnist", tt_tt(4, d), description=(
                f"tt-tt with {d} cores: TT 784 {m_in} -> 262144 {m_hidden} r4, TT -> 10 {m_out} r4")))
    return out


# t3f's Keras tutorial "compression of a trained network": 784 -> 625 (ReLU) -> 10 (softmax), no batch norm.
T3F_MLP = Network("t3f-784-625-10", "mnist", (Dense(784, 625), Dense(625, 10)), relu_after_last=False,
                  batch_norm=False, description="784 -> 625 -> 10, dense, no batch norm (t3f's tutorial MLP)")

_THESIS = _thesis()
PRESETS: dict[str, Network] = {n.name: n for n in [*_THESIS, *map(_improved, _THESIS), *_sweeps(), T3F_MLP]}
THESIS_NAMES: tuple[str, ...] = tuple(n.name for n in _THESIS)


def thesis_network(spec: Network) -> Network | None:
    """The thesis network that ``spec`` is or varies, if it has a thesis figure to compare with.

    >>> thesis_network(get_preset("tt-tt-tt-improved")).thesis_accuracy, thesis_network(get_preset("tt-tt-r8"))
    (98.21, None)
    """
    base = get_preset(spec.based_on) if spec.based_on else spec
    return base if base.thesis_accuracy is not None else None


def _layer_dict(layer: TT | Dense) -> dict:
    if isinstance(layer, Dense):
        return {"dense": {"in_features": layer.in_features, "out_features": layer.out_features}}
    ranks = layer.ranks if isinstance(layer.ranks, int) else list(layer.ranks)
    return {"tt": {"in_modes": list(layer.in_modes), "out_modes": list(layer.out_modes), "ranks": ranks}}


def _layer_from_dict(record: dict) -> TT | Dense:
    if "dense" in record:
        return Dense(record["dense"]["in_features"], record["dense"]["out_features"])
    tt = record["tt"]
    ranks = tt["ranks"] if isinstance(tt["ranks"], int) else tuple(tt["ranks"])
    return TT(tuple(tt["in_modes"]), tuple(tt["out_modes"]), ranks)


def network_from_dict(record: dict) -> Network:
    """The network of :meth:`Network.to_dict`; a ``ValueError`` says what does not describe one."""
    try:
        return Network(**{**record, "layers": tuple(_layer_from_dict(layer) for layer in record["layers"])})
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a network description ({error!r}): {record!r:.200}") from None


def get_preset(name: str) -> Network:
    """The network called ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}") from None
