"""The training job: ``python -m sweeps.train [group=option] [key=value ...]`` (a Hydra app).

:func:`main` runs one job from a composed config and returns a result dict, so a launcher or a
sweeper can call it as a plain function; the Hydra entry point returns the final validation
accuracy (what the Optuna sweeper maximises) and writes the whole dict next to the checkpoint.

One step: forward, backward, gradient all-reduce (data-parallel), K-FAC (factors, inverses,
preconditioning; skipped for SGD), SGD step. Rank 0 logs to MLflow in one ``log_batch`` per window
of ``log_every_steps`` steps and per epoch. SIGTERM or SIGUSR1 makes every rank stop at the next
step boundary; rank 0 writes a checkpoint (model, optimizer, K-FAC state, RNG states, step,
timers, MLflow run id) and the job exits with :data:`EXIT_PREEMPTED`. Running the same config
again resumes it, into the same MLflow run, and ends where an uninterrupted run would have ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from omegaconf import DictConfig
from torch import nn

from orchestrator.tracking import (
    BatchedLogger,
    TrackingError,
    check_tracking_uri,
    connect,
    default_tracking_uri,
    env_tags,
    flatten_params,
    start_or_resume_run,
)
from sweeps.checkpoint import PreemptionFlag, load_checkpoint, save_checkpoint
from sweeps.config import ConfigError, validate
from sweeps.data import Dataset, batch_indices, epoch_order, load_dataset, steps_per_epoch
from sweeps.distributed import (
    World,
    agree,
    all_reduce_gradients,
    broadcast_state,
    default_threads,
    init_distributed,
    shutdown,
)
from sweeps.kfac import KFAC, KFACSettings
from sweeps.models import build_model, count_parameters
from sweeps.nas import model_cost
from sweeps.schedule import learning_rate, scaled_lr
from sweeps.trial_link import TrialLink

__all__ = ["EXIT_BAD_CONFIG", "EXIT_PREEMPTED", "cli", "fingerprint", "main"]

#: Exit status of a job that saved a checkpoint on SIGTERM / SIGUSR1 (resubmit it to resume).
EXIT_PREEMPTED = 3
#: Exit status of a job refused for a bad config value (the message names the field).
EXIT_BAD_CONFIG = 2

# Fields that change how a job runs or reports, not what it computes: a checkpoint written under
# one value resumes under another.
_VOLATILE = (
    "tracking",
    "checkpoint",
    "log_every_steps",
    "eval_every_steps",
    "num_threads",
    "run_name",
)
_KFAC_PHASES = ("curvature", "inverse", "communication", "precondition")
_PHASES = ("forward", "backward", "curvature", "inverse", "communication", "update")


def fingerprint(cfg: Mapping[str, Any]) -> str:
    """A 12-hex-digit hash of what a config computes (the checkpoint's default file name).

    Args:
        cfg: A validated config.

    Returns:
        The hash; equal configs up to the volatile fields (tracking, checkpoint, logging
        intervals, threads, run name) give equal hashes.
    """
    core = {k: v for k, v in cfg.items() if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), 1024):
            xb, yb = x[start : start + 1024].to(device), y[start : start + 1024].to(device)
            out = model(xb)
            loss += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += int((out.argmax(1) == yb).sum())
    model.train()
    return loss / len(x), correct / len(x)


def _sync(world: World) -> None:
    if world.device.type == "cuda":
        torch.cuda.synchronize(world.device)


def _peak_memory_mb(world: World) -> float:
    if world.device.type == "cuda":
        return torch.cuda.max_memory_allocated(world.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rng_state() -> dict[str, Any]:
    # numpy's global generator is never drawn from (the split uses its own seeded Generator).
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


def _paths(cfg: Mapping[str, Any], fp: str) -> tuple[Path, Path]:
    raw = cfg["checkpoint"]["path"]
    ckpt = Path(raw) if raw else Path.cwd() / "checkpoints" / f"{fp}.pt"
    return ckpt, ckpt.with_suffix(".result.json")


def _open_tracking(
    cfg: Mapping[str, Any], fp: str, world: World, run_id: str | None
) -> BatchedLogger | None:
    if world.rank != 0 or not cfg["tracking"]["enabled"]:
        return None
    client = connect(cfg["tracking"]["uri"] or default_tracking_uri())
    name = cfg["run_name"] or (
        f"{cfg['model']['name']}-{cfg['data']['name']}-{cfg['optimizer']['name']}"
        f"-bs{cfg['batch_size']}-s{cfg['seed']}"
    )
    tags = {
        "optimizer": cfg["optimizer"]["name"],
        "model": cfg["model"]["name"],
        "data": cfg["data"]["name"],
        "world_size": str(world.size),
        "fingerprint": fp,
        **env_tags(),
        **_sweep_tags(),
    }
    resumed = run_id is not None
    run_id = start_or_resume_run(client, cfg["tracking"]["experiment"], name, tags, run_id)
    logger = BatchedLogger(client, run_id)
    if not resumed:
        logger.log_params(flatten_params(cfg))
    return logger


def _sweep_tags() -> dict[str, str]:
    # A job of a sweep nests under the sweep's parent run (set by the launcher or sweeper in
    # the job's environment, however the job was started); without them the run is top-level.
    parent = os.environ.get("ORCH_PARENT_RUN_ID")
    if not parent:
        return {}
    return {
        "mlflow.parentRunId": parent,
        "orch.role": "trial",
        "orch.sweep_id": os.environ.get("ORCH_SWEEP_ID", ""),
        "orch.trial": os.environ.get("ORCH_TRIAL", ""),
    }


def main(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Run one training job.

    Args:
        cfg: The composed config (``sweeps.config.compose(...)`` or Hydra's).

    Returns:
        ``status`` (``"completed"``, ``"preempted"``, ``"pruned"``: an Optuna trial the
        study's pruner stopped, see ``sweeps/trial_link.py``, or ``"diverged"``: the loss
        became non-finite, the job stopped early), ``val_accuracy``, ``val_loss``,
        ``best_val_accuracy``, ``train_loss``, ``train_accuracy``, ``steps``, ``epochs``,
        ``reached_target``, ``steps_to_target``, ``epochs_to_target``, ``time_to_target_s``
        (training time, evaluation excluded), ``train_time_s``, ``samples_per_sec``,
        ``peak_memory_mb`` (rank 0's peak RSS on CPU, allocated memory on GPU),
        ``peak_memory_mb_per_rank``, ``log_time_s``, ``log_batch_calls``, ``run_id``,
        ``checkpoint``, ``world_size``; on rank 0 of a job that was not preempted also
        ``n_params`` and ``latency_ms`` (the model's cost, ``sweeps/nas.py``).

    Raises:
        ConfigError: A config value (or a distributed environment variable) is invalid.
        TrackingError: The tracking URI is not local, or a resumed run is not in the store.
    """
    c = validate(cfg)
    if c["tracking"]["enabled"] and c["tracking"]["uri"]:
        check_tracking_uri(c["tracking"]["uri"])  # every rank, before any rank starts work
    world = init_distributed(c["device"])
    opened: list[BatchedLogger] = []
    try:
        return _train(c, world, opened)
    except BaseException:
        # A crash (not a preemption: that returns) marks the MLflow run FAILED, not RUNNING
        # forever; the original error is what propagates.
        for logger in opened:
            with contextlib.suppress(Exception):
                logger.finish("FAILED")
        raise
    finally:
        shutdown()


def _train(c: dict[str, Any], world: World, opened: list[BatchedLogger]) -> dict[str, Any]:
    torch.set_num_threads(c["num_threads"] or default_threads(world.local_size))
    data: Dataset = load_dataset(c["data"])
    bs = c["batch_size"]
    if bs % world.size:
        raise ConfigError(
            "batch_size",
            bs,
            f"must divide evenly over WORLD_SIZE={world.size} ranks",
            f"batch_size={max(world.size, bs - bs % world.size)}",
        )
    n_train = len(data.x_train)
    if bs > n_train:
        raise ConfigError(
            "batch_size",
            bs,
            f"larger than the {n_train} training samples of data={data.name}",
            f"batch_size={n_train}",
        )
    spe = steps_per_epoch(n_train, bs)
    total = c["max_steps"] or c["epochs"] * spe
    fp = fingerprint(c)
    ckpt_path, result_path = _paths(c, fp)

    torch.manual_seed(c["seed"])
    model = build_model(c["model"], data.shape, data.num_classes).to(world.device)
    if world.distributed:
        broadcast_state(model)
    o = c["optimizer"]
    opt = torch.optim.SGD(
        model.parameters(),
        lr=o["lr"],
        momentum=o["momentum"],
        nesterov=o["nesterov"],
        weight_decay=o["weight_decay"],
    )
    kfac = (
        KFAC(model, KFACSettings.from_config(o["kfac"], seed=c["seed"]))
        if o["name"] == "kfac"
        else None
    )
    peak_lr = scaled_lr(o["lr"], bs, c["schedule"]["base_batch_size"])

    step, run_id = 0, None
    epoch_sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n since epoch start
    t: dict[str, Any] = {
        "train_time": 0.0,
        "log_time": 0.0,
        "to_target": None,
        "best": 0.0,
        "phases": dict.fromkeys(_PHASES, 0.0),
    }
    if c["checkpoint"]["resume"] and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if state["fingerprint"] != fp or state["world_size"] != world.size:
            raise ConfigError(
                "checkpoint.path",
                str(ckpt_path),
                f"written by another config or world size ({state['world_size']} ranks); "
                "point checkpoint.path elsewhere or set checkpoint.resume=false",
                "checkpoint.resume=false",
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if kfac is not None:
            kfac.load_state_dict(
                {**state["kfac"], "generator": state["kfac_generators"][world.rank]}
            )
        _set_rng_state(state["rng"])
        step, run_id, t = state["step"], state["run_id"], state["timers"]
        # Rank 0 carries the ranks' summed partial-epoch statistics; the epoch end sums again.
        epoch_sums = state["epoch_sums"] if world.rank == 0 else torch.zeros_like(epoch_sums)
    failure: Exception | None = None
    logger = None
    try:
        logger = _open_tracking(c, fp, world, run_id)
    except Exception as e:  # re-raised below, once every rank knows (else they would hang)
        failure = e
    if agree([failure is not None], world)[0]:
        if failure is not None:
            raise failure
        raise RuntimeError("rank 0 could not open the MLflow run; its error says why")
    if logger is not None:
        run_id = logger.run_id
        opened.append(logger)
    # An Optuna trial of the orch_optuna sweeper: report evaluations, stop when pruned.
    link = TrialLink.from_env() if world.rank == 0 else None
    prune_now = False

    x_all, y_all = data.x_train.to(world.device), data.y_train.to(world.device)
    window = dict.fromkeys(_PHASES, 0.0) | {"steps": 0}
    last_eval: tuple[float, float] | None = None
    train_stats: tuple[float | None, float | None] = (None, None)
    status, target, finite = "completed", c["target_accuracy"], True
    order_epoch, order = -1, torch.empty(0, dtype=torch.int64)

    def save_checkpoint() -> None:
        # Reads the loop's current step, run id, timers and sums at the time of the call.
        _save(
            ckpt_path,
            c=c,
            fp=fp,
            world=world,
            model=model,
            opt=opt,
            kfac=kfac,
            step=step,
            run_id=run_id,
            timers=t,
            epoch_sums=epoch_sums,
        )

    model.train()
    with PreemptionFlag() as flag:
        while step < total:
            t_agree = time.perf_counter()
            stop, diverged, pruned = agree(
                [flag.received is not None, not finite, prune_now], world
            )
            t_agree = time.perf_counter() - t_agree  # counted as communication below
            if diverged:
                status = "diverged"  # a sweep's too-large learning rate: stop, report, go on
                break
            if stop:
                status = "preempted"
                break
            if pruned:
                status = "pruned"  # the study's pruner stopped this trial (decided by rank 0)
                break
            epoch, i = divmod(step, spe)
            if epoch != order_epoch:
                order_epoch, order = epoch, epoch_order(n_train, c["seed"], epoch)
            idx = batch_indices(
                order, batch_size=bs, step_in_epoch=i, rank=world.rank, world=world.size
            )
            xb, yb = x_all[idx], y_all[idx]
            lr = learning_rate(c["schedule"], peak_lr, step, total, spe)
            for group in opt.param_groups:
                group["lr"] = lr
            _sync(world)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=False)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            _sync(world)
            t1 = time.perf_counter()
            # The sampled-Fisher backward runs inside the forward (a model hook): count it once.
            in_forward = kfac.timings["curvature"] if kfac else 0.0
            loss.backward()
            _sync(world)
            t2 = time.perf_counter()
            if world.distributed:
                all_reduce_gradients(model, world.size)
            t3 = time.perf_counter()
            if kfac is not None:
                kfac.step(lr)
            t4 = time.perf_counter()
            opt.step()
            _sync(world)
            t5 = time.perf_counter()
            k = kfac.pop_timings() if kfac else dict.fromkeys(_KFAC_PHASES, 0.0)
            before = {p: window[p] for p in _PHASES}
            window["forward"] += t1 - t0 - in_forward
            window["backward"] += t2 - t1
            window["communication"] += (t3 - t2) + k["communication"] + t_agree
            window["curvature"] += k["curvature"]
            window["inverse"] += k["inverse"]
            window["update"] += (t5 - t4) + k["precondition"]
            window["steps"] += 1
            for p in _PHASES:
                t["phases"][p] += window[p] - before[p]
            t["train_time"] += t5 - t0 + t_agree
            with torch.no_grad():
                epoch_sums += torch.tensor(
                    [float(loss) * len(yb), float((out.argmax(1) == yb).sum()), len(yb)],
                    dtype=torch.float64,
                )
            step += 1
            finite = bool(torch.isfinite(loss.detach()))

            if window["steps"] == c["log_every_steps"]:
                if logger is not None:
                    t["log_time"] += _log_window(
                        logger,
                        window,
                        step=step,
                        bs=bs,
                        lr=lr,
                        log_time=t["log_time"],
                        train_time=t["train_time"],
                    )
                window = dict.fromkeys(_PHASES, 0.0) | {"steps": 0}
                if world.rank == 0:
                    print(f"step={step} loss={loss.item():.4f} lr={lr:.4g}", flush=True)

            end_of_epoch = step % spe == 0
            every = c["eval_every_steps"]
            if end_of_epoch or (every and step % every == 0) or step == total:
                if world.distributed:
                    broadcast_state(model)  # BatchNorm statistics differ per rank
                last_eval = _evaluate(model, data.x_val, data.y_val, world.device)
                t["best"] = max(t["best"], last_eval[1])
                metrics = {"val_loss": last_eval[0], "val_accuracy": last_eval[1]}
                if end_of_epoch:
                    sums = epoch_sums.clone()
                    if world.distributed:
                        dist.all_reduce(sums)
                    train_stats = (sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item())
                    metrics |= {
                        "train_loss": train_stats[0],
                        "train_accuracy": train_stats[1],
                        "epoch": step / spe,
                    }
                    epoch_sums.zero_()
                if target is not None and t["to_target"] is None and last_eval[1] >= target:
                    t["to_target"] = {"steps": step, "epochs": step / spe, "time": t["train_time"]}
                    metrics |= {
                        "time_to_target_s": t["train_time"],
                        "steps_to_target": step,
                        "epochs_to_target": step / spe,
                    }
                if link is not None:
                    prune_now = link.report(metrics, step)
                if logger is not None:
                    s = time.perf_counter()
                    logger.log_metrics(metrics, step)
                    logger.flush()
                    t["log_time"] += time.perf_counter() - s
                if t["to_target"] is not None:
                    break
            if c["checkpoint"]["every_steps"] and step % c["checkpoint"]["every_steps"] == 0:
                save_checkpoint()

    if status == "preempted":
        save_checkpoint()
        if logger is not None:
            # KILLED until a resume reopens it (RUNNING) and finishes it.
            logger.finish("KILLED")
            opened.clear()
    if last_eval is None:
        last_eval = _evaluate(model, data.x_val, data.y_val, world.device)
    sums = epoch_sums.clone()
    if world.distributed:
        dist.all_reduce(sums)
    peak: list[Any] = [_peak_memory_mb(world)]
    if world.distributed:
        peak = [None] * world.size
        dist.all_gather_object(peak, _peak_memory_mb(world))
    if sums[2] > 0:  # a partial epoch since the last epoch end: report it rather than the last
        train_stats = (sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item())
    result: dict[str, Any] = {
        "status": status,
        "val_loss": last_eval[0],
        "val_accuracy": last_eval[1],
        "best_val_accuracy": max(t["best"], last_eval[1]),
        "train_loss": train_stats[0],
        "train_accuracy": train_stats[1],
        "steps": step,
        "epochs": step / spe,
        "reached_target": t["to_target"] is not None,
        "steps_to_target": t["to_target"]["steps"] if t["to_target"] else None,
        "epochs_to_target": t["to_target"]["epochs"] if t["to_target"] else None,
        "time_to_target_s": t["to_target"]["time"] if t["to_target"] else None,
        "train_time_s": t["train_time"],
        "log_time_s": t["log_time"],
        "log_batch_calls": logger.calls if logger is not None else 0,
        # Mean per step over the whole run (this process; ranks differ little).
        "step_time_ms": {p: 1000 * v / max(step, 1) for p, v in t["phases"].items()},
        "samples_per_sec": step * bs / t["train_time"] if t["train_time"] else None,
        "peak_memory_mb": peak[0],
        "peak_memory_mb_per_rank": peak,
        "parameters": count_parameters(model),
        "run_id": run_id,
        "checkpoint": str(ckpt_path),
        "world_size": world.size,
    }
    if status != "preempted" and world.rank == 0:
        result |= model_cost(model, data.shape)
    if link is not None and status != "preempted":
        link.finish(status, result)
    if status != "preempted":
        if logger is not None:
            logger.log_metrics(
                {
                    "final_val_accuracy": last_eval[1],
                    "train_time_s": t["train_time"],
                    "n_params": result["n_params"],
                    "latency_ms": result["latency_ms"],
                },
                step,
            )
            logger.set_tags({"status": status})
            logger.finish("FINISHED" if status in ("completed", "pruned") else "FAILED")
            opened.clear()
            result["log_batch_calls"] = logger.calls
        if world.rank == 0:
            ckpt_path.unlink(missing_ok=True)  # a finished job must not be "resumed" by a rerun
    if world.rank == 0:
        result_path.parent.mkdir(parents=True, exist_ok=True)
        result_path.write_text(json.dumps(result, indent=2))
        print("result: " + json.dumps(result), flush=True)
    return result


def _log_window(
    logger: BatchedLogger,
    window: dict[str, float],
    *,
    step: int,
    bs: int,
    lr: float,
    log_time: float,
    train_time: float,
) -> float:
    start = time.perf_counter()
    n = window["steps"]
    busy = sum(window[p] for p in _PHASES)
    metrics = {f"time_{p}_ms": 1000 * window[p] / n for p in _PHASES}
    metrics |= {
        "step_time_ms": 1000 * busy / n,
        "samples_per_sec": n * bs / busy if busy else 0.0,
        "lr": lr,
        # Logging so far over training so far (this flush is counted in the next window).
        "log_time_fraction": log_time / max(train_time, 1e-9),
    }
    logger.log_metrics(metrics, step)
    logger.flush()
    return time.perf_counter() - start


def _save(
    path: Path,
    *,
    c: dict[str, Any],
    fp: str,
    world: World,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    kfac: KFAC | None,
    step: int,
    run_id: str | None,
    timers: dict[str, Any],
    epoch_sums: torch.Tensor,
) -> None:
    generators: list[Any] = [kfac.generator.get_state() if kfac else None]
    sums = epoch_sums.clone()
    if world.distributed:
        generators = [None] * world.size
        dist.all_gather_object(generators, kfac.generator.get_state() if kfac else None)
        dist.all_reduce(sums)  # the partial epoch's training statistics, summed over ranks
    if world.rank == 0:
        kstate = kfac.state_dict() if kfac else None
        if kstate is not None:
            kstate.pop("generator")
        save_checkpoint(
            path,
            {
                "fingerprint": fp,
                "world_size": world.size,
                "config": c,
                "step": step,
                "run_id": run_id,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "kfac": kstate,
                "kfac_generators": generators,
                "rng": _rng_state(),
                "timers": timers,
                "epoch_sums": sums,
            },
        )
    if world.distributed:
        dist.barrier()


def cli() -> None:
    """Console entry point: the Hydra app (``python -m sweeps.train``)."""
    import hydra

    from sweeps.config import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _app(cfg: DictConfig) -> float:
        try:
            result = main(cfg)
        except (ConfigError, TrackingError) as e:
            # A user's mistake: the message names the field and the fix; a traceback adds noise.
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_CONFIG)
        if result["status"] == "preempted":
            sys.exit(EXIT_PREEMPTED)
        return float(result["val_accuracy"])

    _app()


if __name__ == "__main__":
    cli()
