"""Tuned scheduling policies: a documented policy space and the YAML file a tuned point lives in.

The policy space has two families and a backfilling mode:

* ``score``: a weighted sum of log features of a waiting job (``r`` estimated run time in s, ``n``
  nodes, ``s`` submit time, ``w`` wait so far); the smallest score runs first::

      score = runtime * log10(r) + size * log10(n) + runtime_size * log10(r) * n
              + submit * log10(max(s, 1)) + wait * log10(1 + w)
              + slowdown * log10(max((w + r) / max(r, 10), 1))

  FCFS (``submit: 1``), SJF (``runtime: 1``) and F1 (``runtime_size: 1, submit: 870``) are
  points of it and give their schedules exactly; a negative ``wait`` ages jobs up the queue.
* ``multifactor``: Slurm's priority/multifactor weights (:class:`MultifactorWeights`: age, fair
  share, job size, favouring small jobs or not, the job's own priority) plus an estimated
  run-time factor (shorter first) that Slurm lacks.

A file names its family, its weights, its backfilling mode and where it came from (trace and its
hash, windows, seed, objective, search budget; see :func:`load_policy`). ``orch simulate`` and the
daemon load it with ``--order tuned:FILE``, so what wins in simulation is what runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from orchestrator.exceptions import PolicyFileError
from orchestrator.resources.request import JobRequest
from orchestrator.scheduling.policies import (
    Backfill,
    BaseOrdering,
    MultifactorOrdering,
    MultifactorWeights,
)

__all__ = [
    "FAMILIES",
    "POLICY_FORMAT",
    "TUNED_PREFIX",
    "ScoreOrdering",
    "ScoreWeights",
    "TunedPolicy",
    "load_policy",
    "resolve_order",
    "save_policy",
]

POLICY_FORMAT = "orchestrator.tuned-policy/1"
TUNED_PREFIX = "tuned:"
Family = Literal["score", "multifactor"]
FAMILIES: tuple[Family, ...] = ("score", "multifactor")


@dataclass(frozen=True)
class ScoreWeights:
    """Weights of the ``score`` family (see the module's docstring); all zero scores every job
    alike, which is FCFS by the tie-break."""

    runtime: float = 0.0
    size: float = 0.0
    runtime_size: float = 0.0
    submit: float = 0.0
    wait: float = 0.0
    slowdown: float = 0.0


class ScoreOrdering(BaseOrdering):
    """The ``score`` family: a weighted sum of log features; smallest first."""

    name = "score"

    def __init__(self, weights: ScoreWeights) -> None:
        self.weights = weights
        # Aging makes the score depend on the clock: the queue is then re-sorted every pass.
        self.time_dependent = weights.wait != 0.0 or weights.slowdown != 0.0

    def score(self, request: JobRequest, now: float) -> float:
        w = self.weights
        r = request.estimate
        r_safe = r if math.isfinite(r) and r > 0 else 1.0
        log_r = math.log10(r_safe)
        n = request.node_count
        # Summed in F1's order (runtime_size term, then submit) so F1's point gives its floats.
        total = w.runtime_size * (log_r * n) + w.submit * math.log10(max(request.submit_time, 1.0))
        if w.runtime:
            total += w.runtime * log_r
        if w.size:
            total += w.size * math.log10(max(n, 1))
        if w.wait:
            total += w.wait * math.log10(1.0 + max(now - request.submit_time, 0.0))
        if w.slowdown:
            # The bounded slowdown the job would have if it started now (its wait so far).
            waited = max(now - request.submit_time, 0.0)
            total += w.slowdown * math.log10(max((waited + r_safe) / max(r_safe, 10.0), 1.0))
        return total


@dataclass(frozen=True)
class TunedPolicy:
    """A point of the policy space, with where it came from.

    Attributes:
        family: ``score`` or ``multifactor``.
        weights: The family's weights (field names of :class:`ScoreWeights` or
            :class:`MultifactorWeights`).
        backfill: The backfilling mode it was tuned with.
        origin: Provenance: trace, its SHA-256, training and evaluation windows, seed, objective,
            sampler, search budget and wall time (free-form, kept as written).
        scores: Objective values measured when it was made (training and evaluation, the starting
            point's too).
    """

    family: Family
    weights: dict[str, Any]
    backfill: Backfill = Backfill.EASY
    origin: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise PolicyFileError(
                "family", self.family, f"one of {', '.join(FAMILIES)}", "family: score"
            )
        known = {f.name: f for f in fields(_weights_class(self.family))}
        for key, value in self.weights.items():
            if key not in known:
                raise PolicyFileError(
                    f"weights.{key}",
                    value,
                    f"not a weight of the {self.family} family (known: {', '.join(known)})",
                    f"weights: {{{next(iter(known))}: 1.0}}",
                )
            if known[key].type in (bool, "bool"):
                if not isinstance(value, bool):
                    raise PolicyFileError(f"weights.{key}", value, "true or false", "true")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise PolicyFileError(f"weights.{key}", value, "a number", f"{key}: 0.5")
            elif not math.isfinite(value):
                raise PolicyFileError(f"weights.{key}", value, "a finite number", f"{key}: 0.5")
        if self.family == "multifactor" and self.weights.get("max_age_s", 1.0) <= 0:
            raise PolicyFileError(
                "weights.max_age_s", self.weights["max_age_s"], "must be > 0", "604800"
            )

    def ordering(self, cluster_size: int) -> BaseOrdering:
        """A fresh ordering of this policy (a multifactor one has its own fair-share ledger)."""
        if self.family == "score":
            return ScoreOrdering(ScoreWeights(**self.weights))
        return MultifactorOrdering(cluster_size, MultifactorWeights(**self.weights))

    def to_document(self) -> dict[str, Any]:
        """The YAML document (see :func:`save_policy`)."""
        return {
            "format": POLICY_FORMAT,
            "family": self.family,
            "weights": dict(self.weights),
            "backfill": self.backfill.value,
            "origin": dict(self.origin),
            "scores": dict(self.scores),
        }

    @classmethod
    def from_document(cls, document: object) -> TunedPolicy:
        """Validate a parsed YAML document; errors name the field and the fix."""
        if not isinstance(document, dict):
            raise PolicyFileError(
                "(document)", document, "a mapping", f"format: {POLICY_FORMAT} ... family: score"
            )
        if document.get("format") != POLICY_FORMAT:
            raise PolicyFileError(
                "format",
                document.get("format"),
                "not a tuned-policy file of this version (made by `orch tune`)",
                POLICY_FORMAT,
            )
        unknown = set(document) - {"format", "family", "weights", "backfill", "origin", "scores"}
        if unknown:
            raise PolicyFileError(
                sorted(unknown)[0],
                document[sorted(unknown)[0]],
                "unknown key (known: format, family, weights, backfill, origin, scores)",
                "family: score",
            )
        weights = document.get("weights")
        if not isinstance(weights, dict):
            raise PolicyFileError("weights", weights, "a mapping of weights", "{runtime: 1.0}")
        backfill = document.get("backfill", Backfill.EASY.value)
        if backfill not in {b.value for b in Backfill}:
            raise PolicyFileError(
                "backfill",
                backfill,
                f"one of {', '.join(b.value for b in Backfill)}",
                "strict",
            )
        for key in ("origin", "scores"):
            if not isinstance(document.get(key, {}), dict):
                raise PolicyFileError(key, document[key], "a mapping", f"{key}: {{}}")
        return cls(
            family=document.get("family", ""),
            weights={str(k): v for k, v in weights.items()},
            backfill=Backfill(backfill),
            origin=dict(document.get("origin", {})),
            scores=dict(document.get("scores", {})),
        )


def _weights_class(family: str) -> type[Any]:
    return ScoreWeights if family == "score" else MultifactorWeights


def save_policy(policy: TunedPolicy, path: Path) -> None:
    """Write the policy as YAML, atomically (a reader never sees half a file)."""
    import yaml

    text = (
        "# A scheduling policy tuned by `orch tune`; use it with --order tuned:"
        f"{path.name}\n" + yaml.safe_dump(policy.to_document(), sort_keys=False)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


_CACHE: dict[tuple[str, int, int], TunedPolicy] = {}


def load_policy(path: str | Path) -> TunedPolicy:
    """Read and validate a policy file (cached while the file is unchanged).

    Raises:
        PolicyFileError: when the file is missing, not YAML, or a field is wrong.
    """
    import yaml

    resolved = Path(path).expanduser()
    try:
        stat = resolved.stat()
    except OSError as e:
        raise PolicyFileError(
            "order",
            f"{TUNED_PREFIX}{path}",
            f"cannot read the policy file ({e.strerror})",
            f"{TUNED_PREFIX}policy.yaml (a file written by `orch tune`)",
        ) from e
    key = (str(resolved.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _CACHE:
        return _CACHE[key]
    try:
        document = yaml.safe_load(resolved.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PolicyFileError(
            "order",
            f"{TUNED_PREFIX}{path}",
            f"not a readable YAML file ({e})",
            f"{TUNED_PREFIX}policy.yaml",
        ) from e
    try:
        policy = TunedPolicy.from_document(document)
    except PolicyFileError as e:
        raise PolicyFileError(e.field, e.value, f"{e.reason} in {resolved}", e.example) from e
    _CACHE[key] = policy
    return policy


def resolve_order(order: str, backfill: str | None) -> tuple[str, Backfill]:
    """Check an ``--order`` value and settle the backfilling mode for it.

    Returns:
        The order (a ``tuned:`` file's path made absolute, so a daemon started elsewhere finds
        it) and the mode: ``backfill`` when given, else a tuned policy's own, else EASY.

    Raises:
        ValueError: for an unknown ordering or backfilling mode, or a bad policy file.
    """
    from orchestrator.scheduling.policies import make_ordering

    make_ordering(order, 1)
    policy = None
    if order.startswith(TUNED_PREFIX):
        path = Path(order.removeprefix(TUNED_PREFIX)).expanduser().resolve()
        order = f"{TUNED_PREFIX}{path}"
        policy = load_policy(path)
    if backfill is not None:
        try:
            return order, Backfill(backfill)
        except ValueError:
            raise ValueError(
                f"unknown backfilling mode {backfill!r}; known: "
                + ", ".join(b.value for b in Backfill)
            ) from None
    return order, policy.backfill if policy is not None else Backfill.EASY
