"""Framework-neutral model specifications of every network of the thesis, plus sweeps and improved variants.

Nothing here imports JAX or PyTorch: :mod:`experiments.models_jax` and :mod:`experiments.models_torch` build
a model from a :class:`ModelSpec`, and :func:`param_count` counts its parameters without building it.

A spec is a flat sequence of operations applied in order to a flattened input ``(batch, in_features)``:

- :class:`TT` / :class:`Dense`: a linear layer (TT-matrix or dense ``(in, out)`` kernel), with a bias;
- :class:`BatchNorm`: batch normalization over the features (scale and offset are parameters; the running
  mean and variance are state, not parameters);
- :class:`ReLU`: an activation (no parameters, not a module);
- :class:`Dropout`: inverted dropout with ``rate`` during training.

Both frameworks keep the *modules* (everything but :class:`ReLU`) in one list attribute ``layers``, in spec
order, so that module paths agree between them: ``layers.0.cores.1`` is core 1 of the first TT layer in JAX and
in PyTorch. :meth:`ModelSpec.module_paths` lists them.

Parameters are counted as the thesis counts them: linear weights (TT cores or dense kernel) + biases + batch-norm
scale and offset (2 per feature). The counts of every thesis network are checked exactly in ``presets_test.py``.

Thesis architectures and their quirks
-------------------------------------
Every thesis network is ``[linear -> batch norm -> ReLU (-> dropout)]`` repeated, *including the output layer*:
its logits go through batch norm and a ReLU before the softmax (quirk 1). Logits are therefore non-negative and
a class can only be "voted down" to zero, which slows learning. The ``-improved`` variants (same layers, same
parameter count) drop that last ReLU and feed the batch-normalized logits to the softmax.

Choices the thesis leaves open, made here (documented in each spec's ``notes``):

- ``tt-tt-tt`` (30,574) and ``tt-tt-fc`` (50,622): the thesis gives only the counts. With the thesis's own first-
  layer input modes ``784 = (2,2,7,4,7)`` the two counts are hit *together* (same first two layers in both) by
  ``784 (2,2,7,4,7) -> 4096 (4,8,4,8,4)``, rank 8; ``4096 (4,8,4,8,4) -> 2048 (8,2,4,8,4)``, rank 8; and, for
  ``tt-tt-tt``, ``2048 (8,2,4,8,4) -> 10 (5,2,1,1,1)``, rank 4 (the thesis's output modes and rank of ``tt-tt``).
  No choice with one rank 4 everywhere and plausible modes hits them (see ``scripts/search_modes.py``).
- ``cifar-4tt-fc-146k`` (146,814) is exactly ``cifar-tt`` with its last TT layer (1024 -> 10) replaced by a
  dense one; ``cifar-4tt-fc-225k`` (225,278) is *underdetermined*: no change of ranks alone of the 146k network
  hits it, and thousands of mode choices do. We use a wider network of the same family, all ranks 4:
  ``3072 (4,8,4,8,3) -> 32768 (8,8,8,8,8) -> 16384 (4,8,8,8,8) -> 4096 (4,4,16,4,4) -> 4096 (4,4,8,4,8)
  -> dense 10``, which hits 225,278 exactly; the thesis's actual layer sizes are unknown.
- Dropout 0.2 of the CIFAR-10 TT networks follows the ReLU of every hidden layer (not the output layer); the
  dense CIFAR-10 baseline has none (the thesis mentions dropout only for the TT networks).
- Batch norm: epsilon 1e-5, running averages updated with weight 0.1 on the new batch (PyTorch ``momentum=0.1``,
  Flax ``momentum=0.9``), biased batch variance in both frameworks.
- Initialization: dense kernels LeCun-normal (truncated normal, variance ``1/in``), TT cores such that the dense
  matrix has variance ``1/M`` (``tt_jax.initializers.lecun_normal``), biases zero, batch-norm scale 1 offset 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Union

from tt_common.report import dense_layer_report, format_report, tt_layer_report
from tt_common.shapes import TTMatrixShape

__all__ = [
    "BatchNorm",
    "Dense",
    "Dropout",
    "ModelSpec",
    "PRESETS",
    "ReLU",
    "TT",
    "ThesisFigure",
    "get",
    "names",
    "param_count",
    "param_table",
]

# Running averages: new = (1 - BN_MOMENTUM) * old + BN_MOMENTUM * batch (PyTorch convention; Flax uses 1 - this).
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5


@dataclass(frozen=True)
class TT:
    """A TT linear layer ``prod(in_modes) -> prod(out_modes)`` with a bias."""

    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    ranks: int | tuple[int, ...]
    use_bias: bool = True

    @property
    def shape(self) -> TTMatrixShape:
        return TTMatrixShape.create(self.in_modes, self.out_modes, self.ranks)

    @property
    def in_features(self) -> int:
        return math.prod(self.in_modes)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_modes)

    @property
    def num_params(self) -> int:
        return self.shape.num_params + (self.out_features if self.use_bias else 0)


@dataclass(frozen=True)
class Dense:
    """A dense linear layer with an ``(in, out)`` kernel and a bias."""

    in_features: int
    out_features: int
    use_bias: bool = True

    @property
    def num_params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.use_bias else 0)


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization of ``features`` features (scale and offset: ``2 * features`` parameters)."""

    features: int
    momentum: float = BN_MOMENTUM  # weight of the new batch in the running averages (PyTorch convention)
    epsilon: float = BN_EPSILON

    @property
    def num_params(self) -> int:
        return 2 * self.features


