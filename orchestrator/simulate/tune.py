"""``orch tune``: a scheduling policy searched on a site's own trace.

The search (Optuna, TPE or CMA-ES, in this process) replays *training* workloads for each point
of the policy space (:mod:`orchestrator.scheduling.tuned`) and keeps the point with the smallest
mean bounded slowdown. The evaluation windows are RLScheduler's protocol windows
(:mod:`orchestrator.simulate.protocol`); the training data never contains one of their jobs:

* ``bootstrap`` (the default): a moving-block bootstrap of the trace's jobs *outside* every
  evaluation window. Each training window of ``length`` jobs is stitched from blocks of ``block``
  consecutive jobs (so bursts and their run-time mix stay together), each block drawn from a
  stretch of the trace no evaluation window touches, its arrivals shifted to follow the previous
  block after an inter-arrival gap drawn from those stretches. On Lublin-256 under the
  ``schedgym`` variant the stretches are jobs 0-1,980 and 6,252-7,084 (2,814 of 10,000 jobs).

The result is a :class:`~orchestrator.scheduling.tuned.TunedPolicy` that records where it came
from and its scores on both sets, with the starting point's beside them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from orchestrator.resources.cluster import Cluster
from orchestrator.scheduling.policies import Backfill
from orchestrator.scheduling.tuned import Family, TunedPolicy
from orchestrator.simulate.protocol import (
    Variant,
    protocol_workloads,
    replay_windows,
    schedgym_jobs,
)
from orchestrator.simulate.swf import SwfTrace
from orchestrator.simulate.workload import SkippedJob, WorkloadJob, workload_from_swf

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SAMPLERS",
    "STARTS",
    "TuneProgress",
    "TuneSpec",
    "bootstrap_windows",
    "outside_segments",
    "starting_weights",
    "tune",
]

Sampler = Literal["tpe", "cmaes"]
SAMPLERS: tuple[Sampler, ...] = ("tpe", "cmaes")
SEARCHED_BACKFILLS: tuple[Backfill, ...] = (Backfill.STRICT, Backfill.EASY, Backfill.CONSERVATIVE)

# Starting points, as points of the searched box (scores are scale-free: F1 is scaled by 1/1000).
STARTS: dict[Family, dict[str, dict[str, Any]]] = {
    "score": {
        "sjf": {"runtime": 1.0},
        "fcfs": {"submit": 1.0},
        "f1": {"runtime_size": 0.001, "submit": 0.87},
    },
    # Slurm's default PriorityWeight* (age 1000, fair share 10000, job size 1000) / 10000.
    "multifactor": {
        "multifactor": {"age": 0.1, "fairshare": 1.0, "job_size": 0.1, "favor_small": False},
    },
}


@dataclass(frozen=True)
class TuneSpec:
    """What to search and on what.

    Attributes:
        family: ``score`` or ``multifactor``.
        backfill: A backfilling mode, or ``None`` to search it too (strict, easy, conservative).
        start: The starting point, tried first (a key of :data:`STARTS` for the family).
        sampler: ``tpe`` or ``cmaes`` (CMA-ES searches the numeric weights; a searched
            backfilling mode and ``favor_small`` are then drawn at random).
        trials: Stop after this many trials (``None``: only the time limit).
        timeout_s: Stop starting trials after this many seconds (``None``: only ``trials``).
        seed: Seeds the sampler and the bootstrap.
        training_windows: Bootstrap windows to train on.
        length: Jobs per training window (the protocol's 1,024 by default).
        block: Consecutive jobs per bootstrap block.
        variant: The protocol variant for both sets (``schedgym`` reproduces the published table).
        prune: Stop a trial whose running mean after 3 or more windows is worse than the median
            of the completed trials' at that window (once 10 trials have completed).
    """

    family: Family = "score"
    backfill: Backfill | None = Backfill.STRICT
    start: str = "sjf"
    sampler: Sampler = "tpe"
    trials: int | None = None
    timeout_s: float | None = 600.0
    seed: int = 0
    training_windows: int = 12
    length: int = 1024
    block: int = 128
    variant: Variant = "schedgym"
    prune: bool = False

    def __post_init__(self) -> None:
        if self.family not in STARTS:
            raise ValueError(f"family {self.family!r}: use one of {', '.join(STARTS)}")
        if self.start not in STARTS[self.family]:
            raise ValueError(
                f"start {self.start!r} is not a starting point of the {self.family} family "
                f"(use one of {', '.join(STARTS[self.family])})"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if self.trials is None and self.timeout_s is None:
            raise ValueError("give a trial count or a time limit (or both)")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"trials must be >= 1, got {self.trials}")
        if self.training_windows < 1 or self.length < 1 or not 1 <= self.block <= self.length:
            raise ValueError(
                "training_windows and length must be >= 1 and block in [1, length], got "
                f"{self.training_windows}, {self.length}, {self.block}"
            )


@dataclass(frozen=True)
class TuneProgress:
    """What a progress callback sees after each trial."""

    trial: int
    value: float
    best: float
    elapsed_s: float


def outside_segments(n_jobs: int, windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The stretches ``(start, length)`` of ``n_jobs`` jobs that no window covers."""
    covered = np.zeros(n_jobs, dtype=bool)
    for start, length in windows:
        covered[start : start + length] = True
    segments: list[tuple[int, int]] = []
    i = 0
    while i < n_jobs:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < n_jobs and not covered[j]:
            j += 1
        segments.append((i, j - i))
        i = j
    return segments


def bootstrap_windows(
    pools: Sequence[Sequence[WorkloadJob]],
    *,
    count: int,
    length: int,
    block: int,
    seed: int,
) -> list[list[WorkloadJob]]:
    """``count`` workloads of ``length`` jobs, each stitched from blocks of ``block``
    consecutive jobs of the ``pools`` (see the module's docstring). Pools shorter than
    ``block`` are not drawn from.

    Raises:
        ValueError: when no pool has ``block`` jobs.
    """
    usable = [p for p in pools if len(p) >= block]
    if not usable:
        raise ValueError(
            f"no stretch of the trace outside the evaluation windows has {block} jobs: "
            "use a smaller block"
        )
    rng = np.random.default_rng(seed)
    weights = np.array([len(p) - block + 1 for p in usable], dtype=float)
    gaps = np.concatenate(
        [np.diff([j.request.submit_time for j in p]) for p in pools if len(p) > 1] or [np.zeros(1)]
    )
    windows = []
    for _ in range(count):
        jobs: list[WorkloadJob] = []
        clock = 0.0
        while len(jobs) < length:
            pool = usable[int(rng.choice(len(usable), p=weights / weights.sum()))]
            first = int(rng.integers(0, len(pool) - block + 1))
            chunk = pool[first : first + block][: length - len(jobs)]
            origin = chunk[0].request.submit_time
            for job in chunk:
                request = dataclasses.replace(
                    job.request, submit_time=clock + (job.request.submit_time - origin)
                )
                jobs.append(WorkloadJob(len(jobs) + 1, request, job.run_time))
            clock = jobs[-1].request.submit_time + float(rng.choice(gaps))
        windows.append(jobs)
    return windows


def starting_weights(family: Family, start: str) -> dict[str, Any]:
    """The starting point's weights (every weight of the searched box set)."""
    base = _search_defaults(family)
    base.update(STARTS[family][start])
    return base


def _search_defaults(family: Family) -> dict[str, Any]:
    if family == "score":
        return {
            "runtime": 0.0,
            "size": 0.0,
            "runtime_size": 0.0,
            "submit": 0.0,
            "wait": 0.0,
            "slowdown": 0.0,
        }
    return {
        "age": 0.0,
        "fairshare": 0.0,
        "job_size": 0.0,
        "runtime": 0.0,
        "favor_small": False,
        "max_age_s": 7 * 24 * 3600.0,
    }


def _suggest(trial: optuna.Trial, family: Family) -> dict[str, Any]:
    """The searched box (documented in docs/simulation.md, "Tuned policies")."""
    if family == "score":
        return {
            "runtime": trial.suggest_float("runtime", 0.0, 1.0),
            "size": trial.suggest_float("size", -1.0, 1.0),
            "runtime_size": trial.suggest_float("runtime_size", 0.0, 0.1),
            "submit": trial.suggest_float("submit", 0.0, 1.0),
            "wait": trial.suggest_float("wait", -1.0, 0.0),
            "slowdown": trial.suggest_float("slowdown", -1.0, 0.0),
        }
    return {
        "age": trial.suggest_float("age", 0.0, 1.0),
        "fairshare": trial.suggest_float("fairshare", 0.0, 1.0),
        "job_size": trial.suggest_float("job_size", 0.0, 1.0),
        "runtime": trial.suggest_float("runtime", 0.0, 1.0),
        "favor_small": trial.suggest_categorical("favor_small", [False, True]),
        "max_age_s": trial.suggest_float("max_age_s", 3600.0, 30 * 24 * 3600.0, log=True),
    }


def _make_sampler(spec: TuneSpec) -> optuna.samplers.BaseSampler:
    import optuna

    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=spec.seed,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=spec.seed),
        )
    # Multivariate: the weights act together (only their ratios order the queue).
    return optuna.samplers.TPESampler(seed=spec.seed, multivariate=True)


