"""Calibrate the performance model on training runs logged in MLflow.

From each finished run (``sweeps/train.py`` logs them): its world size, global batch, optimizer,
K-FAC intervals, and the medians over logging windows of ``step_time_ms`` and
``time_<phase>_ms`` (the first window, which holds warm-up, is dropped when there are others).
Then, for one model preset:

- 1-rank runs give the compute profile: forward plus backward against the batch by least
  squares (a fixed overhead and a FLOP rate), SGD's update per parameter, and K-FAC's
  curvature (least squares on the factor batch), inverse (``d^3`` units per second) and
  preconditioning rates;
- 2-rank runs on the shared host give the cores the ranks effectively get: ``host_cores`` is
  solved (bisection) so that the model's 2-rank step equals the measured one (at most the
  preset's cores). On a busy machine it is below 2, and it is what makes 4 ranks on 2 cores
  predictable.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from mlflow import MlflowClient

from orchestrator.perfmodel.collectives import Link
from orchestrator.perfmodel.machine import DEFAULT_PROFILE, NETWORKS, Profile
from orchestrator.perfmodel.model import KfacSchedule, predict_step
from orchestrator.perfmodel.workloads import MODELS, ModelSpec

__all__ = ["RunPoint", "calibrate", "fastest_per_config", "load_points", "model_preset_of"]

PHASES = ("forward", "backward", "curvature", "inverse", "communication", "update")


@dataclass(frozen=True)
class RunPoint:
    """What one finished training run measured over its logging windows.

    ``step_ms``, ``samples_per_s`` and ``phases_ms`` are medians over the windows (what a user
    saw); ``fastest_*`` are the fastest window's (the machine least disturbed by other work),
    which calibration uses: the model predicts a machine the job has to itself.
    """

    run_id: str
    model: str | None
    optimizer: str
    world_size: int
    batch_size: int
    step_ms: float
    samples_per_s: float
    phases_ms: dict[str, float] = field(default_factory=dict)
    kfac: KfacSchedule = field(default_factory=KfacSchedule)
    fastest_step_ms: float = math.nan
    fastest_phases_ms: dict[str, float] = field(default_factory=dict)

    @property
    def batch_per_rank(self) -> float:
        return self.batch_size / self.world_size


def model_preset_of(params: dict[str, str], n_params: float | None) -> str | None:
    """The model preset a run trained, or ``None`` (e.g. a NAS variant of ``param``).

    A run matches ``<model.name>-<data.name>`` when that preset exists and, if the run logged
    ``n_params``, the parameter counts agree (so a NAS trial's resized net is not taken for
    the default one).
    """
    name = f"{params.get('model.name')}-{params.get('data.name')}"
    spec = MODELS.get(name)
    if spec is None:
        return None
    if n_params is not None and int(n_params) != spec.params:
        return None
    return name


def _windows(client: MlflowClient, run_id: str, key: str) -> tuple[float, float] | None:
    """Median and minimum of a metric over the logging windows, warm-up window dropped."""
    values = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
    if not values:
        return None
    if len(values) > 1:
        values = values[1:]  # the first window holds warm-up (first calls, allocations)
    return float(statistics.median(values)), float(min(values))


def _int(params: dict[str, str], key: str, default: int | None) -> int | None:
    raw = params.get(key)
    if raw is None or raw == "None":
        return default
    return int(float(raw))


def load_points(client: MlflowClient, experiment_ids: Sequence[str]) -> list[RunPoint]:
    """Every finished training run of the experiments, with its window medians.

    Args:
        client: A client on the tracking store.
        experiment_ids: Experiments to read.

    Returns:
        One point per finished run that logged ``step_time_ms`` (sweep parent runs have none).
    """
    points: list[RunPoint] = []
    runs = client.search_runs(
        list(experiment_ids), filter_string="attributes.status = 'FINISHED'", max_results=5000
    )
    for run in runs:
        params, tags = run.data.params, run.data.tags
        if "step_time_ms" not in run.data.metrics or "batch_size" not in params:
            continue
        rid = run.info.run_id
        step = _windows(client, rid, "step_time_ms")
        sps = _windows(client, rid, "samples_per_sec")
        if step is None or sps is None:
            continue
        phases = {p: _windows(client, rid, f"time_{p}_ms") or (0.0, 0.0) for p in PHASES}
        points.append(
            RunPoint(
                run_id=rid,
                model=model_preset_of(params, run.data.metrics.get("n_params")),
                optimizer=params.get("optimizer.name", tags.get("optimizer", "?")),
                world_size=int(tags.get("world_size", "1")),
                batch_size=int(params["batch_size"]),
                step_ms=step[0],
                samples_per_s=sps[0],
                phases_ms={p: v[0] for p, v in phases.items()},
                fastest_step_ms=step[1],
                fastest_phases_ms={p: v[1] for p, v in phases.items()},
                kfac=KfacSchedule(
                    factor_interval=_int(params, "optimizer.kfac.factor_interval", 1) or 1,
                    inverse_interval=_int(params, "optimizer.kfac.inverse_interval", 10) or 10,
                    factor_samples=_int(params, "optimizer.kfac.factor_samples", None),
                ),
            )
        )
    return points


def fastest_per_config(points: Iterable[RunPoint]) -> list[RunPoint]:
    """One point per configuration (optimizer, ranks, batch, K-FAC intervals): the run with
    the fastest window, i.e. the repeat least disturbed by other work on the machine."""
    best: dict[tuple[object, ...], RunPoint] = {}
    for p in points:
        key = (p.model, p.optimizer, p.world_size, p.batch_size, p.kfac)
        if key not in best or p.fastest_step_ms < best[key].fastest_step_ms:
            best[key] = p
    return list(best.values())


def _fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least squares ``y = a + b x`` with ``a, b >= 0``; one distinct ``x``: ``a = 0``."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(set(xs.tolist())) >= 2:
        b, a = np.polyfit(xs, ys, 1)
        if a >= 0 and b > 0:
            return float(a), float(b)
    slope = float(np.sum(xs * ys) / np.sum(xs * xs))  # through the origin
    return 0.0, max(slope, 1e-15)


def _profile_from_single(spec: ModelSpec, ones: Sequence[RunPoint]) -> Profile:
    prof = DEFAULT_PROFILE
    a, b = _fit_line(
        [p.batch_per_rank for p in ones],
        [(p.fastest_phases_ms["forward"] + p.fastest_phases_ms["backward"]) / 1e3 for p in ones],
    )
    prof = replace(prof, step_overhead_s=a, train_flops=spec.train_flops / b)
    sgd = [p for p in ones if p.optimizer == "sgd"]
    if sgd:
        upd = statistics.median(p.fastest_phases_ms["update"] / 1e3 for p in sgd)
        prof = replace(prof, update_s_per_param=upd / spec.params)
    kf = [p for p in ones if p.optimizer == "kfac"]
    if kf:
        fb = [min(p.batch_size, p.kfac.factor_samples or p.batch_size) for p in kf]
        ca, cb = _fit_line(
            fb, [p.fastest_phases_ms["curvature"] / 1e3 * p.kfac.factor_interval for p in kf]
        )
        inv = statistics.median(
            spec.inverse_units
            / max(p.fastest_phases_ms["inverse"] / 1e3 * p.kfac.inverse_interval, 1e-9)
            for p in kf
        )
        pre = statistics.median(
            max(p.fastest_phases_ms["update"] / 1e3 - spec.params * prof.update_s_per_param, 1e-6)
            for p in kf
        )
        prof = replace(
            prof,
            curvature_overhead_s=ca,
            curvature_flops=spec.curvature_flops / cb,
            inverse_units_per_s=inv,
            precondition_flops=spec.precondition_flops / pre,
        )
    return prof


def _solve_host_cores(
    spec: ModelSpec, point: RunPoint, prof: Profile, link: Link, cores: int
) -> float:
    """The ``host_cores`` at which the model gives the 2-rank run its measured step time.

    The predicted step falls as ``host_cores`` grows, so bisection finds it; a run faster than
    the model at ``cores`` gets ``cores``, one slower than at 0.05 cores gets 0.05.
    """

    def step(c: float) -> float:
        p = replace(prof, host_cores=c)
        pred = predict_step(
            spec,
            point.optimizer,
            2,
            point.batch_per_rank,
            profile=p,
            topology="flat",
            link=link,
            kfac=point.kfac,
        )
        return pred.total

    target = point.fastest_step_ms / 1e3
    lo, hi = 0.05, float(cores)
    if step(hi) >= target:
        return hi
    if step(lo) <= target:
        return lo
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if step(mid) > target else (lo, mid)
    return (lo + hi) / 2


def calibrate(
    points: Iterable[RunPoint], model: str, *, cluster: str = "local", cores: int = 2
) -> Profile:
    """Fit a profile of this machine for one model preset.

    Args:
        points: Runs from :func:`load_points`.
        model: The model preset the runs trained (others are ignored).
        cluster: The preset whose network the multi-rank runs used.
        cores: Cores of the shared host (the ``local`` preset's ``node.cpus``): the most the
            ranks can get.

    Returns:
        The profile (``calibrated_from`` says how many runs of each kind were used).

    Raises:
        ValueError: When no 1-rank run of the model is among the points.
    """
    spec = MODELS[model]
    mine = fastest_per_config(p for p in points if p.model == model)
    ones = [p for p in mine if p.world_size == 1]
    if not ones:
        raise ValueError(
            f"no finished 1-rank run of model preset {model!r} to calibrate on; run one "
            "(python -m sweeps.train ...) into the experiment, or predict uncalibrated"
        )
    prof = _profile_from_single(spec, ones)
    twos = [p for p in mine if p.world_size == 2]
    net = NETWORKS.get(cluster, NETWORKS["local"])
    hosts = [_solve_host_cores(spec, p, prof, net.link, cores) for p in twos]
    host = statistics.median(hosts) if hosts else float(cores)
    return replace(
        prof,
        host_cores=host,
        calibrated_from=f"{len(ones)} one-rank and {len(twos)} two-rank runs of {model}",
    )
