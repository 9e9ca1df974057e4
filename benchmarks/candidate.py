"""What a benchmark candidate is: a builder of a forward and a training-step callable.

A candidate turns a (layer config, batch size, device) into a :class:`Built`:
two zero-argument callables that run one forward pass (inference: no gradient
tape) or one training step (forward, then backward with a fixed random output
cotangent, gradients for every parameter *and* the input, as for a hidden
layer), each blocking until its results are ready. Building may raise
:class:`Skip` (library missing, layer too big for the memory budget, ...).

FLOPs: a training step counts 3x the forward FLOPs (each matrix product of the
forward pass has two of the same size in the backward pass: one for the
gradient of each operand). GFLOP/s of the TT-family candidates (ours, einsum,
TensorLy-Torch) are computed from the FLOPs of *our* contraction order, i.e. the
useful work; a candidate that takes a costlier path shows it as a lower rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.layers import LayerConfig

__all__ = ["Built", "Candidate", "MemoryReport", "Skip", "einsum_equation", "einsum_path"]


class Skip(Exception):
    """The candidate cannot run for this config; the message says why."""


@dataclass(frozen=True)
class MemoryReport:
    """Memory of one training step (forward + backward), in bytes.

    ``saved``: tensors the forward pass keeps for the backward pass (activations),
    not counting the parameters and the input themselves.
    ``peak``: the most memory the step holds at once above what existed before
    it (parameters, input, cotangent); includes the output, the gradients and
    every temporary. ``how`` says how it was measured.
    """

    saved: int | None
    peak: int | None
    how: str


@dataclass
class Built:
    forward: Callable[[], object]
    train_step: Callable[[], object]
    memory: Callable[[], MemoryReport] | None = None
    notes: list[str] = field(default_factory=list)
    step_compile_s: float = 0.0  # ahead-of-time compilation of the training step (JAX), if any
    first_call_compiles: bool = False  # torch.compile: the first call must never be the measurement


@dataclass(frozen=True)
class Candidate:
    framework: str  # "jax" or "torch"
    name: str  # "ours", "ours-compiled", "dense", "einsum", "tensorly"
    label: str  # column title
    family: str  # "tt" or "dense": which FLOP count its GFLOP/s uses
    build: Callable[[LayerConfig, int, str], Built] | None = None  # None: a result read back from JSON

    @property
    def key(self) -> str:
        return f"{self.framework}:{self.name}"


def einsum_equation(cfg: LayerConfig) -> str:
    """The single einsum of the thesis: input ``(B, m_1..m_d)``, cores ``(r, m, n, r)``.

    Batch ``Z``, input modes ``a, b, ..``, output modes after them, ranks in
    upper case (``r_0`` and ``r_d`` get their own letters: both have size 1).

    >>> from benchmarks.layers import get
    >>> einsum_equation(get("1024-1024"))
    'Zabcde,AafB,BbgC,CchD,DdiE,EejF->Zfghij'
    """
    d = cfg.shape.d
    ins, outs = "abcdefghijklmnopqrstuvwxy"[:d], "abcdefghijklmnopqrstuvwxy"[d : 2 * d]
    ranks = "ABCDEFGHIJKLM"[: d + 1]
    cores = [f"{ranks[k]}{ins[k]}{outs[k]}{ranks[k + 1]}" for k in range(d)]
    return f"Z{ins}," + ",".join(cores) + f"->Z{outs}"


def einsum_path(cfg: LayerConfig, batch: int, strategy: str = "auto") -> tuple[list[tuple[int, ...]], int]:
    """opt_einsum's pairwise order for the single einsum at ``batch``, and its FLOPs.

    ``jnp.einsum`` (``optimize="auto"``) and ``torch.einsum`` (with opt_einsum
    installed, strategy ``"auto"``) follow this path. Its FLOPs count multiply
    and add, as ``cfg.tt_flops`` does, so the two compare directly. Needs
    ``opt_einsum`` (installed with JAX).

    >>> from benchmarks.layers import get
    >>> path, flops = einsum_path(get("1024-1024"), 1)
    >>> path
    [(1, 2), (2, 3), (0, 2), (0, 2), (0, 1)]
    >>> flops
    1114112
    """
    import opt_einsum

    shapes = [(batch, *cfg.in_modes), *cfg.shape.core_shapes]
    path, info = opt_einsum.contract_path(einsum_equation(cfg), *shapes, shapes=True, optimize=strategy)
    return path, int(info.opt_cost)
