"""Collects the measurements and renders the markdown report, goals included.

Ratios are always *the other candidate's time over ours*: above 1 means ours is
faster. "Ours" in torch is the eager layer (what ``tt_torch.TTLinear`` gives
without ``torch.compile``); the compiled one has its own column.

A run writes its measurements beside the report (``RESULTS.json`` next to
``RESULTS.md``), so that the report can be rendered again, by a later version of
this module, without measuring again::

    python -m benchmarks.report benchmarks/RESULTS.json    # rewrites benchmarks/RESULTS.md

``--preface FILE.md`` adds a reader's note under the title (what the run
changed, how to read it); it is kept in the JSON for later renders.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.candidate import Candidate, MemoryReport, einsum_path
from benchmarks.layers import LARGE_FLOP_RATIO, LayerConfig, get
from benchmarks.timing import Timing

__all__ = ["Results", "load_run", "render", "save_run"]

PASSES = ("fwd", "fwd+bwd")
TRAIN_FLOP_FACTOR = 3  # backward = two products per forward product
ITEMSIZE = {"float32": 4, "bfloat16": 2}


@dataclass
class Results:
    layers: list[LayerConfig]
    batches: list[int]
    candidates: list[Candidate]
    devices: dict[str, str] = field(default_factory=dict)  # framework -> device
    peaks: dict[str, dict[str, float]] = field(default_factory=dict)  # framework -> matmul GFLOP/s, copy GB/s
    versions: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    times: dict[tuple, Timing] = field(default_factory=dict)
    skips: dict[tuple, str] = field(default_factory=dict)
    mems: dict[tuple, MemoryReport] = field(default_factory=dict)
    cand_notes: dict[tuple, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """What a worker process sends back (the layers and batches are the parent's own)."""
        return {
            "candidates": [[c.framework, c.name, c.label, c.family] for c in self.candidates],
            "devices": self.devices,
            "peaks": self.peaks,
            "versions": self.versions,
            "times": [[*k, t.min_s, t.median_s, t.n, t.warmup_s] for k, t in self.times.items()],
            "skips": [[*k, v] for k, v in self.skips.items()],
            "mems": [[*k, m.saved, m.peak, m.how] for k, m in self.mems.items()],
            "notes": [[*k, v] for k, v in self.cand_notes.items()],
        }

    def merge(self, data: dict) -> None:
        self.candidates += [Candidate(*c) for c in data["candidates"]]
        self.devices.update(data["devices"])
        self.peaks.update(data["peaks"])
        self.versions.update(data["versions"])
        for layer, b, key, p, *t in data["times"]:
            self.times[(layer, b, key, p)] = Timing(*t)
        for layer, b, key, why in data["skips"]:
            self.skips[(layer, b, key)] = why
        for layer, b, key, *m in data["mems"]:
            self.mems[(layer, b, key)] = MemoryReport(*m)
        for layer, key, notes in data["notes"]:
            self.cand_notes[(layer, key)] = notes

    def add(self, cfg, batch, cand, pass_, timing: Timing) -> None:
        self.times[(cfg.name, batch, cand.key, pass_)] = timing

    def skip(self, cfg, batch, cand, why: str) -> None:
        self.skips[(cfg.name, batch, cand.key)] = why

    def memory(self, cfg, batch, cand, mem: MemoryReport) -> None:
        self.mems[(cfg.name, batch, cand.key)] = mem

    def notes(self, cfg, cand, notes: list[str]) -> None:
        have = self.cand_notes.setdefault((cfg.name, cand.key), [])
        have += [n for n in notes if n not in have]

    def median(self, cfg, batch, key, pass_) -> float | None:
        t = self.times.get((cfg.name, batch, key, pass_))
        return None if t is None else t.median_s

    def flops(self, cfg, batch, family: str, pass_: str) -> int:
        f = cfg.tt_flops(batch) if family == "tt" else cfg.dense_flops(batch)
        return f * (TRAIN_FLOP_FACTOR if pass_ == "fwd+bwd" else 1)

    def gflops(self, cfg, batch, cand: Candidate, pass_) -> float | None:
        t = self.median(cfg, batch, cand.key, pass_)
        return None if t is None else self.flops(cfg, batch, cand.family, pass_) / t / 1e9

    def ratio(self, cfg, batch, other: str, ours: str, pass_) -> float | None:
        a, b = self.median(cfg, batch, other, pass_), self.median(cfg, batch, ours, pass_)
        return None if a is None or b is None else a / b

    def has(self, key: str) -> bool:
        return any(c.key == key for c in self.candidates)


def _single_call(t: Timing) -> bool:
    """Measured by one timed call (after a first one slower than ``--single-call-s``): one noisy sample."""
    return t.n == 1


def _fmt_ms(t: Timing | None) -> str:
    if t is None:
        return "–"
    def f(s):
        ms = 1e3 * s
        return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"
    if _single_call(t):
        return f"{f(t.median_s)}¹"
    return f"{f(t.median_s)} / {f(t.min_s)}"


def _fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}x"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(
    res: Results,
    header: dict[str, str],
    *,
    quick: bool = False,
    memory_batch: int | None = None,
    retained: bool = False,
    preface: str | None = None,
    dtype: str = "float32",
) -> str:
    """The markdown report. ``retained``: the workers kept freed memory (``--retain-memory``); ``preface``:
    markdown placed under the title; ``dtype``: of the run's parameters and inputs (its bytes per element)."""
    itemsize = ITEMSIZE[dtype]
    L: list[str] = ["# TT layer benchmarks" + ("" if dtype == "float32" else f" ({dtype})"), ""]
    if preface:
        L += [preface.strip(), ""]
    if quick:
        L += [
            "> **Harness check (`--quick`): few repeats, small batches, possibly a loaded machine. "
            "Not final numbers.**",
            "",
        ]
    L += ["## Machine and run", ""]
    L += [f"- **{k}**: {v}" for k, v in header.items()]
    for fw, p in res.peaks.items():
        L.append(
            f"- **{fw} reference rates** (same run): dense {dtype} matmul {p['matmul_size']:.0f}^3 "
            f"**{p['matmul']:.1f} GFLOP/s**; streaming `x + 1` into a new array **{p['copy']:.1f} GB/s** (read + write)"
            + (f"; datasheet memory bandwidth {p['spec_copy']:.0f} GB/s" if p.get("spec_copy") else "")
        )
    for fw, why in res.failures.items():
        L.append(f"- **{fw} FAILED**: {why} (see the run's stderr)")
    L.append("")

    # Layers
    L += ["## Layers", ""]
    big = max(res.batches)
    mem_b = memory_batch or big
    rows = []
    for cfg in res.layers:
        s = cfg.shape
        roofs = []
        for fw, p in res.peaks.items():
            roof = cfg.tt_flops(big) / (cfg.traffic_bytes(big, itemsize) / (p["copy"] * 1e9)) / 1e9
            roofs.append(f"{fw} {roof:.0f}")
            if p.get("spec_copy"):
                spec = cfg.tt_flops(big) / (cfg.traffic_bytes(big, itemsize) / (p["spec_copy"] * 1e9)) / 1e9
                roofs.append(f"{fw} datasheet {spec:.0f}")
        rows.append(
            [
                f"`{cfg.name}`",
                cfg.describe(),
                str(s.ranks),
                cfg.direction,
                f"{cfg.tt_flops(1) / 1e6:.3g}",
                f"{cfg.dense_flops(1) / 1e6:.3g}",
                f"{cfg.flop_ratio:.1f}" + (" (large)" if cfg.large else ""),
                f"{s.num_params:,} / {s.dense_num_params:,}",
                f"{cfg.tt_flops(1) / cfg.traffic_bytes(1, itemsize):.1f}",
                ", ".join(roofs),
            ]
        )
    L += _table(
        [
            "layer",
            "modes",
            "ranks",
            "dir",
            "TT MFLOP/sample",
            "dense MFLOP/sample",
            "dense/TT FLOPs",
            "TT / dense params",
            "FLOP/byte",
            "bandwidth-bound GFLOP/s",
        ],
        rows,
    )
    L += [
        "",
        f"FLOPs count multiply and add; a training step counts {TRAIN_FLOP_FACTOR}x the forward. "
        f"'large': TT FLOPs at least {LARGE_FLOP_RATIO:g}x below dense. FLOP/byte: forward FLOPs of the "
        "core-by-core product over the least memory traffic (each step reads its state and writes the next, "
        f"{dtype}); with the measured copy bandwidth that bounds the rate of any unfused core-by-core product "
        "(a roofline), whatever the matmul peak.",
        "",
    ]

    cands = res.candidates
    # Times
    L += [
        "## Time per call, ms (median / min)",
        "",
        "¹ a single timed call (after an untimed first call slower than `--single-call-s`).",
        "",
    ]
    rows = []
    for cfg in res.layers:
        for b in res.batches:
            for p in PASSES:
                row = [f"`{cfg.name}`", str(b), p]
                for c in cands:
                    t = res.times.get((cfg.name, b, c.key, p))
                    row.append(_fmt_ms(t) if t else ("skip" if (cfg.name, b, c.key) in res.skips else "–"))
                rows.append(row)
    L += _table(["layer", "batch", "pass", *[c.label for c in cands]], rows)
    L.append("")

    # Rates
    L += [
        "## Achieved GFLOP/s (from the median)",
        "",
        "TT-family candidates (ours, einsum, TensorLy-Torch) are credited with the FLOPs of our contraction "
        "(the useful work), the dense layer with the dense FLOPs. In brackets for ours: percent of the "
        "framework's matmul rate above.",
        "",
    ]
    rows = []
    for cfg in res.layers:
        for b in res.batches:
            for p in PASSES:
                row = [f"`{cfg.name}`", str(b), p]
                for c in cands:
                    g = res.gflops(cfg, b, c, p)
                    cell = "–" if g is None else f"{g:.3g}"
                    if g is not None and c.name.startswith("ours") and c.framework in res.peaks:
                        cell += f" ({100 * g / res.peaks[c.framework]['matmul']:.0f}%)"
                    row.append(cell)
                rows.append(row)
    L += _table(["layer", "batch", "pass", *[c.label for c in cands]], rows)
    L.append("")

    L += _roofline(res, itemsize)

    # First calls
    L += [
        f"## First call of a training step, batch {big}, s (compilation included)",
        "",
    ]
    rows = []
    for cfg in res.layers:
        row = [f"`{cfg.name}`"]
        for c in cands:
            t = res.times.get((cfg.name, big, c.key, "fwd+bwd"))
            row.append("–" if t is None else f"{t.warmup_s:.3g}")
        rows.append(row)
    L += _table(["layer", *[c.label for c in cands]], rows)
    L.append("")

    # Ratios
    ratio_cols: list[tuple[str, Callable]] = []
    def col(title, other, ours):
        if res.has(other) and res.has(ours):
            ratio_cols.append((title, lambda cfg, b, p, o=other, u=ours: res.ratio(cfg, b, o, u, p)))
    col("JAX dense/ours", "jax:dense", "jax:ours")
    col("JAX einsum/ours", "jax:einsum", "jax:ours")
    col("torch dense/ours", "torch:dense", "torch:ours")
    col("torch einsum/ours", "torch:einsum", "torch:ours")
    col("TensorLy/ours", "torch:tensorly", "torch:ours")
    col("torch eager/compiled", "torch:ours", "torch:ours-compiled")
    col("JAX XLA/Pallas", "jax:ours", "jax:pallas")
    col("torch eager/Triton", "torch:ours", "torch:triton")
    col("torch compiled/Triton", "torch:ours-compiled", "torch:triton")
    col("torchTT/ours", "torch:torchtt", "torch:ours")
    col("torch ours/JAX ours", "torch:ours", "jax:ours")
    L += ["## Ratios (other's time / ours; above 1: ours is faster)", ""]
    rows = []
    for cfg in res.layers:
        for b in res.batches:
            for p in PASSES:
                rows.append([f"`{cfg.name}`", str(b), p, *[_fmt_ratio(f(cfg, b, p)) for _, f in ratio_cols]])
    L += _table(["layer", "batch", "pass", *[t for t, _ in ratio_cols]], rows)
    L.append("")

    # Memory
    if res.mems:
        L += [
            f"## Memory of one training step, batch {mem_b} (MB)",
            "",
            "Cells: *saved for backward* (activations autodiff keeps, parameters and input excluded) / "
            "*peak* above what existed before the step (output, gradients and temporaries included). "
            "JAX: `saved_residuals` / XLA `memory_analysis()` temp + output of the jitted step (a compile-time "
            "figure). torch: saved-tensor hooks / "
            + ("`torch.cuda.max_memory_allocated`." if "cuda" in res.devices.values() else "allocation events of `torch.profiler`.")
            + " The ratio column is ours' peak over the dense layer's in the same framework.",
            "",
        ]
        rows = []
        for cfg in res.layers:
            row = [f"`{cfg.name}`"]
            for c in cands:
                m = res.mems.get((cfg.name, mem_b, c.key))
                row.append("–" if m is None else f"{_mb(m.saved)} / {_mb(m.peak)}")
            ratios = []
            for fw in ("jax", "torch"):
                a, d = res.mems.get((cfg.name, mem_b, f"{fw}:ours")), res.mems.get((cfg.name, mem_b, f"{fw}:dense"))
                if a and d and a.peak and d.peak:
                    ratios.append(f"{fw} {a.peak / d.peak:.2f}x")
            row.append(", ".join(ratios) or "–")
            rows.append(row)
        L += _table(["layer", *[c.label for c in cands], "ours/dense peak"], rows)
        L.append("")

    L += _goals(res, retained)

    # Notes
    L += ["## Notes", ""]
    seen = set()
    for (layer, key), notes in sorted(res.cand_notes.items()):
        for n in notes:
            if (layer, key, n) not in seen:
                seen.add((layer, key, n))
                L.append(f"- `{layer}` {key}: {n}")
    for (layer, b, key), why in sorted(res.skips.items()):
        L.append(f"- skipped `{layer}` batch {b} {key}: {why}")
    L.append("")
    return "\n".join(L)


