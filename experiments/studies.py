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
from experiments.presets import MODE_SWEEP, RANK_SWEEP, TT, Dense, get_preset
from experiments.recipes import recipe_config
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
    names: tuple[str, ...] = ()  # explicit run names, one per run (else named by run_name)

    def __post_init__(self) -> None:
        if self.names and len(self.names) != len(self.runs):
            raise ValueError(f"{self.name}: {len(self.names)} names for {len(self.runs)} runs")

    def for_backend(self, backend: str) -> tuple[RunConfig, ...]:
        return tuple(replace(r, backend=backend) for r in self.runs)

    def run_name(self, config: RunConfig) -> str:
        """The name of ``config``'s run in this study: its explicit name, else :func:`run_name`."""
        for planned, name in zip(self.runs, self.names):
            if _same_run(planned, config):
                return name
        return run_name(config, label_optimizer=self.label_optimizer)


def _recipe_runs(recipe: str, dataset: str, variants: dict[str, dict], models: tuple[str, ...],
                 seeds: tuple[int, ...] = (0,)) -> tuple[tuple[RunConfig, ...], tuple[str, ...]]:
    """Runs of ``recipe`` for each model, variant (name suffix -> field overrides) and seed, with their names.

    A variant's overrides replace fields of the recipe's :class:`RunConfig`; an ``"optimizer"`` entry is a dict
    of :class:`OptimizerConfig` fields to replace. Seeds other than 0 add ``-s<seed>`` to the name.
    """
    runs, names = [], []
    for model in models:
        for suffix, overrides in variants.items():
            for seed in seeds:
                config = recipe_config(recipe, dataset, model, seed=seed)
                fields = dict(overrides)
                if "optimizer" in fields:
                    fields["optimizer"] = replace(config.optimizer, **fields["optimizer"])
                runs.append(replace(config, **fields))
                names.append(f"{model}{suffix}" + (f"-s{seed}" if seed else ""))
    return tuple(runs), tuple(names)


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


# The thesis's recipe on every network: as its code (momentum 0.8, all training images, best test epoch), as its
# text (momentum 0.9), and with our validation holdout (the epoch chosen on validation: our protocol).
THESIS_MNIST_VARIANTS = {"": {}, "-m0.9": {"optimizer": {"momentum": 0.9}}, "-val": {"val_size": 5000}}
THESIS_CIFAR_VARIANTS = {"": {}, "-val": {"val_size": 5000}}
_THESIS_MNIST = _recipe_runs("thesis", "mnist", THESIS_MNIST_VARIANTS, MNIST_NETWORKS)
_THESIS_CIFAR = _recipe_runs("thesis", "cifar10", THESIS_CIFAR_VARIANTS, CIFAR_NETWORKS)

# One factor at a time from our recipe to the thesis's (its "-thesis" run changes them all).
ABLATION_NETWORKS = ("tt-tt-tt", "tt-tt-fc", "fc-fc-fc")
ABLATION_FACTORS = {
    "-ours": {},
    "-tt-init": {"tt_init": "thesis"},
    "-dense-init": {"dense_init": "torch"},
    "-momentum": {"optimizer": {"momentum": 0.8}},
    "-raw-pixels": {"normalize": False},
    "-no-holdout": {"val_size": 0},
}
# The mechanism: under batch norm the thesis's small cores act as a 5-77x larger SGD learning rate per core
# (experiments/README.md), so our init with a 50x learning rate should train as the thesis's init does.
MECHANISM_NETWORK = "tt-tt-tt"  # every layer TT: the learning rate acts on TT cores only
MECHANISM = {"-lr0.05": {"optimizer": {"learning_rate": 0.05}}}
ABLATION_SEEDS = (0, 1, 2)  # for the rows that decide: ours, the TT init and the whole thesis recipe
DECISIVE = ("-ours", "-tt-init")


def _ablation() -> tuple[tuple[RunConfig, ...], tuple[str, ...]]:
    runs, names = [], []
    for model in ABLATION_NETWORKS:
        has_tt, has_dense = (any(isinstance(layer, kind) for layer in get_preset(model).layers) for kind in (TT, Dense))
        for suffix, overrides in ABLATION_FACTORS.items():
            if (suffix == "-tt-init" and not has_tt) or (suffix == "-dense-init" and not has_dense):
                continue  # the factor does not apply to this network
            seeds = ABLATION_SEEDS if suffix in DECISIVE else (0,)
            more = _recipe_runs("ours", "mnist", {suffix: overrides}, (model,), seeds)
            runs += more[0]
            names += more[1]
        if model == MECHANISM_NETWORK:
            more = _recipe_runs("ours", "mnist", MECHANISM, (model,))
            runs += more[0]
            names += more[1]
        more = _recipe_runs("thesis", "mnist", {"-thesis": {}}, (model,), ABLATION_SEEDS)
        runs += more[0]
        names += more[1]
    return tuple(runs), tuple(names)


