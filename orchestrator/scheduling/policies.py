"""Queue orderings (which waiting job goes first) and backfilling modes.

Every ordering gives each waiting job a *score*; the smallest score runs first, ties go to the
earlier submission, then to queue order. Formulas (``r`` estimate/requested time in s, ``n``
nodes, ``s`` submit time, ``w`` wait so far), as in RLScheduler (Zhang et al., SC20):

* ``fcfs``: s
* ``sjf``: r
* ``f1``: log10(r) * n + 870 * log10(s)   (Carastan-Santos and de Camargo, SC17)
* ``wfp3``: -(w / r)^3 * n
* ``unicep``: -w / (log2(n) * r)

  (These are the published formulas, with the real wait. RLScheduler's environment code scores a
  queued job with ``w = -1 - s``, its start time being still -1: the ``schedgym`` variant of
  :mod:`orchestrator.simulate.protocol` reproduces that to match their table.)
* ``multifactor``: -(priority), with Slurm's priority/multifactor
  (``PriorityWeightAge`` * age + ``PriorityWeightFairshare`` * fair share
  + ``PriorityWeightJobSize`` * size + ``PriorityWeightQOS`` * the job's own priority),
  each factor in [0, 1]; plus ``runtime`` * a run-time factor Slurm lacks
  (1 - log10(r) / log10(``max_runtime_s``), clipped to [0, 1]: shorter first), 0 by default.
* ``tuned:FILE``: a policy written by ``orch tune`` (:mod:`orchestrator.scheduling.tuned`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from orchestrator.resources.request import JobRequest

__all__ = [
    "ORDERINGS",
    "Backfill",
    "BaseOrdering",
    "FairShareLedger",
    "JobLike",
    "MultifactorOrdering",
    "MultifactorWeights",
    "make_ordering",
]


class JobLike(Protocol):
    """What the scheduler needs to know of a waiting job."""

    @property
    def job_id(self) -> int | str: ...

    @property
    def request(self) -> JobRequest: ...


J = TypeVar("J", bound=JobLike)


class Backfill(StrEnum):
    """Backfilling modes.

    * ``none``: jobs start strictly in order; a blocked head job blocks the queue.
    * ``easy``: one reservation, for the head job, at the earliest time it fits (the *shadow
      time*). A later job may start now if it ends by then, or if it only uses nodes the head job
      will not need ("extra nodes").
    * ``conservative``: every waiting job, in order, gets a reservation at the earliest time it
      fits around the earlier reservations; a job starts now only if its reservation is now.
    * ``strict``: RLScheduler's variant. After computing the head's shadow time, start (in FCFS
      order) only jobs that fit now *and* end before the shadow time: no extra-nodes rule.
    """

    NONE = "none"
    EASY = "easy"
    CONSERVATIVE = "conservative"
    STRICT = "strict"


def _safe_r(request: JobRequest) -> float:
    r = request.estimate
    return r if math.isfinite(r) and r > 0 else 1.0


class BaseOrdering(ABC):
    """Scores waiting jobs; the smallest score runs first.

    ``time_dependent`` orderings (whose scores change with the clock) must be re-sorted at every
    scheduling pass; the others can be kept sorted incrementally by a driver.
    """

    name: str = ""
    time_dependent: bool = False

    @abstractmethod
    def score(self, request: JobRequest, now: float) -> float:
        """The job's score at time ``now``; smaller runs first."""

    def sort(self, jobs: Iterable[J], now: float) -> list[J]:
        """Jobs in run order (stable: ties go to the earlier submission, then to input order)."""
        return sorted(jobs, key=lambda j: (self.score(j.request, now), j.request.submit_time))


class _Fcfs(BaseOrdering):
    name = "fcfs"

    def score(self, request: JobRequest, now: float) -> float:
        return request.submit_time


class _Sjf(BaseOrdering):
    name = "sjf"

    def score(self, request: JobRequest, now: float) -> float:
        return request.estimate


class _F1(BaseOrdering):
    name = "f1"

    def score(self, request: JobRequest, now: float) -> float:
        s = max(request.submit_time, 1.0)
        return math.log10(_safe_r(request)) * request.node_count + 870.0 * math.log10(s)


class _Wfp3(BaseOrdering):
    name = "wfp3"
    time_dependent = True

    def score(self, request: JobRequest, now: float) -> float:
        w = max(now - request.submit_time, 0.0)
        return -((w / _safe_r(request)) ** 3) * request.node_count


class _Unicep(BaseOrdering):
    name = "unicep"
    time_dependent = True

    def score(self, request: JobRequest, now: float) -> float:
        w = max(now - request.submit_time, 0.0)
        # log2(1) = 0 would divide by zero: a one-node job counts as log2(2).
        return -w / (math.log2(max(request.node_count, 2)) * _safe_r(request))