def _bandwidths(res: Results) -> list[tuple[str, float]]:
    """The device's memory bandwidths for the roofline (GB/s): the best copy rate measured in the run, then the
    datasheet's where the device is a known GPU."""
    out = []
    copies = [p["copy"] for p in res.peaks.values() if p.get("copy")]
    if copies:
        out.append(("measured copy", max(copies)))
    specs = [p["spec_copy"] for p in res.peaks.values() if p.get("spec_copy")]
    if specs:
        out.append(("datasheet", max(specs)))
    return out


def _roofline(res: Results, itemsize: int) -> list[str]:
    """Each product's least memory traffic, the time it bounds, and how close each TT candidate comes."""
    bws = _bandwidths(res)
    if not bws:
        return []
    tts = [c for c in res.candidates if c.family == "tt"]
    L = [
        "## Memory-bandwidth roofline",
        "",
        "Least bytes a call must move: *core by core* (each step reads its state and writes the next; a training "
        "step's backward also reads each step's output gradient and input state and writes its input gradient) "
        "and *fused* (the input in and the output out, the cores and bias once; a training step also reads the "
        "output gradient and writes the input gradient). The bounds are those bytes over "
        + " and over ".join(f"the {name} bandwidth ({gbps:.0f} GB/s)" for name, gbps in bws)
        + f". Cells of the TT candidates: percent of the core-by-core bound / of the fused bound at the "
        f"{bws[0][0]} bandwidth that the median call reaches (100% = at the bound; a fused kernel can pass the "
        "core-by-core one).",
        "",
    ]
    rows = []
    for cfg in res.layers:
        for b in res.batches:
            for p in PASSES:
                train = p == "fwd+bwd"
                unfused = cfg.train_traffic_bytes(b, itemsize) if train else cfg.traffic_bytes(b, itemsize)
                fused = cfg.fused_traffic_bytes(b, itemsize, train=train)
                row = [f"`{cfg.name}`", str(b), p, f"{unfused / 1e6:.3g} / {fused / 1e6:.3g}"]
                row += [f"{1e3 * unfused / (g * 1e9):.3g} / {1e3 * fused / (g * 1e9):.3g}" for _, g in bws]
                t_unfused, t_fused = (n / (bws[0][1] * 1e9) for n in (unfused, fused))
                for c in tts:
                    t = res.median(cfg, b, c.key, p)
                    row.append("–" if t is None else f"{100 * t_unfused / t:.0f}% / {100 * t_fused / t:.0f}%")
                rows.append(row)
    heads = [f"bound ms, {name}" for name, _ in bws]
    L += _table(["layer", "batch", "pass", "MB core by core / fused", *heads, *[c.label for c in tts]], rows)
    L.append("")
    return L


