"""Timing and machine description.

:func:`measure` times a callable that blocks until its result is ready (the
candidates wrap ``block_until_ready`` / ``torch.cuda.synchronize`` themselves):
warm-up calls first (compilation, autotuning, allocator growth), then up to
``repeats`` timed calls, stopping early once ``budget_s`` seconds of timed calls
are spent, but never fewer than ``min_repeats`` (unless the first call alone
took longer than the budget: then one timed call after it). When the first call
takes longer than ``single_call_s``, one more call is the only timed one
(``n == 1``): pass that only for callables whose first call does not compile.
Slow candidates (the dense 784 -> 262144 layer at batch 1000 takes seconds on
two cores) thus get fewer repeats and the whole run stays bounded, and no
timing is a first call, which also faults in fresh memory and starts threads.

>>> t = measure(lambda: None, warmup=1, repeats=5, budget_s=1.0)
>>> t.n, t.min_s <= t.median_s
(5, True)
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from experiments.machine import cpu_description, cpu_model, cpu_vector_extension

__all__ = ["SPEC_BANDWIDTH_GBPS", "Timing", "cpu_model", "interleaved", "load_average", "machine_info", "measure",
           "spec_bandwidth_gbps"]


@dataclass(frozen=True)
class Timing:
    min_s: float
    median_s: float
    n: int
    warmup_s: float  # the first call (it may compile)

    @property
    def min_ms(self) -> float:
        return 1e3 * self.min_s

    @property
    def median_ms(self) -> float:
        return 1e3 * self.median_s


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repeats: int = 20,
    min_repeats: int = 3,
    budget_s: float = 2.0,
    single_call_s: float | None = None,
) -> Timing:
    """Times ``fn()``; see the module docstring."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if single_call_s is not None and first > single_call_s:  # too slow to repeat: one timed call after the first
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        return Timing(once, once, 1, first)
    if first > budget_s:  # one call eats the budget: no more warm-up, a single timed call
        warmup, min_repeats = 1, 1
    for _ in range(max(warmup - 1, 0)):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (len(times) < min_repeats or spent < budget_s):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return Timing(min(times), statistics.median(times), len(times), first)


def interleaved(
    calls: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, pause_s: float = 0.0
) -> dict[str, tuple[float, float]]:
    """``name -> (median ms, min ms)`` of each blocking call, timed one call of each in turn per round
    (after ``warmup`` untimed rounds), so that a slow spell of a shared machine hits every candidate alike.
    ``pause_s`` sleeps after each timed call, outside its time (to let freed memory and threads settle).

    >>> sorted(interleaved({"a": lambda: None, "b": lambda: None}, rounds=3))
    ['a', 'b']
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(1e3 * (time.perf_counter() - t0))
            if pause_s:
                time.sleep(pause_s)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, str]:
    """CPU, core and thread counts, load and memory, as strings for the report header."""
    info = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_description(cpu_model(), cpu_vector_extension()),
        "cpus": f"{os.cpu_count()} logical, {_usable_cpus()} usable by this process (XLA's CPU thread pool uses them all)",
    }
    load = load_average()
    if load is not None:
        info["load average (1/5/15 min)"] = ", ".join(f"{x:.2f}" for x in load)
    try:
        with open("/proc/meminfo") as f:
            mem = {line.split(":")[0]: line.split(":")[1].strip() for line in f}
        info["memory"] = f"{mem.get('MemTotal', '?')} total, {mem.get('MemAvailable', '?')} available"
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS") if k in os.environ}
    if env:
        info["environment"] = ", ".join(f"{k}={v}" for k, v in env.items())
    return info


# Vendor datasheet memory bandwidth (GB/s) of GPUs the benchmark may meet, matched on the device name that
# torch (`get_device_name`) and JAX (`device_kind`) report; more specific patterns first. A roofline with the
# measured copy rate is what the machine gives a streaming kernel; this one is what its memory could.
SPEC_BANDWIDTH_GBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5, 80 GB HBM3
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),  # 40 GB
)


def spec_bandwidth_gbps(device_name: str) -> float | None:
    """The datasheet memory bandwidth of a known GPU, in GB/s (``None`` for others and CPUs).

    >>> spec_bandwidth_gbps("NVIDIA H200"), spec_bandwidth_gbps("NVIDIA H100 PCIe"), spec_bandwidth_gbps("cpu")
    (4800.0, 2000.0, None)
    """
    for pattern, gbps in SPEC_BANDWIDTH_GBPS:
        if pattern in device_name:
            return gbps
    return None
