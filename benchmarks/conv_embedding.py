"""TT convolution and TT embedding against the dense layers and the peers' factorized ones (issue #40, item 4).

Per case, framework and candidate: the median time of a forward pass and of a training step (forward and backward
with a fixed random cotangent, gradients of every parameter and, for convolutions, of the input), the parameter
count, and memory (torch: the bytes autograd saves for backward; JAX: XLA's ``memory_analysis()`` temporaries and
outputs of the jitted step). Convolution rows add the forward FLOPs against the dense convolution's
(``tt_common.conv``); embedding rows the table's bytes against the dense table's.

Candidates (float32, CPU unless a GPU framework is installed):

- convolution: ours (``TTConv2d``, NCHW in torch, NHWC in JAX; in the order ``"auto"`` picks, and with
  ``order="kernel"``, which builds the kernel and runs the dense convolution), the dense ``nn.Conv2d`` / ``nnx.Conv``,
  TensorLy-Torch's ``FactorizedConv`` (``factorization="tt"``, the kernel's 4-way TT) and torch-mpo's
  ``TTConv2d`` (a spatial convolution to rank ``r_1``, then TT channel mixing), the peers at the parameter count
  closest to ours;
- embedding: ours (``TTEmbedding``), the dense ``nn.Embedding`` / ``nnx.Embed`` and TensorLy-Torch's
  ``FactorizedEmbedding`` (block TT) at about our parameter count.

A peer that is not installed is left out with a note (``pip install -c constraints.txt tensorly-torch torch-mpo``).
Run it on a quiet machine::

    python -m benchmarks.conv_embedding --out benchmarks/results/conv-embedding-cpu.md
    python -m benchmarks.conv_embedding --quick      # one small case of each, few calls: a harness check
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.timing import machine_info, measure
from tt_common.conv import TTConvShape, choose_order, conv_flops, dense_conv_flops
from tt_common.embedding import TTEmbeddingShape

__all__ = ["CONV_CASES", "EMBEDDING_CASES", "ConvCase", "EmbeddingCase", "main"]


@dataclass(frozen=True)
class ConvCase:
    name: str
    in_modes: tuple[int, ...]
    out_modes: tuple[int, ...]
    kernel: int
    rank: int
    size: int  # height = width of the input
    batch: int

    @property
    def shape(self) -> TTConvShape:
        return TTConvShape.create(self.in_modes, self.out_modes, self.kernel, self.rank, padding=self.kernel // 2)

    @property
    def in_channels(self) -> int:
        return self.shape.in_channels

    @property
    def out_channels(self) -> int:
        return self.shape.out_channels


@dataclass(frozen=True)
class EmbeddingCase:
    name: str
    vocab_modes: tuple[int, ...]
    feature_modes: tuple[int, ...]
    rank: int
    tokens: int  # indices per call

    @property
    def shape(self) -> TTEmbeddingShape:
        return TTEmbeddingShape.create(self.vocab_modes, self.feature_modes, self.rank)

    @property
    def vocab(self) -> int:
        return self.shape.num_embeddings

    @property
    def features(self) -> int:
        return self.shape.features


CONV_CASES = (
    ConvCase("64->64 3x3, 32x32", (4, 4, 4), (4, 4, 4), 3, 8, 32, 32),
    ConvCase("256->256 3x3, 8x8", (4, 8, 8), (4, 8, 8), 3, 16, 8, 32),
)
EMBEDDING_CASES = (
    EmbeddingCase("V 10^4, D 256", (20, 25, 20), (4, 8, 8), 16, 4096),
    EmbeddingCase("V 10^5, D 256", (40, 50, 50), (4, 8, 8), 16, 4096),
    EmbeddingCase("V 10^6, D 256", (100, 100, 100), (4, 8, 8), 16, 4096),
)
QUICK_CONV = (ConvCase("16->16 3x3, 8x8", (4, 4), (4, 4), 3, 4, 8, 4),)
QUICK_EMBEDDING = (EmbeddingCase("V 10^3, D 16", (10, 10, 10), (2, 2, 4), 4, 64),)


@dataclass
class Candidate:
    name: str
    params: int
    forward: Callable[[], object]
    step: Callable[[], object]
    memory: Callable[[], tuple[int, str]]  # bytes, what they are


# --------------------------------------------------------------------------------------------------
# torch


def _torch_saved_bytes(step_fn) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward pass."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step_fn(backward=False)
    return sum(seen.values())


def _torch_candidate(name: str, module, x, cotangent) -> Candidate:
    import torch

    params = sum(p.numel() for p in module.parameters())
    needs_input_grad = x.is_floating_point()

    def step(backward: bool = True):
        module.zero_grad(set_to_none=True)
        inp = x.detach().requires_grad_(needs_input_grad)
        out = module(inp)
        if backward:
            out.backward(cotangent)
        return out

    def forward():
        with torch.no_grad():
            return module(x)

    return Candidate(name, params, forward, step, lambda: (_torch_saved_bytes(step), "saved for backward"))


def _closest(make, target: int, choices) -> tuple[object, int]:
    """The module ``make(c)`` over ``choices`` whose parameter count is closest to ``target``."""
    best, error = None, None
    for choice in choices:
        try:
            module = make(choice)
        except (AssertionError, RuntimeError, TypeError, ValueError) as e:  # a peer refuses this setting
            error = e
            continue
        count = sum(p.numel() for p in module.parameters())
        if best is None or abs(count - target) < abs(best[1] - target):
            best = (module, count)
    if best is None:
        raise RuntimeError(f"no setting of the peer could be built; the last error: {error!r}")
    return best


def torch_conv(case: ConvCase, notes: list[str]) -> list[Candidate]:
    import torch
    from torch import nn

    import tt_torch

    torch.manual_seed(0)
    pad = case.kernel // 2
    x = torch.randn(case.batch, case.in_channels, case.size, case.size)
    ours = tt_torch.TTConv2d(case.in_modes, case.out_modes, case.kernel, case.rank, padding=pad)
    cotangent = torch.randn_like(ours(x))
    target = sum(p.numel() for p in ours.parameters())
    kernel_order = tt_torch.TTConv2d(case.in_modes, case.out_modes, case.kernel, case.rank, padding=pad,
                                     order="kernel")
    candidates = [_torch_candidate("ours", ours, x, cotangent),
                  _torch_candidate("ours, order=\"kernel\"", kernel_order, x, cotangent),
                  _torch_candidate("dense", nn.Conv2d(case.in_channels, case.out_channels, case.kernel,
                                                      padding=pad), x, cotangent)]
    dense_params = candidates[2].params
    try:
        import tltorch

        module, _ = _closest(lambda ratio: tltorch.FactorizedConv(
            case.in_channels, case.out_channels, case.kernel, order=2, factorization="tt", rank=ratio,
            padding=pad), target, [target / dense_params * f for f in (0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)])
        candidates.append(_torch_candidate("TensorLy-Torch", module, x, cotangent))
    except ImportError:
        notes.append("TensorLy-Torch not installed: its FactorizedConv left out")
    try:
        import torch_mpo

        module, _ = _closest(lambda r: torch_mpo.TTConv2d(
            case.in_channels, case.out_channels, case.kernel, padding=pad, out_modes=list(case.out_modes),
            inp_modes=list(case.in_modes), tt_ranks=r), target, range(1, 65))
        candidates.append(_torch_candidate("torch-mpo", module, x, cotangent))
    except ImportError:
        notes.append("torch-mpo not installed: its TTConv2d left out")
    return candidates


def torch_embedding(case: EmbeddingCase, notes: list[str]) -> list[Candidate]:
    import torch
    from torch import nn

    import tt_torch

    torch.manual_seed(0)
    idx = torch.randint(0, case.vocab, (case.tokens,))
    ours = tt_torch.TTEmbedding(case.vocab_modes, case.feature_modes, case.rank)
    cotangent = torch.randn(case.tokens, case.features)
    target = sum(p.numel() for p in ours.parameters())
    candidates = [_torch_candidate("ours", ours, idx, cotangent),
                  _torch_candidate("dense", nn.Embedding(case.vocab, case.features), idx, cotangent)]
    try:
        import tltorch

        dense_params = case.vocab * case.features
        module, _ = _closest(lambda ratio: tltorch.FactorizedEmbedding(
            case.vocab, case.features, auto_tensorize=False, factorization="blocktt", rank=ratio,
            tensorized_num_embeddings=list(case.vocab_modes), tensorized_embedding_dim=list(case.feature_modes)),
            target, [target / dense_params * f for f in (0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)])
        candidates.append(_torch_candidate("TensorLy-Torch", module, idx, cotangent))
    except ImportError:
        notes.append("TensorLy-Torch not installed: its FactorizedEmbedding left out")
    return candidates


# --------------------------------------------------------------------------------------------------
# JAX


def _jax_candidate(name: str, module, x, cotangent, *, input_grad: bool) -> Candidate:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    @jax.jit
    def forward(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def loss(params, x):
        return jnp.vdot(nnx.merge(graphdef, params, rest)(x), cotangent)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1) if input_grad else 0))

    def memory():
        analysis = grad.lower(params, x).compile().memory_analysis()
        if analysis is None:
            return 0, "not reported by this backend"
        return analysis.temp_size_in_bytes + analysis.output_size_in_bytes, "XLA temp + output of the step"

    return Candidate(name, count, lambda: jax.block_until_ready(forward(params, x)),
                     lambda: jax.block_until_ready(grad(params, x)), memory)


def jax_conv(case: ConvCase, notes: list[str]) -> list[Candidate]:
    import jax
    from flax import nnx

    import tt_jax

    pad = case.kernel // 2
    x = jax.random.normal(jax.random.key(0), (case.batch, case.size, case.size, case.in_channels))
    ours = tt_jax.TTConv2d(case.in_modes, case.out_modes, case.kernel, case.rank, padding=pad, rngs=nnx.Rngs(0))
    cotangent = jax.random.normal(jax.random.key(1), ours(x).shape)
    dense = nnx.Conv(case.in_channels, case.out_channels, (case.kernel, case.kernel), padding=pad,
                     rngs=nnx.Rngs(0))
    kernel_order = tt_jax.TTConv2d(case.in_modes, case.out_modes, case.kernel, case.rank, padding=pad,
                                   order="kernel", rngs=nnx.Rngs(0))
    return [_jax_candidate("ours", ours, x, cotangent, input_grad=True),
            _jax_candidate("ours, order=\"kernel\"", kernel_order, x, cotangent, input_grad=True),
            _jax_candidate("dense", dense, x, cotangent, input_grad=True)]


def jax_embedding(case: EmbeddingCase, notes: list[str]) -> list[Candidate]:
    import jax
    from flax import nnx

    import tt_jax

    idx = jax.random.randint(jax.random.key(0), (case.tokens,), 0, case.vocab)
    cotangent = jax.random.normal(jax.random.key(1), (case.tokens, case.features))
    ours = tt_jax.TTEmbedding(case.vocab_modes, case.feature_modes, case.rank, rngs=nnx.Rngs(0))
    dense = nnx.Embed(case.vocab, case.features, rngs=nnx.Rngs(0))
    return [_jax_candidate("ours", ours, idx, cotangent, input_grad=False),
            _jax_candidate("dense", dense, idx, cotangent, input_grad=False)]


# --------------------------------------------------------------------------------------------------
# The report


def _conv_flops_ratio(case: ConvCase) -> str:
    shape = case.shape
    order = choose_order(shape, case.size, case.size)
    tt = conv_flops(shape, case.batch, case.size, case.size, order)
    return f"dense / TT forward FLOPs {dense_conv_flops(shape, case.batch, case.size, case.size) / tt:.1f}x ({order})"


def _rows(framework: str, label: str, candidates: list[Candidate], budget_s: float) -> list[str]:
    rows = []
    for c in candidates:
        fwd = measure(c.forward, budget_s=budget_s).median_ms
        step = measure(c.step, budget_s=budget_s).median_ms
        memory, what = c.memory()
        rows.append(f"| {label} | {framework} | {c.name} | {c.params:,} | {fwd:.3f} | {step:.3f} | "
                    f"{memory / 2**20:.2f} ({what}) |")
    return rows


def run(frameworks: list[str], conv_cases, embedding_cases, budget_s: float) -> str:
    lines = ["# TT convolution and TT embedding, measured side by side", "",
             ("Written by `python -m benchmarks.conv_embedding`. Float32; each time is the median of "
             "`benchmarks.timing.measure` (ms)."), ""]
    lines += [f"- {k}: {v}" for k, v in machine_info().items()]
    notes: list[str] = []
    builders = {"torch": (torch_conv, torch_embedding), "jax": (jax_conv, jax_embedding)}
    header = "| case | framework | candidate | params | forward (ms) | training step (ms) | memory (MiB) |"
    rule = "|---|---|---|---:|---:|---:|---:|"
    lines += ["", "## Convolution", "",
              "Batch, channels and image size in the case name; padding keeps the size. Cores at one TT rank.", ""]
    for case in conv_cases:
        lines += [(f"**{case.name}**, batch {case.batch}, TT rank {case.rank}, modes {case.in_modes} -> "
                  f"{case.out_modes}: {_conv_flops_ratio(case)}"), "", header, rule]
        for fw in frameworks:
            lines += _rows(fw, case.name, builders[fw][0](case, notes), budget_s)
        lines.append("")
    lines += ["## Embedding", "", ("A lookup of a batch of random indices; the training step's gradient goes to "
              "the table (dense) or the cores (TT)."), ""]
    for case in embedding_cases:
        dense_mb = case.vocab * case.features * 4 / 2**20
        lines += [(f"**{case.name}**, {case.tokens} indices, TT rank {case.rank}, modes {case.vocab_modes} x "
                  f"{case.feature_modes}; the dense table holds {dense_mb:.1f} MiB"), "", header, rule]
        for fw in frameworks:
            lines += _rows(fw, case.name, builders[fw][1](case, notes), budget_s)
        lines.append("")
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in dict.fromkeys(notes)], ""]
    return "\n".join(lines)


def grouped_conv_ab(cases, rounds: int) -> str:
    """The JAX ``TTConv2d`` training step with ``tt_jax._xla_cpu.shared_filter_conv`` (groups folded into the
    batch on XLA:CPU) against the plain grouped convolution, compiled apart and timed interleaved."""
    from unittest import mock

    import jax.numpy as jnp

    from benchmarks.timing import interleaved
    from tt_jax import _xla_cpu

    def grouped(x, kernel, groups, conv):
        return conv(x, jnp.tile(kernel, (1, 1, 1, groups)), feature_group_count=groups)

    lines = ["| case | folded step (ms) | grouped step (ms) | grouped / folded |", "|---|---:|---:|---:|"]
    for case in cases:
        folded = jax_conv(case, [])[0].step
        with mock.patch.object(_xla_cpu, "shared_filter_conv", grouped):
            plain = jax_conv(case, [])[0].step
            plain()  # traced and compiled under the patch
        times = interleaved({"folded": folded, "grouped": plain}, rounds=rounds)
        a, b = times["folded"][0], times["grouped"][0]
        lines.append(f"| {case.name}, batch {case.batch}, rank {case.rank} | {a:.1f} | {b:.1f} | {b / a:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", nargs="+", choices=("torch", "jax"), default=["torch", "jax"])
    parser.add_argument("--quick", action="store_true", help="one small case of each kind, a short time budget")
    parser.add_argument("--budget-s", type=float, default=1.5, help="timed seconds per cell (default 1.5)")
    parser.add_argument("--kinds", nargs="+", choices=("conv", "embedding"), default=["conv", "embedding"],
                        help="which layers to measure (default both)")
    parser.add_argument("--out", help="write the report here (it must not exist) instead of printing it")
    parser.add_argument("--grouped-ab", action="store_true",
                        help="only the A/B of the JAX TTConv2d step with and without folding the groups (XLA:CPU)")
    args = parser.parse_args(argv)
    if args.grouped_ab:
        print(grouped_conv_ab(QUICK_CONV if args.quick else CONV_CASES, rounds=2 if args.quick else 3))
        return
    if args.out:
        from pathlib import Path

        if Path(args.out).exists():
            raise SystemExit(f"error: --out {args.out} exists; pick another path or remove it")
    conv = (QUICK_CONV if args.quick else CONV_CASES) if "conv" in args.kinds else ()
    embedding = (QUICK_EMBEDDING if args.quick else EMBEDDING_CASES) if "embedding" in args.kinds else ()
    report = run(args.frameworks, conv, embedding, 0.2 if args.quick else args.budget_s)
    if args.out:
        with open(args.out, "x") as f:
            f.write(report + "\n")
    else:
        print(report)


if __name__ == "__main__":
    main()