def _mb(x: int | None) -> str:
    return "?" if x is None else f"{x / 1e6:.3g}"


def _goals(res: Results, retained: bool) -> list[str]:
    large = [c for c in res.layers if c.large]
    big = max(res.batches)
    L = ["## Goals", ""]

    def verdict(title: str, cases: list[tuple[str, float | None]], target: float, unit: str, higher=True) -> list:
        """Appends the goal's line (met, or missed and by how much); returns the missed cases."""
        cases = [(w, v) for w, v in cases if v is not None]
        if not cases:
            L.append(f"- **{title}**: not measured")
            return []
        ok = [(w, v) for w, v in cases if (v >= target if higher else v <= target)]
        worst = min(cases, key=lambda c: c[1]) if higher else max(cases, key=lambda c: c[1])
        if len(ok) == len(cases):
            L.append(f"- **{title}**: **met** in all {len(cases)} cases (worst {worst[0]}: {worst[1]:.2f}{unit})")
            return []
        gap = target / worst[1] if higher else worst[1] / target
        L.append(
            f"- **{title}**: **missed** in {len(cases) - len(ok)} of {len(cases)} cases; worst {worst[0]}: "
            f"{worst[1]:.2f}{unit} against {target:g}{unit}, short by {gap:.2f}x"
        )
        missed = [(w, v) for w, v in cases if (w, v) not in ok]
        L.append(f"  - missed: {', '.join(w for w, _ in missed[:12])}{' ...' if len(missed) > 12 else ''}")
        return missed

    p = "fwd+bwd"
    cases = []
    for cfg in large:
        for b in res.batches:
            cases.append((f"`{cfg.name}` B={b} JAX vs einsum", res.ratio(cfg, b, "jax:einsum", "jax:ours", p)))
            cases.append((f"`{cfg.name}` B={b} torch vs einsum", res.ratio(cfg, b, "torch:einsum", "torch:ours", p)))
            cases.append((f"`{cfg.name}` B={b} torch vs TensorLy", res.ratio(cfg, b, "torch:tensorly", "torch:ours", p)))
    title = "1. fwd+bwd at least 3x faster than TensorLy-Torch and the single einsum (large layers)"
    missed = verdict(title, cases, 3.0, "x")
    if missed:
        L += _goal1_why(res, large)

    cases, single = [], set()
    for cfg in large:
        for b in res.batches:
            for pp in PASSES:
                for fw in ("jax", "torch"):
                    where = f"`{cfg.name}` B={b} {pp} {fw}"
                    cases.append((where, res.ratio(cfg, b, f"{fw}:dense", f"{fw}:ours", pp)))
                    timed = [res.times.get((cfg.name, b, f"{fw}:{c}", pp)) for c in ("ours", "dense")]
                    if any(t is not None and _single_call(t) for t in timed):
                        single.add(where)
    missed = verdict(f"2. faster than dense where TT FLOPs are at least {LARGE_FLOP_RATIO:g}x lower", cases, 1.0, "x")
    if missed:
        n = sum(w in single for w, _ in missed)
        rest = "rests" if n == 1 else "rest"
        L.append(f"  - why: {n} of the {len(missed)} misses {rest} on a single timed call (¹) of ours or dense.")

    cases = []
    for cfg in large:
        for pp in PASSES:
            for fw in ("jax", "torch"):
                peak = res.peaks.get(fw, {}).get("matmul")
                cand = next((c for c in res.candidates if c.key == f"{fw}:ours"), None)
                g = None if cand is None or peak is None else res.gflops(cfg, big, cand, pp)
                cases.append((f"`{cfg.name}` B={big} {pp} {fw}", None if g is None else g / peak))
    title = "3. at least half the machine's matmul GFLOP/s (large layers, largest batch)"
    missed = verdict(title, cases, 0.5, " of peak")
    if missed:
        L.append(
            "  - why: the core-by-core product is bounded by memory bandwidth, not by the matmul units: it does "
            "3 to 6 FLOPs per byte it must move; the layers table gives the bound each framework's measured "
            "streaming rate implies."
        )

    cases, torch_over_jax = [], {}
    for cfg in res.layers:
        for b in res.batches:
            for pp in PASSES:
                where, r = f"`{cfg.name}` B={b} {pp}", res.ratio(cfg, b, "torch:ours", "jax:ours", pp)
                torch_over_jax[where] = r
                cases.append((where, None if r is None else max(r, 1 / r)))
    missed = verdict("4. JAX and torch within 1.2x of each other (slower/faster)", cases, 1.2, "x", higher=False)
    if missed:
        jax_faster = sum(torch_over_jax[w] > 1 for w, _ in missed)
        why = (
            f"  - why: JAX is the faster in {jax_faster} of the {len(missed)} misses, "
            f"torch in {len(missed) - jax_faster}."
        )
        pj, pt = res.peaks.get("jax"), res.peaks.get("torch")
        if pj and pt:
            why += (
                f" The frameworks' own kernels differ on this machine (same run): matmul {pj['matmul']:.0f} (JAX) vs "
                f"{pt['matmul']:.0f} GFLOP/s (torch), streaming {pj['copy']:.1f} vs {pt['copy']:.1f} GB/s."
            )
        why += (
            " Freed memory was retained, yet XLA:CPU's largest buffers still page-fault on some calls "
            "(`docs/performance.md`, Findings: JAX's 1 GB output is written twice)."
            if retained
            else " With default malloc each call also page-faults in its large buffers afresh, and XLA:CPU's fault "
            "more than torch's (`docs/performance.md`, Findings: freed memory kept in the process)."
        )
        L.append(why)
    L.append("")
    return L


