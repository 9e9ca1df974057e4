"""Data-parallel training: which processes and devices a run has, how they start, and the checks before any work.

A run on ``N`` devices (``--devices N``) splits every global batch of ``--batch-size B`` into ``N`` shards of
``B / N`` examples, one per device, and keeps a copy of the parameters on each. The loss is the global batch's
mean and the batch norms normalise with the global batch's statistics, so a step on ``N`` devices is the step on
one device with batch ``B``, up to float32 rounding (sums over the batch are taken in another order):

- JAX (:mod:`experiments.backend_jax`): one process drives its devices. Each batch is a ``jax.Array`` sharded over
  a 1-D ``Mesh`` (axis :data:`AXIS`) by ``NamedSharding(mesh, P("data"))``; the NNX state (parameters, batch-norm
  statistics, optimizer, RNG) is placed by ``nnx.get_named_sharding`` (replicated: the networks carry no sharding
  annotations) and the single-device jitted step runs unchanged: XLA inserts the all-reduces, and the batch norms'
  means over the batch axis are global means. Across machines: one process per machine, joined by
  ``jax.distributed.initialize()`` when ``JAX_COORDINATOR_ADDRESS`` is set (:func:`start_jax_distributed`).
- torch (:mod:`experiments.backend_torch`): one process per device, ``DistributedDataParallel`` (gloo on a CPU,
  NCCL on GPUs). ``--devices N`` alone starts ``N`` local processes (:func:`spawn`); under ``torchrun`` the
  launcher has started them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``: :func:`launcher_world`). Each rank's loss
  is its shard's summed loss times ``N / B``: DDP averages the gradients over the ranks, which makes it the
  gradient of the global mean. The batch norms are :class:`experiments.backend_torch.GlobalBatchNorm1d`.

Every process reads the same global batches (:func:`experiments.data.iterate_batches` is a pure function of seed
and epoch) and takes its rows (:func:`shard`); only the main process (rank 0) writes files and prints.

>>> shard(10, 2, 1), shard(5, 2, 0), shard(5, 2, 1)
((5, 10), (0, 3), (3, 5))
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = ["AXIS", "SINGLE", "World", "check_devices", "check_resume", "is_main_process", "launcher_world",
           "process_group", "requested_devices", "shard", "spawn", "spawns", "start"]

AXIS = "data"  # the mesh axis the batch is sharded over (JAX)
_TORCHRUN = ("RANK", "WORLD_SIZE")  # both set: started by torchrun (or a torchrun-style environment)


@dataclass(frozen=True)
class World:
    """The processes of a run: how many there are, which one this is, and what started them.

    ``launcher`` is ``"none"`` (one process), ``"spawn"`` (:func:`spawn`), ``"torchrun"`` or ``"jax.distributed"``.
    """

    processes: int = 1
    rank: int = 0
    local_rank: int = 0
    local_processes: int = 1  # processes on this machine
    launcher: str = "none"

    @property
    def is_main(self) -> bool:
        """The process that writes the run's files and prints its progress."""
        return self.rank == 0


SINGLE = World()


def _env_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"${name} must be an integer (as torchrun sets it), got {value!r}") from None


def launcher_world(environ: Mapping[str, str] | None = None) -> World:
    """The world a torchrun-style environment describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``), else :data:`SINGLE`.

    >>> launcher_world({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    World(processes=2, rank=1, local_rank=1, local_processes=2, launcher='torchrun')
    >>> launcher_world({}) == SINGLE
    True
    """
    environ = os.environ if environ is None else environ
    if not all(name in environ for name in _TORCHRUN):
        return SINGLE
    processes, rank = _env_int(environ, "WORLD_SIZE"), _env_int(environ, "RANK")
    local_rank = _env_int(environ, "LOCAL_RANK", rank)
    local_processes = _env_int(environ, "LOCAL_WORLD_SIZE", processes)
    if processes < 1 or not 0 <= rank < processes or not 0 <= local_rank < local_processes:
        raise ValueError(f"torchrun environment: RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE="
                         f"{processes}, LOCAL_WORLD_SIZE={local_processes}")
    return World(processes, rank, local_rank, local_processes, "torchrun")


