"""The asynchronous sweep: keep ``n_jobs`` trials running, start the next the moment one ends.

hydra-optuna-sweeper asks Optuna for ``n_jobs`` trials, launches them as one batch and waits
for the slowest before asking again, so a slot idles while its batch's longest trial runs. Here
each slot refills on its own: the launcher's :meth:`submit` / :meth:`wait_any` (the ``orch``
launcher has them) return as soon as any job ends. Pruning happens inside the jobs, through the
public trial API (``orchestrator/trial.py``: ``trial.report``, ``trial.should_prune``,
``trial.params``); the sweeper only tells Optuna each trial's outcome. It must therefore stay
attached to its jobs: ``hydra.launcher.detach=true`` is refused.

A restarted sweep (same ``study_name`` and ``storage``) resumes: finished trials count towards
``n_trials``, and a trial left RUNNING by a sweep that died is failed and its parameters queued
again, so the study ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.orch_optuna_sweeper._space import SearchSpace, parse_space
from orchestrator.exceptions import OrchestratorError
from orchestrator.trial import (
    ENV_PARAMS,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL_ID,
    PRUNED,
    SweepConfigError,
    make_pruner,
    open_storage,
)

__all__ = ["AsyncSweep", "SweepFailedError", "make_sampler"]

log = logging.getLogger("hydra_plugins.orch_optuna_sweeper")
optuna.logging.set_verbosity(optuna.logging.WARNING)


class SweepFailedError(OrchestratorError):
    """More trials failed than ``max_failure_rate`` allows; chained to the last failure."""


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without its stop at the last grid point.

    Optuna's ``GridSampler`` calls ``Study.stop`` once every point has run, which raises a
    RuntimeError outside ``Study.optimize`` (the sweeper asks and tells); the sweep stops by its
    own count instead (``n_trials`` capped at the grid's size).
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def make_sampler(
    spec: Mapping[str, Any], n_objectives: int, space: SearchSpace | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler named by ``hydra.sweeper.sampler``.

    Args:
        spec: ``name`` (``tpe``, ``random``, ``nsga2`` or ``grid``) and its settings.
        n_objectives: Objectives of the study.
        space: The search space (``grid`` enumerates it).

    Raises:
        SweepConfigError: an unknown name; ``grid`` over an interval (names the parameter).
    """
    name, seed = spec.get("name", "tpe"), spec.get("seed")
    if name == "tpe":
        # constant_liar: trials still running count as bad guesses, so parallel slots do not
        # all sample the same promising corner (matters for an asynchronous sweep).
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=int(spec.get("n_startup_trials", 10)), constant_liar=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=int(spec.get("population_size", 20))
        )
    if name == "grid":
        # Every point of the choice/range parameters once, in an order shuffled by the seed.
        return GridSampler((space or SearchSpace()).grid(), seed=seed)
    raise SweepConfigError(
        "hydra.sweeper.sampler.name", name, "expected tpe, random, nsga2 or grid", "tpe"
    )


def _directions(direction: Any, objectives: Sequence[str]) -> list[str]:
    dirs = [direction] if isinstance(direction, str) else list(direction)
    if objectives and len(dirs) == 1 and len(objectives) > 1:
        raise SweepConfigError(
            "hydra.sweeper.direction",
            direction,
            f"give one direction per objective ({len(objectives)}: {list(objectives)})",
            "[maximize,minimize]",
        )
    if objectives and len(dirs) != len(objectives):
        raise SweepConfigError(
            "hydra.sweeper.direction",
            direction,
            f"{len(dirs)} directions for {len(objectives)} objectives",
            "[maximize,minimize]",
        )
    for d in dirs:
        if d not in ("maximize", "minimize"):
            raise SweepConfigError("hydra.sweeper.direction", d, "maximize or minimize", "maximize")
    return dirs


def _absolute_storage(spec: str) -> str:
    # The jobs run in other folders: a relative Journal or SQLite path must not move with them.
    if spec.startswith("journal:"):
        return "journal:" + str(Path(spec.removeprefix("journal:")).expanduser().absolute())
    if spec.endswith((".journal", ".log")) and "://" not in spec:
        return "journal:" + str(Path(spec).expanduser().absolute())
    if spec.startswith("sqlite:///") and not spec.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(spec.removeprefix("sqlite:///")).absolute())
    return spec


