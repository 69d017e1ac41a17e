"""Config of ``hydra/sweeper=orch_optuna``, registered in Hydra's ConfigStore.

Hydra imports every module under ``hydra_plugins`` when any app starts: Optuna is imported only
when a sweep runs. (No ``from __future__ import annotations`` here: Hydra executes plugin modules
outside ``sys.modules``, where dataclasses cannot resolve string annotations.)
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    """Optuna sampler.

    Attributes:
        name: ``tpe``, ``random``, ``nsga2`` (multi-objective) or ``grid`` (Optuna's
            GridSampler: every point of the ``choice``/``range`` params once, in an order
            shuffled by ``seed``; ``n_trials`` is capped at the grid's size; an ``interval``
            param is refused, having no grid points).
        seed: Seed of the sampler (None: random; grid: 0).
        n_startup_trials: Random trials before TPE models the space.
        population_size: NSGA-II's population.
    """

    name: str = "tpe"
    seed: int | None = None
    n_startup_trials: int = 10
    population_size: int = 20


@dataclass
class PrunerConf:
    """Optuna pruner, applied by the training job itself at each evaluation.

    Attributes:
        name: ``none``, ``median``, ``sha`` / ``asha`` (successive halving, asynchronous) or
            ``hyperband``.
        n_startup_trials: Median: trials that finish before any is pruned.
        n_warmup_steps: Median: steps before a trial may be pruned.
        interval_steps: Median: check every this many reports.
        min_resource: SHA / Hyperband: steps of the first rung ("auto" for SHA).
        max_resource: Hyperband: steps of a full trial ("auto": the longest seen).
        reduction_factor: SHA / Hyperband: 1 in this many trials is promoted per rung.
    """

    name: str = "none"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    min_resource: Any = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class OrchOptunaSweeperConf:
    """The sweep. Jobs report and prune through ``orchestrator.trial``; the sweeper tells Optuna
    each result as a job ends, so it stays attached (``hydra.launcher.detach=true`` is refused).

    Attributes:
        study_name: Optuna study (None: the app's job name). A sweep started again with the
            same name and storage resumes the study.
        storage: ``sqlite:///ABS.db``, a SQLAlchemy URL, ``journal:PATH`` (shared file) or
            ``grpc://HOST:PORT``; None: ``journal:<sweep dir>/optuna.journal``.
        direction: ``maximize`` / ``minimize``, or one per objective.
        objectives: Names of the metrics the job leaves on its trial (``val_accuracy``,
            ``latency_ms``, ``n_params``, ...); empty: the task function's return value.
        report: The metric taken for pruning when the job reports a mapping of metrics
            (``trial.report(metrics, step)``, see ``orchestrator/trial.py``).
        n_trials: Trials in the study in all (a resumed study counts its earlier ones).
        n_jobs: Trials running at once (slots).
        max_failure_rate: Share of the sweep's trials allowed to fail; the sweep stops as
            soon as more have failed.
        sampler: The sampler.
        pruner: The pruner.
        params: Search space in Hydra's override grammar: ``choice(a,b)``, ``range(1,5)``,
            ``interval(0.0,1.0)``, ``tag(log, interval(1e-4,1e-1))``; a plain value is fixed.
    """

    _target_: str = "hydra_plugins.orch_optuna_sweeper.orch_optuna_sweeper.OrchOptunaSweeper"
    study_name: str | None = None
    storage: str | None = None
    direction: Any = "maximize"
    objectives: list[str] = field(default_factory=list)
    report: str = "val_accuracy"
    n_trials: int = 20
    n_jobs: int = 2
    max_failure_rate: float = 0.0
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="orch_optuna",
    node=OrchOptunaSweeperConf,
    provider="orch_optuna_sweeper",
)