PRUNE_AFTER_TRIALS = 10
PRUNE_FROM_WINDOW = 3


def _behind_the_median(trial: optuna.Trial, step: int, running: float) -> bool:
    """Whether a trial's running mean after window ``step`` (0-based) is worse than the median
    of the completed trials' running means there. (Optuna's ``MedianPruner`` compares the best
    value over the steps so far, right for learning curves, not for a running mean.)"""
    import optuna

    if step + 1 < PRUNE_FROM_WINDOW:
        return False
    completed = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < PRUNE_AFTER_TRIALS:
        return False
    peers = [t.intermediate_values[step] for t in completed if step in t.intermediate_values]
    return bool(peers) and running > float(np.median(peers))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tune(
    trace: SwfTrace,
    cluster: Cluster,
    spec: TuneSpec,
    *,
    first: int | None = None,
    procs_per_node: int = 1,
    progress: Callable[[TuneProgress], None] | None = None,
) -> TunedPolicy:
    """Search the policy space on training data disjoint from the protocol's windows.

    Returns:
        The best point found, with ``origin`` (trace, hash, windows, seed, objective, budget,
        wall and CPU time) and ``scores`` (the start's and the tuned policy's mean bounded
        slowdown on the training and the evaluation windows).
    """
    import optuna

    wall0, cpu0 = time.perf_counter(), _cpu_s()
    evaluation, eval_workloads = protocol_workloads(
        trace, cluster, first=first, procs_per_node=procs_per_node, variant=spec.variant
    )
    jobs_trace = schedgym_jobs(trace) if spec.variant == "schedgym" else trace
    segments = outside_segments(len(jobs_trace.jobs), evaluation)
    pools = [
        workload_from_swf(
            jobs_trace,
            cluster,
            window=segment,
            procs_per_node=procs_per_node,
            estimate="requested",
            size_rule="max",
        )[0]
        for segment in segments
    ]
    training = bootstrap_windows(
        pools,
        count=spec.training_windows,
        length=spec.length,
        block=spec.block,
        seed=spec.seed,
    )
    train_workloads: list[tuple[list[WorkloadJob], list[SkippedJob]]] = [(w, []) for w in training]

    def mean_bsld(
        policy: TunedPolicy, workloads: Sequence[tuple[Sequence[WorkloadJob], Sequence[SkippedJob]]]
    ) -> float:
        bslds, _ = replay_windows(
            cluster,
            workloads,
            lambda: policy.ordering(cluster.size),
            policy.backfill,
            variant=spec.variant,
        )
        return float(np.mean(bslds))

    def point(params: dict[str, Any]) -> TunedPolicy:
        weights = dict(params)
        backfill = weights.pop("backfill", None)
        chosen = spec.backfill if spec.backfill is not None else Backfill(backfill)
        return TunedPolicy(family=spec.family, weights=weights, backfill=chosen)

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, spec.family)
        if spec.backfill is None:
            params["backfill"] = trial.suggest_categorical(
                "backfill", [b.value for b in SEARCHED_BACKFILLS]
            )
        policy = point(params)
        bslds: list[float] = []
        for step, workload in enumerate(train_workloads):
            bslds += replay_windows(
                cluster,
                [workload],
                lambda: policy.ordering(cluster.size),
                policy.backfill,
                variant=spec.variant,
            )[0]
            # The windows come in the same order every trial, so the running mean after a few
            # of them tells a hopeless point early: more points tried in the same time.
            running = float(np.mean(bslds))
            trial.report(running, step)
            if spec.prune and _behind_the_median(trial, step, running):
                raise optuna.TrialPruned()
        value = float(np.mean(bslds))
        return value if math.isfinite(value) else float("inf")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=_make_sampler(spec))
    start_params = starting_weights(spec.family, spec.start)
    enqueued = dict(start_params)
    if spec.backfill is None:
        enqueued["backfill"] = Backfill.STRICT.value
    study.enqueue_trial(enqueued)

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None and trial.value is not None:
            progress(
                TuneProgress(
                    trial=trial.number + 1,
                    value=trial.value,
                    best=study.best_value,
                    elapsed_s=time.perf_counter() - wall0,
                )
            )

    study.optimize(objective, n_trials=spec.trials, timeout=spec.timeout_s, callbacks=[report])
    search_wall, search_cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    best = point(dict(study.best_params))
    start = point(enqueued)
    scores = {
        "objective": "mean bounded slowdown (bsld = max((wait + run) / max(run, 10 s), 1))",
        "start": {
            "name": spec.start,
            "backfill": start.backfill.value,
            "training": study.trials[0].value,
            "evaluation": mean_bsld(start, eval_workloads),
        },
        "tuned": {
            "training": study.best_value,
            "evaluation": mean_bsld(best, eval_workloads),
        },
    }
    origin = {
        "trace": os.path.basename(trace.path),
        "trace_sha256": _sha256(trace.path) if os.path.exists(trace.path) else None,
        "cluster": f"{cluster.name} ({cluster.size} nodes)",
        "procs_per_node": procs_per_node,
        "variant": spec.variant,
        "evaluation": {
            "protocol": "rlscheduler",
            "windows": [f"{s}:{n}" for s, n in evaluation],
            "first": first,
            "seed": 1,
        },
        "training": {
            "method": "block bootstrap of the jobs outside the evaluation windows",
            "stretches": [f"{s}:{n}" for s, n in segments],
            "windows": spec.training_windows,
            "length": spec.length,
            "block": spec.block,
            "seed": spec.seed,
        },
        "search": {
            "family": spec.family,
            "backfill": spec.backfill.value if spec.backfill is not None else "searched",
            "start": spec.start,
            "sampler": spec.sampler,
            "pruner": "running mean vs median (10 trials, 3 windows)" if spec.prune else "none",
            "seed": spec.seed,
            "trials": len(study.trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "trial_limit": spec.trials,
            "time_limit_s": spec.timeout_s,
            "wall_s": round(search_wall, 1),
            "cpu_s": round(search_cpu, 1),
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "orchestrator": _version(),
    }
    return dataclasses.replace(best, origin=origin, scores=scores)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("orchestrator")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "unknown"