def requested_devices(flag: int | None, backend: str, environ: Mapping[str, str] | None = None) -> int:
    """The device count of a run: ``--devices`` if given, else torchrun's ``WORLD_SIZE`` (torch), else 1.

    >>> requested_devices(None, "torch", {"RANK": "0", "WORLD_SIZE": "4"}), requested_devices(None, "jax", {})
    (4, 1)
    """
    if flag is not None:
        return flag
    world = launcher_world(environ)
    return world.processes if backend == "torch" else 1


def start_jax_distributed(environ: Mapping[str, str] | None = None) -> World:
    """Joins the JAX processes of a multi-machine run (``jax.distributed.initialize()``) when
    ``JAX_COORDINATOR_ADDRESS`` is set, with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` if set (else JAX finds
    them on SLURM, Open MPI, ...); returns the world it joined, or :data:`SINGLE`."""
    environ = os.environ if environ is None else environ
    if "JAX_COORDINATOR_ADDRESS" not in environ:
        return SINGLE
    import jax

    if not jax.distributed.is_initialized():
        kwargs = {key: _env_int(environ, name) for key, name in
                  (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")) if name in environ}
        jax.distributed.initialize(**kwargs)  # the coordinator's address: JAX reads $JAX_COORDINATOR_ADDRESS
    return World(jax.process_count(), jax.process_index(), 0, 1, "jax.distributed")


def start(config) -> World:
    """The world this process runs ``config`` (an :class:`experiments.train.RunConfig`) in, after
    :func:`check_devices`; joins a multi-machine JAX run. Loads no data and builds nothing."""
    world = launcher_world()
    if config.backend == "jax":
        if world.processes > 1:
            raise ValueError(f"torchrun started {world.processes} processes (WORLD_SIZE), but the JAX backend runs "
                             "one process per machine that drives all its devices: start it with --devices N, and "
                             "across machines through jax.distributed (docs/multi_device.md)")
        world = start_jax_distributed()
    check_devices(config, world)
    return world


def spawns(config, world: World) -> bool:
    """Whether :func:`experiments.train.train` must start the processes itself: torch on several devices without a
    launcher."""
    return config.backend == "torch" and config.devices > 1 and world.launcher == "none"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _split_message(batch: int, devices: int) -> str:
    return (f"batch_size (--batch-size) {batch} does not split over devices (--devices) {devices}: every device "
            f"takes an equal share of each global batch, so the batch size must be a multiple of {devices} "
            f"(or the device count one of {_divisors(batch)[:8]})")


def check_devices(config, world: World = SINGLE) -> None:
    """A ``ValueError`` naming the numbers if ``config.devices`` does not fit ``config.batch_size``, the launcher's
    processes or the devices present; before any work (it imports the backend's framework to count devices).

    >>> from experiments.train import RunConfig
    >>> check_devices(RunConfig(devices=3, batch_size=100))
    Traceback (most recent call last):
    ...
    ValueError: batch_size (--batch-size) 100 does not split over devices (--devices) 3: every device takes an equal share of each global batch, so the batch size must be a multiple of 3 (or the device count one of [1, 2, 4, 5, 10, 20, 25, 50])
    """
    devices, batch = config.devices, config.batch_size
    if batch % devices:
        raise ValueError(_split_message(batch, devices))
    if world.launcher == "torchrun" and devices != world.processes:
        raise ValueError(f"devices (--devices) is {devices}, but torchrun started {world.processes} processes "
                         f"(WORLD_SIZE={world.processes}), one per device: leave --devices out or give "
                         f"--devices {world.processes}")
    if devices == 1 and world.processes == 1:
        return  # one device: nothing to count (and the framework is imported later, as before)
    if config.backend == "jax":
        _check_jax_devices(devices, world)
    else:
        _check_torch_devices(devices, world)


def _check_jax_devices(devices: int, world: World) -> None:
    import jax

    present = jax.device_count()
    platform = jax.devices()[0].platform
    if world.processes > 1 and devices != present:
        raise ValueError(f"devices (--devices) is {devices}, but the {world.processes} JAX processes have {present} "
                         f"{platform} devices in all: a multi-machine run uses every one, give --devices {present}")
    if devices > present:
        hint = (f"; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={devices} (set before JAX starts) "
                f"simulates {devices}" if platform == "cpu" else "")
        raise ValueError(f"devices (--devices) is {devices}, but JAX sees {present} {platform} "
                         f"device{'s' if present != 1 else ''}{hint}")


def _check_torch_devices(devices: int, world: World) -> None:
    import torch

    here = world.local_processes if world.launcher == "torchrun" else devices  # processes on this machine
    if torch.cuda.is_available():
        present, what = torch.cuda.device_count(), "CUDA GPUs on this machine (one process each)"
    else:
        present = os.cpu_count() or 1
        what = "CPU cores on this machine (torch on a CPU runs one gloo process per device)"
    if here > present:
        asked = (f"devices (--devices) is {devices}" if world.launcher != "torchrun" else
                 f"torchrun started {here} processes on this machine (LOCAL_WORLD_SIZE)")
        raise ValueError(f"{asked}, but there are {present} {what}")


def check_resume(saved_config: dict, config, out) -> None:
    """A resume on another device count than its checkpoint's: a ``ValueError`` naming both counts and the batch
    if the global batch (which a resume keeps) does not split over the new count. The state itself does not depend
    on the device count (parameters and optimizer state are whole on every device: a run resumes on any count
    that divides its batch)."""
    before = saved_config.get("devices", 1)  # runs from before --devices ran on one
    batch = saved_config.get("batch_size", config.batch_size)
    if before != config.devices and batch % config.devices:
        raise ValueError(f"--resume: the checkpoint in {out} was written on {before} device"
                         f"{'s' if before != 1 else ''} with a global batch of {batch} (--batch-size, which a resume "
                         f"keeps); {batch} examples do not split over {config.devices} devices: resume on one of "
                         f"{_divisors(batch)[:8]} devices")


def shard(n: int, processes: int, rank: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a batch of ``n`` that ``rank`` of ``processes`` takes: contiguous, equal when
    ``processes`` divides ``n`` (a last, short batch may leave some ranks one row more, or none)."""
    base, extra = divmod(n, processes)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def is_main_process() -> bool:
    """Whether this process prints a run's results: rank 0 of torchrun, process 0 of a multi-machine JAX run."""
    if not launcher_world().is_main:
        return False
    jax = sys.modules.get("jax")  # not imported: not a JAX run
    return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0


@contextlib.contextmanager
def process_group(world: World, backend: str) -> Iterator[None]:
    """torch's process group for ``world`` (gloo on a CPU, NCCL on GPUs) while the run lasts; nothing for one
    process or JAX. Reads ``MASTER_ADDR`` and ``MASTER_PORT`` from the environment (torchrun and :func:`spawn`
    set them)."""
    if backend != "torch" or world.processes == 1:
        yield
        return
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://",
                            rank=world.rank, world_size=world.processes)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _spawned(index: int, processes: int, port: int, target: str, args: tuple, results) -> None:
    """One spawned rank: the torchrun environment, then ``target(world, *args)``; rank 0 sends its result."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), WORLD_SIZE=str(processes),
                      LOCAL_RANK=str(index), LOCAL_WORLD_SIZE=str(processes))
    world = World(processes, index, index, processes, "spawn")
    module, _, name = target.partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(world, *args)
    except Exception as error:
        results.put(("error", _picklable(error)))  # for the parent to raise as it is (an error line, not a trace)
        raise
    if index == 0:
        results.put(("result", result))


def spawn(target: str, processes: int, *args):
    """Runs ``target(world, *args)`` (``"module:function"``) in ``processes`` new local processes, ranks of a
    torchrun-style world on ``127.0.0.1`` and a free port; returns rank 0's result (pickled through a pipe,
    read while the ranks run). The first error a rank raises is raised here with its type and message (the others are stopped)."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    received: list[tuple[str, object]] = []
    context = mp.spawn(_spawned, args=(processes, _free_port(), target, args, results), nprocs=processes,
                       join=False)
    try:
        while not context.join(timeout=0.2):
            received += _drain(results)  # while they run: a rank blocked writing a large result would never end
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as failure:
        for kind, value in received + _drain(results):
            if kind == "error":
                raise value from failure
        raise
    return next(value for kind, value in received + _drain(results) if kind == "result")


def _drain(queue) -> list[tuple[str, object]]:
    items = []
    while not queue.empty():
        items.append(queue.get())
    return items