def _goal1_why(res: Results, large: list[LayerConfig]) -> list[str]:
    """Goal 1's context: the single einsum follows opt_einsum's pairwise path, with FLOPs close to ours."""
    try:
        ratios = {(cfg.name, b): einsum_path(cfg, b)[1] / cfg.tt_flops(b) for cfg in large for b in res.batches}
    except ImportError:
        return ["  - why: opt_einsum is not installed here, so the einsum's contraction path cannot be shown."]
    lo, hi = min(ratios.values()), max(ratios.values())
    span = f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"
    L = [
        "  - why: the single einsum is not a naive product. `jnp.einsum` and `torch.einsum` (and TensorLy-Torch's "
        "forward, one `tl.einsum` on torch) follow opt_einsum's pairwise path, which contracts pairs of cores as our "
        f"merged plan does; on the large layers that path costs {span} our FLOPs. Where the two cost "
        "about the same, they move about the same memory, and being 3x faster would need the einsum to waste two "
        "thirds of its time on the same work. Training step, other's time / ours:",
        "",
    ]
    rows = []
    for cfg in large:
        for b in res.batches:
            row = [f"`{cfg.name}`", str(b), f"{ratios[(cfg.name, b)]:.2f}"]
            for other in ("jax:einsum", "torch:einsum", "torch:tensorly"):
                ours = other.split(":")[0] + ":ours"
                row.append(_fmt_ratio(res.ratio(cfg, b, other, ours, "fwd+bwd")))
            rows.append(row)
    L += ["  " + line for line in _table(
        ["layer", "batch", "einsum path FLOPs / ours", "JAX einsum/ours", "torch einsum/ours", "TensorLy/ours"], rows
    )]
    L.append("")
    return L