# CIFAR-10's ablation on cifar-tt, shortened to 20 epochs: the optimizer factor is Adadelta's rho (0.95 -> 0.9).
CIFAR_ABLATION_EPOCHS = 20
CIFAR_ABLATION_FACTORS = {
    "-ours": {},
    "-tt-init": {"tt_init": "thesis"},
    "-rho": {"optimizer": {"rho": 0.9}},
    "-raw-pixels": {"normalize": False},
    "-no-holdout": {"val_size": 0},
}


def _cifar_ablation() -> tuple[tuple[RunConfig, ...], tuple[str, ...]]:
    ours = _recipe_runs("ours", "cifar10", CIFAR_ABLATION_FACTORS, ("cifar-tt",))
    thesis = _recipe_runs("thesis", "cifar10", {"-thesis": {}}, ("cifar-tt",))
    runs = tuple(replace(c, epochs=CIFAR_ABLATION_EPOCHS) for c in (*ours[0], *thesis[0]))
    return runs, (*ours[1], *thesis[1])


# The search for the improved recipe, on tt-tt-tt-improved (30,574 parameters): each candidate changes the
# optimizer, its learning rate, label smoothing or the TT init; the winner is experiments.recipes.IMPROVED.
_ADAM_COSINE = {"name": "adam", "momentum": 0.9, "cosine_epochs": 25}  # every field the candidates set, so that
_SMALL_INIT = {"tt_init": "thesis", "dense_init": "torch"}  # they stay the same runs when IMPROVED changes
IMPROVED_SEARCH = {
    "-adam1e-3": {"optimizer": {**_ADAM_COSINE, "learning_rate": 0.001}, "label_smoothing": 0.1, **_SMALL_INIT},
    "-adam3e-3": {"optimizer": {**_ADAM_COSINE, "learning_rate": 0.003}, "label_smoothing": 0.1, **_SMALL_INIT},
    "-adam3e-3-no-ls": {"optimizer": {**_ADAM_COSINE, "learning_rate": 0.003}, "label_smoothing": 0.0, **_SMALL_INIT},
    "-adam3e-3-lecun": {"optimizer": {**_ADAM_COSINE, "learning_rate": 0.003}, "label_smoothing": 0.1,
                        "tt_init": "lecun", "dense_init": "lecun"},
    "-sgd5e-2": {"optimizer": {**_ADAM_COSINE, "name": "sgd", "learning_rate": 0.05}, "label_smoothing": 0.1,
                 **_SMALL_INIT},
}
IMPROVED_MNIST = tuple(f"{m}-improved" for m in MNIST_NETWORKS)
IMPROVED_CIFAR = tuple(f"{m}-improved" for m in CIFAR_NETWORKS)
# The three 262,144-wide networks train at 2.5-26 min per epoch on a 2-core CPU: their improved runs get a
# shorter cosine schedule, the same recipe otherwise (the tables name the epoch count).
IMPROVED_WIDE_EPOCHS = 10
IMPROVED_WIDE = ("fc-fc-improved", "tt-tt-improved", "tt-fc-improved")


def _improved_mnist() -> tuple[tuple[RunConfig, ...], tuple[str, ...]]:
    runs, names = _recipe_runs("improved", "mnist", {"": {}}, IMPROVED_MNIST)
    runs = tuple(replace(c, epochs=IMPROVED_WIDE_EPOCHS,
                         optimizer=replace(c.optimizer, cosine_epochs=IMPROVED_WIDE_EPOCHS))
                 if c.model in IMPROVED_WIDE else c for c in runs)
    return runs, names


def _study(name: str, description: str, runs_and_names: tuple[tuple[RunConfig, ...], tuple[str, ...]]) -> Study:
    runs, names = runs_and_names
    return Study(name, description, runs, names=names)


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
        _study("thesis-mnist", "MNIST: the six networks with the thesis's recipe (its code's momentum 0.8, its "
               "text's 0.9, and with our validation holdout)", _THESIS_MNIST),
        _study("thesis-cifar", "CIFAR-10: the four networks with the thesis's recipe (and with our validation "
               "holdout)", _THESIS_CIFAR),
        _study("ablation", "MNIST: one factor at a time from our recipe to the thesis's", _ablation()),
        _study("improved-search", "MNIST tt-tt-tt-improved: candidates for the improved recipe",
               _recipe_runs("improved", "mnist", IMPROVED_SEARCH, ("tt-tt-tt-improved",))),
        _study("improved-mnist", "MNIST: the six networks (without the last ReLU) with the improved recipe",
               _improved_mnist()),
        _study("improved-cifar", "CIFAR-10: the four networks (without the last ReLU) with the improved recipe",
               _recipe_runs("improved", "cifar10", {"": {}}, IMPROVED_CIFAR)),
        _study("ablation-cifar", f"CIFAR-10 cifar-tt, {CIFAR_ABLATION_EPOCHS} epochs: one factor at a time from our "
               "recipe to the thesis's", _cifar_ablation()),
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
    are left out because they never change a run's directory, and so is the device count (data parallel: the same
    run up to rounding).
    """
    strip = {"backend": "", "epochs": 0, "limit": None, "max_batches": None, "data_dir": None, "eval_batch_size": 0,
             "devices": 1}
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
    return results / owner.name / f"{owner.run_name(planned)}-{config.backend}"
