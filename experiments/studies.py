"""The thesis's studies as named lists of training runs, for either backend.

==================  ==========================================================================================
study               runs
==================  ==========================================================================================
``mnist-table``     the six MNIST networks (``fc-fc``, ``tt-tt``, ``tt-fc``, ``fc-fc-fc``, ``tt-tt-tt``,
                    ``tt-tt-fc``), SGD momentum 0.9, lr 0.001, batch 100, 25 epochs (the thesis's setting)
``mnist-improved``  the same six without the ReLU after the last batch norm (``-improved``)
``cifar-table``     ``cifar-fc``, ``cifar-tt``, ``cifar-4tt-fc-146k``, ``cifar-4tt-fc-225k``: Adadelta (lr 1.0,
                    rho 0.95, eps 1e-6), batch 100, 100 epochs, on the CIFAR-10 JPEG q75 copy here
``optimizers``      ``tt-tt`` on MNIST, 25 epochs, with SGD momentum (lr 0.001), Adam (0.001), RMSprop (0.001)
                    and Adadelta (1.0)
``ranks``           ``tt-tt`` with TT-ranks 1, 2, 4, 8, 16 (both layers), MNIST setting
``modes``           ``tt-tt`` with d = 2, 3, 4, 5, 6 cores per layer (modes in :data:`presets.MODE_SWEEP`)
==================  ==========================================================================================

The thesis states the CIFAR-10 optimizer (Adadelta, 100 epochs) but not its hyperparameters: we use Zeiler's
(2012) ``rho=0.95, eps=1e-6`` with lr 1.0 (the Keras / torch default lr). Its optimizer comparison, rank and
mode sweeps are described without their exact settings; we run them on ``tt-tt`` with the MNIST table's setting
so that each sweep changes one thing at a time. Every run uses seed 0 (recorded in its ``config.json``).

Each run writes to ``experiments/results/<study>/<run>-<backend>/`` (see :func:`run_dir`); the metrics and
summaries there are what :mod:`experiments.report` tabulates. A run that several studies plan (``tt-tt`` with
SGD is in four) is trained once and shown in each (:func:`home_study`). Run a study with
``python -m experiments.study``.

>>> [r.model for r in STUDIES["mnist-table"].runs]
['fc-fc', 'tt-tt', 'tt-fc', 'fc-fc-fc', 'tt-tt-tt', 'tt-tt-fc']
>>> run_dir(STUDIES["optimizers"], STUDIES["optimizers"].for_backend("torch")[1]).name
'tt-tt-adam-torch'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from experiments.optim import OptimizerConfig
from experiments.presets import MODE_SWEEP, RANK_SWEEP, get_preset
from experiments.train import RunConfig

__all__ = ["RESULTS_DIR", "STUDIES", "Study", "home_study", "run_dir", "run_name"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"

MNIST_SGD = OptimizerConfig("sgd", learning_rate=0.001, momentum=0.9)
CIFAR_ADADELTA = OptimizerConfig("adadelta", learning_rate=1.0, rho=0.95, eps=1e-6)
OPTIMIZER_STUDY = (
    MNIST_SGD,
    OptimizerConfig("adam", learning_rate=0.001),
    OptimizerConfig("rmsprop", learning_rate=0.001),
    OptimizerConfig("adadelta", learning_rate=1.0, rho=0.95, eps=1e-6),
)


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    runs: tuple[RunConfig, ...]  # backend is a placeholder; the CLI sets it
    label_optimizer: bool = False  # run names carry the optimizer (the optimizer comparison)

    def for_backend(self, backend: str) -> tuple[RunConfig, ...]:
        return tuple(replace(r, backend=backend) for r in self.runs)


def _mnist(model: str, optimizer: OptimizerConfig = MNIST_SGD) -> RunConfig:
    return RunConfig(dataset="mnist", model=model, epochs=25, batch_size=100, optimizer=optimizer)


def _cifar(model: str) -> RunConfig:
    return RunConfig(dataset="cifar10", model=model, epochs=100, batch_size=100, optimizer=CIFAR_ADADELTA)


MNIST_NETWORKS = ("fc-fc", "tt-tt", "tt-fc", "fc-fc-fc", "tt-tt-tt", "tt-tt-fc")
CIFAR_NETWORKS = ("cifar-fc", "cifar-tt", "cifar-4tt-fc-146k", "cifar-4tt-fc-225k")


def _rank_model(rank: int) -> str:
    return "tt-tt" if rank == 4 else f"tt-tt-r{rank}"


def _mode_model(d: int) -> str:
    return "tt-tt" if d == 5 else f"tt-tt-d{d}"


STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study("mnist-table", "MNIST: the thesis's six networks, SGD momentum, 25 epochs",
              tuple(_mnist(m) for m in MNIST_NETWORKS)),
        Study("mnist-improved", "MNIST: the six networks without the last ReLU",
              tuple(_mnist(f"{m}-improved") for m in MNIST_NETWORKS)),
        Study("cifar-table", "CIFAR-10: dense baseline, 5-layer TT and the two 4xTT-FC networks, Adadelta, 100 epochs",
              tuple(_cifar(m) for m in CIFAR_NETWORKS)),
        Study("optimizers", "tt-tt on MNIST with SGD momentum, Adam, RMSprop and Adadelta",
              tuple(_mnist("tt-tt", opt) for opt in OPTIMIZER_STUDY), label_optimizer=True),
        Study("ranks", "tt-tt on MNIST with TT-ranks 1 to 16", tuple(_mnist(_rank_model(r)) for r in RANK_SWEEP)),
        Study("modes", "tt-tt on MNIST with 2 to 6 cores per layer", tuple(_mnist(_mode_model(d)) for d in MODE_SWEEP)),
    )
}

for _study in STUDIES.values():  # every run names a preset of its dataset
    for _run in _study.runs:
        assert get_preset(_run.model).dataset == _run.dataset, (_study.name, _run.model)


def run_name(config: RunConfig, *, label_optimizer: bool = False) -> str:
    """``<model>``, or ``<model>-<optimizer>`` with ``label_optimizer``."""
    return f"{config.model}-{config.optimizer.name}" if label_optimizer else config.model


def _same_run(a: RunConfig, b: RunConfig) -> bool:
    """Whether ``a`` and ``b`` train the same network the same way, backend and run length aside.

    The epoch count is left out because a run resumed with more epochs continues exactly as a longer run would
    (the learning-rate schedule depends on the epoch, not on the total); smoke-run limits and the data folder
    are left out because they never change a run's directory.
    """
    strip = {"backend": "", "epochs": 0, "limit": None, "max_batches": None, "data_dir": None}
    return replace(a, **strip) == replace(b, **strip)


def home_study(study: Study, config: RunConfig) -> tuple[Study, RunConfig]:
    """The study that owns ``config``'s run, and the run as that study plans it.

    A run planned by several studies (``tt-tt`` with SGD is the optimizer study's ``tt-tt-sgd``, the rank sweep's
    rank 4 and the mode sweep's d = 5) is trained once, in the first study of :data:`STUDIES` that plans it.

    >>> ranks = STUDIES["ranks"]
    >>> owner, run = home_study(ranks, ranks.for_backend("torch")[2])
    >>> owner.name, run.model, run.backend
    ('mnist-table', 'tt-tt', 'torch')
    """
    for owner in STUDIES.values():
        for planned in owner.runs:
            if _same_run(planned, config):
                return owner, replace(planned, backend=config.backend)
    return study, config


def run_dir(study: Study, config: RunConfig, results: Path = RESULTS_DIR) -> Path:
    """``<results>/<study>/<run name>-<backend>``, in the study that owns the run (:func:`home_study`).

    >>> run_dir(STUDIES["modes"], STUDIES["modes"].for_backend("jax")[3]).relative_to(RESULTS_DIR).as_posix()
    'mnist-table/tt-tt-jax'
    """
    owner, planned = home_study(study, config)
    return results / owner.name / f"{run_name(planned, label_optimizer=owner.label_optimizer)}-{config.backend}"