@dataclass(frozen=True)
class ReLU:
    """ReLU activation: no parameters, not a module (absent from ``layers``)."""

    num_params = 0


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout: zeroes each feature with probability ``rate`` in training, identity in evaluation."""

    rate: float

    num_params = 0


Layer = Union[TT, Dense, BatchNorm, ReLU, Dropout]
MODULE_TYPES = (TT, Dense, BatchNorm, Dropout)


@dataclass(frozen=True)
class ThesisFigure:
    """What the thesis reports for a network (``None``: not reported / not known here)."""

    params: int | None = None
    test_accuracy: float | None = None  # percent, best epoch chosen on the test set (thesis protocol)
    epochs: int | None = None
    optimizer: str | None = None
    note: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A named network: operations applied in order to a flattened input of ``in_features``."""

    name: str
    dataset: str  # "mnist" or "cifar10"
    in_features: int
    num_classes: int
    ops: tuple[Layer, ...]
    description: str = ""
    thesis: ThesisFigure | None = None
    notes: tuple[str, ...] = ()
    base: str | None = None  # for variants: the thesis network it derives from

    def __post_init__(self) -> None:
        features = self.in_features
        for i, op in enumerate(self.ops):
            if isinstance(op, (TT, Dense)):
                if op.in_features != features:
                    raise ValueError(f"{self.name}: op {i} expects {op.in_features} inputs, gets {features}")
                features = op.out_features
            elif isinstance(op, BatchNorm) and op.features != features:
                raise ValueError(f"{self.name}: batch norm {i} has {op.features} features, gets {features}")
            elif not isinstance(op, (TT, Dense, BatchNorm, ReLU, Dropout)):
                raise TypeError(f"{self.name}: op {i} is not a layer spec: {op!r}")
        if features != self.num_classes:
            raise ValueError(f"{self.name}: outputs {features} features, expected {self.num_classes} classes")

    @property
    def modules(self) -> tuple[Layer, ...]:
        """The ops that are modules, in the order of the ``layers`` list of both frameworks."""
        return tuple(op for op in self.ops if isinstance(op, MODULE_TYPES))

    def module_paths(self) -> list[tuple[str, str]]:
        """``(path, kind)`` of every module: ``("layers.0", "tt")``, ``("layers.1", "batch_norm")``, ...

        >>> get("tt-tt").module_paths()[:3]
        [('layers.0', 'tt'), ('layers.1', 'batch_norm'), ('layers.2', 'tt')]
        """
        kinds = {TT: "tt", Dense: "dense", BatchNorm: "batch_norm", Dropout: "dropout"}
        return [(f"layers.{i}", kinds[type(m)]) for i, m in enumerate(self.modules)]

    @property
    def linear_layers(self) -> tuple[TT | Dense, ...]:
        return tuple(op for op in self.ops if isinstance(op, (TT, Dense)))

    @property
    def num_params(self) -> int:
        return param_count(self)