def save_run(path: Path, res: Results, header: dict[str, str], **render_kwargs) -> None:
    """Writes what :func:`render` needs as JSON, so that :func:`load_run` can render the report again.

    >>> import tempfile
    >>> from benchmarks.timing import Timing
    >>> layer, ours = get("1024-1024"), Candidate("jax", "ours", "JAX ours", "tt")
    >>> res = Results(layers=[layer], batches=[1], candidates=[ours])
    >>> res.add(layer, 1, ours, "fwd", Timing(1e-4, 2e-4, 5, 1.0))
    >>> path = Path(tempfile.mkdtemp()) / "run.json"
    >>> save_run(path, res, {"cpu": "test"}, quick=True)
    >>> again, header, kwargs = load_run(path)
    >>> render(again, header, **kwargs) == render(res, {"cpu": "test"}, quick=True)
    True
    """
    data = {
        "layers": [c.name for c in res.layers],
        "batches": res.batches,
        "header": header,
        "render": render_kwargs,
        "failures": res.failures,
        **res.to_json(),
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_run(path: Path) -> tuple[Results, dict[str, str], dict]:
    """The results, header and :func:`render` keywords that :func:`save_run` wrote."""
    data = json.loads(path.read_text())
    res = Results(layers=[get(name) for name in data["layers"]], batches=data["batches"], candidates=[])
    res.merge(data)
    res.failures.update(data["failures"])
    return res, data["header"], data["render"]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description="Renders a saved run's report again.")
    p.add_argument("run", type=Path, help="the .json a run wrote beside its report")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write (default: the .json's name, .md)")
    p.add_argument("--preface", type=Path, default=None, help="markdown under the title; saved into the .json")
    args = p.parse_args(argv)
    res, header, kwargs = load_run(args.run)
    if args.preface is not None:
        kwargs["preface"] = args.preface.read_text()
        save_run(args.run, res, header, **kwargs)
    out = args.out or args.run.with_suffix(".md")
    out.write_text(render(res, header, **kwargs))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