@dataclass
class FairShareLedger:
    """Per-user usage in node-seconds with exponential decay (Slurm's PriorityDecayHalfLife).

    Drivers charge a job's usage when it ends; :meth:`factor` is Slurm's classic fair-share
    factor ``2 ** (-usage_share / shares_share)``, with equal shares for every user unless
    ``shares`` says otherwise.
    """

    half_life_s: float = 7 * 24 * 3600.0
    shares: dict[str, float] = field(default_factory=dict)
    _usage: dict[str, tuple[float, float]] = field(default_factory=dict)

    def charge(self, user: str, node_seconds: float, now: float) -> None:
        self._usage[user] = (self.usage(user, now) + node_seconds, now)

    def usage(self, user: str, now: float) -> float:
        value, since = self._usage.get(user, (0.0, now))
        return float(value * 0.5 ** (max(now - since, 0.0) / self.half_life_s))

    def factor(self, user: str, now: float) -> float:
        total = sum(self.usage(u, now) for u in self._usage)
        if total <= 0:
            return 1.0
        users = set(self._usage) | set(self.shares) | {user}
        share_total = sum(self.shares.get(u, 1.0) for u in users)
        share = self.shares.get(user, 1.0) / share_total
        return float(2.0 ** (-(self.usage(user, now) / total) / share))


@dataclass(frozen=True)
class MultifactorWeights:
    """Weights as Slurm's ``PriorityWeight*`` settings; ``max_age_s`` is ``PriorityMaxAge``."""

    age: float = 1000.0
    fairshare: float = 10000.0
    job_size: float = 1000.0
    qos: float = 1.0
    max_age_s: float = 7 * 24 * 3600.0
    favor_small: bool = False
    runtime: float = 0.0
    max_runtime_s: float = 7 * 24 * 3600.0


def _runtime_factor(request: JobRequest, max_runtime_s: float) -> float:
    """1 for a job of 1 s or less, 0 at ``max_runtime_s`` or more, log-linear between."""
    top = math.log10(max(max_runtime_s, 10.0))
    return min(max(1.0 - math.log10(max(_safe_r(request), 1.0)) / top, 0.0), 1.0)


class MultifactorOrdering(BaseOrdering):
    """Slurm-like multifactor priority: age, fair share, job size and the job's own priority."""

    name = "multifactor"
    time_dependent = True

    def __init__(
        self,
        cluster_size: int,
        weights: MultifactorWeights | None = None,
        ledger: FairShareLedger | None = None,
    ) -> None:
        self.cluster_size = cluster_size
        self.weights = weights or MultifactorWeights()
        self.ledger = ledger or FairShareLedger()

    def priority(self, request: JobRequest, now: float) -> float:
        w = self.weights
        age = min(max(now - request.submit_time, 0.0) / w.max_age_s, 1.0)
        size = min(request.node_count / self.cluster_size, 1.0)
        if w.favor_small:
            size = 1.0 - size
        fairshare = self.ledger.factor(request.user, now)
        prio = w.age * age + w.fairshare * fairshare + w.job_size * size + w.qos * request.priority
        if w.runtime:
            prio += w.runtime * _runtime_factor(request, w.max_runtime_s)
        return prio

    def score(self, request: JobRequest, now: float) -> float:
        return -self.priority(request, now)

    def sort(self, jobs: Iterable[J], now: float) -> list[J]:
        # Fair-share factors are per user: compute each once per pass, not once per job.
        items = list(jobs)
        factors = {u: self.ledger.factor(u, now) for u in {j.request.user for j in items}}
        w = self.weights

        def key(job: J) -> tuple[float, float]:
            r = job.request
            age = min(max(now - r.submit_time, 0.0) / w.max_age_s, 1.0)
            size = min(r.node_count / self.cluster_size, 1.0)
            if w.favor_small:
                size = 1.0 - size
            prio = w.age * age + w.fairshare * factors[r.user] + w.job_size * size
            prio = prio + w.qos * r.priority
            if w.runtime:
                prio += w.runtime * _runtime_factor(r, w.max_runtime_s)
            return (-prio, r.submit_time)

        return sorted(items, key=key)


ORDERINGS: Sequence[str] = ("fcfs", "sjf", "f1", "wfp3", "unicep", "multifactor")


def make_ordering(name: str, cluster_size: int) -> BaseOrdering:
    """An ordering by name (one of :data:`ORDERINGS`, or ``tuned:FILE``), fresh each call.

    Raises:
        ValueError: for an unknown name, listing the known ones
            (:class:`~orchestrator.exceptions.PolicyFileError` for a bad ``tuned:`` file).
    """
    if name.startswith("tuned:"):
        from orchestrator.scheduling.tuned import load_policy

        return load_policy(name.removeprefix("tuned:")).ordering(cluster_size)
    simple: dict[str, type[BaseOrdering]] = {
        "fcfs": _Fcfs,
        "sjf": _Sjf,
        "f1": _F1,
        "wfp3": _Wfp3,
        "unicep": _Unicep,
    }
    key = name.lower()
    if key in simple:
        return simple[key]()
    if key == "multifactor":
        return MultifactorOrdering(cluster_size)
    raise ValueError(
        f"unknown ordering {name!r}; known: {', '.join(ORDERINGS)}, tuned:FILE (from orch tune)"
    )