def param_count(spec: ModelSpec) -> int:
    """Weights + biases + batch-norm scales and offsets (running statistics are not parameters).

    >>> param_count(get("tt-tt"))
    791294
    """
    return sum(op.num_params for op in spec.ops)


def param_table(spec: ModelSpec) -> str:
    """A markdown compression report of ``spec`` (same format as ``tt_jax.compression_report``).

    Rows use the module paths; batch-norm parameters enter the totals.
    """
    rows = []
    for (path, _), module in zip(spec.module_paths(), spec.modules):
        if isinstance(module, TT):
            rows.append(tt_layer_report(path, module.shape, module.use_bias))
        elif isinstance(module, Dense):
            rows.append(dense_layer_report(path, module.in_features, module.out_features, module.use_bias))
    other = sum(m.num_params for m in spec.modules if isinstance(m, BatchNorm))
    return format_report(rows, other_params=other)


# ----------------------------------------------------------------------------------------------------------------
# Builders


def _stack(
    linears: Sequence[TT | Dense], *, final_relu: bool = True, dropout: float = 0.0
) -> tuple[Layer, ...]:
    """``[linear -> BN -> ReLU (-> dropout)]`` per hidden layer; output layer ``linear -> BN (-> ReLU)``."""
    ops: list[Layer] = []
    for i, layer in enumerate(linears):
        last = i == len(linears) - 1
        ops += [layer, BatchNorm(layer.out_features)]
        if not last or final_relu:
            ops.append(ReLU())
        if not last and dropout > 0:
            ops.append(Dropout(dropout))
    return tuple(ops)


def _spec(
    name: str,
    dataset: str,
    linears: Sequence[TT | Dense],
    description: str,
    *,
    thesis: ThesisFigure | None = None,
    dropout: float = 0.0,
    notes: Sequence[str] = (),
    base: str | None = None,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        dataset=dataset,
        in_features=linears[0].in_features,
        num_classes=linears[-1].out_features,
        ops=_stack(linears, dropout=dropout),
        description=description,
        thesis=thesis,
        notes=tuple(notes),
        base=base,
    )


def improved(spec: ModelSpec) -> ModelSpec:
    """The variant of a thesis network without the ReLU after the last batch norm (logits may be negative)."""
    ops = list(spec.ops)
    if not isinstance(ops[-1], ReLU):
        raise ValueError(f"{spec.name} does not end with a ReLU")
    return replace(
        spec,
        name=f"{spec.name}-improved",
        ops=tuple(ops[:-1]),
        description=f"{spec.description}; improved: no ReLU after the last batch norm",
        thesis=None,
        base=spec.name,
        notes=spec.notes + ("improved variant: the batch-normalized logits go straight to the softmax",),
    )


_MNIST_SGD = "SGD momentum 0.9, lr 0.001, batch 100"
_QUIRK = "thesis quirk: batch norm and ReLU after the output layer (logits >= 0)"