class AsyncSweep:
    """One run of the sweeper (see the module docstring)."""

    def __init__(
        self, params: Mapping[str, Any], config: DictConfig, launcher: Any, sweeper: Any
    ) -> None:
        self.p = dict(params)
        self.config = config
        self.launcher = launcher
        self.sweeper = sweeper
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.counts = {"n_complete": 0, "n_pruned": 0, "n_failed": 0}
        self.planned = 0
        """Trials this sweep runs (the failure budget is a share of them)."""
        self.last_error: BaseException | None = None

    # -- setup ----------------------------------------------------------------------------------

    def _study(
        self, n_objectives: int, directions: list[str], space: SearchSpace
    ) -> tuple[optuna.Study, str]:
        spec = _absolute_storage(
            self.p.get("storage") or f"journal:{self.sweep_dir / 'optuna.journal'}"
        )
        name = self.p.get("study_name") or str(self.config.hydra.job.name)
        pruner_spec = dict(self.p.get("pruner") or {})
        if n_objectives > 1 and pruner_spec.get("name", "none") != "none":
            raise SweepConfigError(
                "hydra.sweeper.pruner.name",
                pruner_spec["name"],
                "Optuna cannot prune a multi-objective study",
                "none",
            )
        sampler = make_sampler(self.p.get("sampler") or {}, n_objectives, space)
        study = optuna.create_study(
            storage=open_storage(spec),
            study_name=name,
            sampler=sampler,
            pruner=make_pruner(pruner_spec),
            directions=cast(list[Any], directions),
            load_if_exists=True,
        )
        have = [d.name.lower() for d in study.directions]
        if have != directions:
            raise SweepConfigError(
                "hydra.sweeper.direction",
                directions,
                f"study {name!r} in {spec} was made with directions {have}; use another "
                "study_name for a new objective",
                f"hydra.sweeper.study_name={name}-2",
            )
        study.set_user_attr("orch.pruner", pruner_spec)
        study.set_user_attr("orch.report", self.p.get("report") or "val_accuracy")
        study.set_user_attr("orch.objectives", list(self.p.get("objectives") or []))
        return study, spec

    def _requeue_stale(self, study: optuna.Study) -> None:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            log.warning("trial %d was left running by an earlier sweep: run again", t.number)
            study.enqueue_trial(t.params)
            study.tell(t.number, state=TrialState.FAIL)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, arguments: list[str]) -> dict[str, Any]:
        if OmegaConf.select(self.config, "hydra.launcher.detach", default=False):
            # Supporting it is not easy: each trial's result must be told to Optuna as its job
            # ends, and the next trial asked (from those results) for the freed slot; a sweep
            # that returned after submitting could do neither.
            raise SweepConfigError(
                "hydra.launcher.detach",
                True,
                "the asynchronous sweeper (hydra/sweeper=orch_optuna) must stay attached to "
                "tell Optuna each trial's result as its job ends and start the next trial",
                "hydra.launcher.detach=false",
            )
        objectives = list(self.p.get("objectives") or [])
        directions = _directions(self.p.get("direction", "maximize"), objectives)
        space = parse_space(self.p.get("params") or {}, arguments)
        if not space.distributions:
            raise SweepConfigError(
                "hydra.sweeper.params",
                dict(self.p.get("params") or {}),
                "nothing to search: give at least one choice/range/interval",
                "hydra.sweeper.params.optimizer.lr='tag(log, interval(1e-3, 1.0))'",
            )
        study, storage = self._study(len(directions), directions, space)
        self._requeue_stale(study)
        done_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        earlier = len(study.get_trials(deepcopy=False, states=done_states))
        earlier_failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        n_trials, n_jobs = int(self.p.get("n_trials", 20)), int(self.p.get("n_jobs", 2))
        if isinstance(study.sampler, GridSampler):
            points = math.prod(len(v) for v in space.grid().values())
            if n_trials > points:
                log.info("grid of %d points: n_trials=%d capped at %d", points, n_trials, points)
                n_trials = points
        to_start = max(0, n_trials - earlier)
        self.planned = to_start
        log.info(
            "study %s (%s): %d trials done before, %d to run, %d at a time",
            study.study_name,
            storage,
            earlier,
            to_start,
            n_jobs,
        )
        orch = self.launcher.sweep() if hasattr(self.launcher, "sweep") else None
        if orch is not None:
            orch.storage = storage  # the manifest names the study: `orch sweep status` reads it
            parent = orch.open_parent_run(
                study.study_name, study.user_attrs.get("orch.parent_run_id")
            )
            if parent is not None:
                study.set_user_attr("orch.parent_run_id", parent.run_id)
        base_env = {ENV_STORAGE: storage, ENV_STUDY: study.study_name}
        t0 = time.monotonic()
        busy = 0.0
        if all(hasattr(self.launcher, a) for a in ("prepare", "submit_prepared", "wait_any")):
            busy = self._run_async(study, space, base_env, to_start, n_jobs, earlier_failed)
        else:
            busy = self._run_one_by_one(study, space, base_env, to_start)
        wall = time.monotonic() - t0
        summary = self._summary(study, wall, busy, n_jobs)
        if orch is not None:
            best = summary.get("best_value")
            extra = {k: float(v) for k, v in self.counts.items()}
            extra |= {"wall_s": wall, "slot_busy_s": busy, "idle_slot_s": summary["idle_slot_s"]}
            if isinstance(best, int | float):
                extra["best_value"] = float(best)
            orch.summarise(extra)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(summary), self.sweep_dir / "optimization_results.yaml")
        return summary

    def _trial_env(self, base: Mapping[str, str], trial: optuna.Trial) -> dict[str, str]:
        return {
            **base,
            ENV_TRIAL_ID: str(trial._trial_id),
            ENV_PARAMS: json.dumps(trial.params),
            "ORCH_TRIAL": str(trial.number),
        }

    def _run_async(
        self,
        study: optuna.Study,
        space: SearchSpace,
        base_env: Mapping[str, str],
        to_start: int,
        n_jobs: int,
        earlier_failed: int,
    ) -> float:
        running: dict[int, tuple[Any, optuna.Trial, float]] = {}
        busy = 0.0
        # One trial is asked and composed ahead (about 0.1-0.3 s of Hydra composition) while the
        # others run, so a freed slot is refilled with a submission only.
        ready: tuple[optuna.Trial, Any] | None = None

        def prepare() -> tuple[optuna.Trial, Any]:
            trial = study.ask(space.distributions)
            env = self._trial_env(base_env, trial)
            return trial, self.launcher.prepare(space.overrides(trial.params), trial.number, env)

        while to_start > 0 or running or ready is not None:
            while len(running) < n_jobs and (ready is not None or to_start > 0):
                if ready is None:
                    ready = prepare()
                    to_start -= 1
                trial, prepared = ready
                ready = None
                job = self.launcher.submit_prepared(prepared)
                running[job.job_id] = (job, trial, time.monotonic())
            if ready is None and to_start > 0:
                ready = prepare()
                to_start -= 1
            for job, ret in self.launcher.wait_any([r[0] for r in running.values()]):
                _, trial, started = running.pop(job.job_id)
                busy += time.monotonic() - started
                self._tell(study, trial, ret)
            try:
                self._check_failures()
            except SweepFailedError:
                self.launcher.sweep().cancel([r[0] for r in running.values()])
                unstarted = [ready[0]] if ready is not None else []
                for trial in [r[1] for r in running.values()] + unstarted:
                    study.tell(trial, state=TrialState.FAIL)
                raise
        return busy

    def _run_one_by_one(
        self,
        study: optuna.Study,
        space: SearchSpace,
        base_env: Mapping[str, str],
        to_start: int,
    ) -> float:
        # A launcher without submit/wait_any: one trial per launch, its link to the study passed
        # in this process's environment (which in-process and local launchers pass on).
        log.warning("launcher %s is not asynchronous: trials run one at a time", self.launcher)
        busy = 0.0
        for _ in range(to_start):
            trial = study.ask(space.distributions)
            saved = dict(os.environ)
            os.environ.update(self._trial_env(base_env, trial))
            started = time.monotonic()
            try:
                (ret,) = self.launcher.launch([space.overrides(trial.params)], trial.number)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            busy += time.monotonic() - started
            self._tell(study, trial, ret)
            self._check_failures()
        return busy

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        attrs = study._storage.get_trial(trial._trial_id).user_attrs
        # Pruned: the job's trial.should_prune() said so (however the job then ended: returned,
        # or raised to stop), or the job raised optuna.TrialPruned of its own accord.
        raised = ret._return_value
        if attrs.get("orch.status") == PRUNED or isinstance(raised, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            self.counts["n_pruned"] += 1
            log.info("trial %d pruned", trial.number)
            return
        if ret.status is not JobStatus.COMPLETED:
            self.last_error = ret._return_value
            log.warning("trial %d failed: %s", trial.number, ret._return_value)
            study.tell(trial, state=TrialState.FAIL)
            self.counts["n_failed"] += 1
            return
        values = self._values(ret, attrs)
        if values is None:
            study.tell(trial, state=TrialState.FAIL)
            self.counts["n_failed"] += 1
            return
        study.tell(trial, values)
        self.counts["n_complete"] += 1
        log.info("trial %d: %s %s", trial.number, values, trial.params)

    def _values(self, ret: JobReturn, attrs: Mapping[str, Any]) -> list[float] | None:
        objectives = list(self.p.get("objectives") or [])
        value = ret.return_value
        if objectives:
            metrics = dict(attrs.get("orch.metrics") or {})
            if isinstance(value, Mapping):
                metrics |= dict(value)
            missing = [o for o in objectives if o not in metrics]
            if missing:
                self.last_error = SweepConfigError(
                    "hydra.sweeper.objectives",
                    objectives,
                    f"the job reported no {missing} (it reported {sorted(metrics)})",
                    "[val_accuracy]",
                )
                log.warning("%s", self.last_error)
                return None
            values = [float(metrics[o]) for o in objectives]
        elif isinstance(value, int | float):
            values = [float(value)]
        elif isinstance(value, Sequence) and not isinstance(value, str):
            values = [float(v) for v in value]
        else:
            self.last_error = SweepConfigError(
                "hydra.sweeper.objectives",
                [],
                f"the task returned {value!r}: return a number, or name the objectives",
                "[val_accuracy]",
            )
            return None
        if not all(math.isfinite(v) for v in values):
            return None
        return values

    def _check_failures(self) -> None:
        """Stop once the failures exceed ``max_failure_rate`` of the trials this sweep runs: from
        then on the sweep's rate cannot be met. Judging failed over *finished* trials instead
        would depend on which trials happen to end first (one early failure is a rate of 1)."""
        finished = sum(self.counts.values())
        failed = self.counts["n_failed"]
        rate = float(self.p.get("max_failure_rate", 0.0))
        if failed and failed > rate * max(self.planned, finished):
            raise SweepFailedError(
                f"{failed} trials failed ({finished} finished of {self.planned}), above "
                f"max_failure_rate={rate:g} of the sweep's trials (raise "
                f"hydra.sweeper.max_failure_rate to tolerate more); last: {self.last_error}"
            ) from self.last_error

    # -- results --------------------------------------------------------------------------------

    def _summary(
        self, study: optuna.Study, wall: float, busy: float, n_jobs: int
    ) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        by_state = {s.name.lower(): sum(t.state is s for t in trials) for s in TrialState}
        out: dict[str, Any] = {
            "name": "orch_optuna",
            "study": study.study_name,
            "n_trials": len(trials),
            "states": {k: v for k, v in by_state.items() if v},
            "this_sweep": dict(self.counts),
            "wall_s": wall,
            "slot_busy_s": busy,
            "idle_slot_s": max(0.0, n_jobs * wall - busy),
            "n_jobs": n_jobs,
        }
        complete = [t for t in trials if t.state is TrialState.COMPLETE]
        if not complete:
            return out
        if len(study.directions) == 1:
            best = study.best_trial
            out |= {"best_params": dict(best.params), "best_value": best.value}
        else:
            out["pareto_front"] = [
                {"number": t.number, "params": dict(t.params), "values": list(t.values)}
                for t in study.best_trials
            ]
        return out