TT1 = TT((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), 4)  # 784 -> 262144, the thesis's first MNIST TT layer
TT2 = TT((8, 16, 16, 16, 8), (5, 2, 1, 1, 1), 4)  # 262144 -> 10
# The three-layer MNIST networks (modes and ranks chosen here to hit the thesis's counts; see module docstring).
TT3_1 = TT((2, 2, 7, 4, 7), (4, 8, 4, 8, 4), 8)  # 784 -> 4096
TT3_2 = TT((4, 8, 4, 8, 4), (8, 2, 4, 8, 4), 8)  # 4096 -> 2048
TT3_3 = TT((8, 2, 4, 8, 4), (5, 2, 1, 1, 1), 4)  # 2048 -> 10
_MODES_3 = (
    "modes/ranks not given by the thesis; chosen to hit its parameter count exactly: 784 (2,2,7,4,7) -> 4096 "
    "(4,8,4,8,4) r8 -> 2048 (8,2,4,8,4) r8" 
)
CIFAR_TT = (
    TT((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4),  # 3072 -> 32768
    TT((8, 8, 8, 8, 8), (8, 4, 8, 4, 8), 4),  # 32768 -> 8192
    TT((8, 4, 8, 4, 8), (4, 4, 4, 4, 4), 4),  # 8192 -> 1024
    TT((4, 4, 4, 4, 4), (4, 4, 4, 4, 4), 4),  # 1024 -> 1024
)
CIFAR_TT_WIDE = (
    TT((4, 8, 4, 8, 3), (8, 8, 8, 8, 8), 4),  # 3072 -> 32768
    TT((8, 8, 8, 8, 8), (4, 8, 8, 8, 8), 4),  # 32768 -> 16384
    TT((4, 8, 8, 8, 8), (4, 4, 16, 4, 4), 4),  # 16384 -> 4096
    TT((4, 4, 16, 4, 4), (4, 4, 8, 4, 8), 4),  # 4096 -> 4096
)


def _thesis_networks() -> list[ModelSpec]:
    m, c = "mnist", "cifar10"
    ad = "Adadelta, 100 epochs"
    return [
        _spec("fc-fc", m, [Dense(784, 262144), Dense(262144, 10)], "784 -> 262144 -> 10, dense",
              thesis=ThesisFigure(208_928_798, None, 25, _MNIST_SGD), notes=[_QUIRK]),
        _spec("tt-tt", m, [TT1, TT2], "TT 784 (2,2,7,4,7) -> 262144 (8,16,16,16,8) r4, TT -> 10 (5,2,1,1,1) r4",
              thesis=ThesisFigure(791_294, None, 25, _MNIST_SGD), notes=[_QUIRK]),
        _spec("tt-fc", m, [TT1, Dense(262144, 10)], "TT 784 -> 262144 r4, dense 262144 -> 10",
              thesis=ThesisFigure(3_411_518, None, 25, _MNIST_SGD), notes=[_QUIRK]),
        _spec("fc-fc-fc", m, [Dense(784, 4096), Dense(4096, 2048), Dense(2048, 10)], "784 -> 4096 -> 2048 -> 10, dense",
              thesis=ThesisFigure(11_638_814, None, 25, _MNIST_SGD), notes=[_QUIRK]),
        _spec("tt-tt-tt", m, [TT3_1, TT3_2, TT3_3],
              "TT 784 -> 4096 r8, TT 4096 -> 2048 r8, TT 2048 -> 10 (5,2,1,1,1) r4",
              thesis=ThesisFigure(30_574, None, 25, _MNIST_SGD), notes=[_QUIRK, _MODES_3 + "; 2048 (8,2,4,8,4) -> 10 (5,2,1,1,1) r4"]),
        _spec("tt-tt-fc", m, [TT3_1, TT3_2, Dense(2048, 10)], "TT 784 -> 4096 r8, TT 4096 -> 2048 r8, dense 2048 -> 10",
              thesis=ThesisFigure(50_622, None, 25, _MNIST_SGD), notes=[_QUIRK, _MODES_3]),
        _spec("cifar-fc", c, [Dense(3072, 4096), Dense(4096, 4096), Dense(4096, 1024), Dense(1024, 10)],
              "3072 -> 4096 -> 4096 -> 1024 -> 10, dense",
              thesis=ThesisFigure(None, 59.2, None, None, "thesis best dense network"), notes=[_QUIRK]),
        _spec("cifar-tt", c, [*CIFAR_TT, TT((4, 4, 4, 4, 4), (5, 2, 1, 1, 1), 4)],
              "5 TT layers 3072 -> 32768 -> 8192 -> 1024 -> 1024 -> 10, r4, dropout 0.2",
              thesis=ThesisFigure(136_926, None, None, None), dropout=0.2,
              notes=[_QUIRK, "dropout 0.2 after every hidden ReLU"]),
        _spec("cifar-4tt-fc-146k", c, [*CIFAR_TT, Dense(1024, 10)],
              "4 TT layers 3072 -> 32768 -> 8192 -> 1024 -> 1024 r4, dense 1024 -> 10, dropout 0.2",
              thesis=ThesisFigure(146_814, 71.67, 100, ad), dropout=0.2,
              notes=[_QUIRK, "dropout 0.2 after every hidden ReLU", "cifar-tt with a dense output layer"]),
        _spec("cifar-4tt-fc-225k", c, [*CIFAR_TT_WIDE, Dense(4096, 10)],
              "4 TT layers 3072 -> 32768 -> 16384 -> 4096 -> 4096 r4, dense 4096 -> 10, dropout 0.2",
              thesis=ThesisFigure(225_278, 72.92, 100, ad), dropout=0.2,
              notes=[_QUIRK, "dropout 0.2 after every hidden ReLU",
                     "layer sizes and modes not given by the thesis (many choices hit 225,278); this wider "
                     "network of the same family hits it exactly"]),
    ]


# Sweeps around tt-tt (both TT layers change together).
RANK_SWEEP = (1, 2, 4, 8, 16)
MODE_SWEEP = {  # number of cores d -> (input modes of 784, output modes of 262144, output modes of 10)
    2: ((28, 28), (512, 512), (5, 2)),
    3: ((7, 16, 7), (64, 64, 64), (5, 2, 1)),
    4: ((4, 7, 7, 4), (16, 32, 32, 16), (5, 2, 1, 1)),
    5: ((2, 2, 7, 4, 7), (8, 16, 16, 16, 8), (5, 2, 1, 1, 1)),  # the thesis's tt-tt
    6: ((2, 2, 7, 7, 2, 2), (8, 8, 8, 8, 8, 8), (5, 2, 1, 1, 1, 1)),
}


def tt_tt(rank: int = 4, d: int = 5, name: str | None = None) -> ModelSpec:
    """``tt-tt`` with every TT rank ``rank`` and ``d`` cores per layer (modes from :data:`MODE_SWEEP`)."""
    m_in, m_hidden, m_out = MODE_SWEEP[d]
    name = name or f"tt-tt-r{rank}-d{d}"
    return _spec(
        name, "mnist", [TT(m_in, m_hidden, rank), TT(m_hidden, m_out, rank)],
        f"TT 784 {m_in} -> 262144 {m_hidden} r{rank}, TT -> 10 {m_out} r{rank}",
        notes=[_QUIRK, "sweep variant of tt-tt"], base="tt-tt",
    )


def _sweeps() -> list[ModelSpec]:
    out = [tt_tt(r, 5, f"tt-tt-r{r}") for r in RANK_SWEEP if r != 4]
    out += [tt_tt(4, d, f"tt-tt-d{d}") for d in MODE_SWEEP if d != 5]
    return out


def _build_presets() -> dict[str, ModelSpec]:
    thesis = _thesis_networks()
    specs = thesis + [improved(s) for s in thesis] + _sweeps()
    return {s.name: s for s in specs}


PRESETS: dict[str, ModelSpec] = _build_presets()
THESIS_NAMES: tuple[str, ...] = tuple(s.name for s in _thesis_networks())


def names(dataset: str | None = None) -> list[str]:
    """Preset names, optionally only those of ``dataset``."""
    return [n for n, s in PRESETS.items() if dataset is None or s.dataset == dataset]


def get(name: str) -> ModelSpec:
    """The preset called ``name``; a ``ValueError`` lists the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRESETS)}") from None


Builder = Callable[[ModelSpec], object]
