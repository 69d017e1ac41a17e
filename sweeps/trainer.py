"""One training job on one rank: :class:`Trainer`.

:func:`sweeps.train.main` checks the config, joins the process group and runs::

    trainer = Trainer(config, composed, world)  # data, model, optimizer, K-FAC; batch checks
    trainer.run()                               # returns the result dict

and :meth:`Trainer.run` is, in order:

1. :meth:`~Trainer.resume`: continue from the checkpoint, when there is one;
2. :meth:`~Trainer.open_tracking`: the MLflow run (rank 0);
3. :meth:`~Trainer.train`: :meth:`~Trainer.step` until the planned length, with an
   :meth:`~Trainer.evaluate` at each epoch end (and every ``eval_every_steps``); it stops early
   for the target accuracy, a preemption signal, the study's pruner or a non-finite loss
   (in a sweep's trial, each evaluation is reported through the public trial API,
   :mod:`orchestrator.trial`, as any app would);
4. :meth:`~Trainer.result`: the result dict; then the final MLflow metrics and status, the
   trial's final metrics, and the result file next to the checkpoint.

One step is one optimizer step on one global batch: forward, backward, gradient all-reduce
(data-parallel), K-FAC (factors, inverses, preconditioning; skipped for SGD), SGD step, each
phase timed (:data:`PHASES`). Rank 0 logs to MLflow in one ``log_batch`` per window of
``log_every_steps`` steps and per evaluation. SIGTERM or SIGUSR1 makes every rank stop at the
next step boundary; rank 0 writes a checkpoint (model, optimizer, K-FAC state, RNG states, step,
timers, MLflow run id) and the job ends "preempted". Running the same config again resumes it,
into the same MLflow run, and ends where an uninterrupted run would have ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from torch import nn

from orchestrator import trial
from orchestrator.tracking import (
    BatchedLogger,
    connect,
    default_tracking_uri,
    env_tags,
    flatten_params,
    start_or_resume_run,
)
from sweeps.checkpoint import PreemptionFlag, load_checkpoint, save_checkpoint
from sweeps.config import ConfigError, KFACOptimizerConfig, TrainConfig, fingerprint
from sweeps.data import Dataset, batch_indices, epoch_order, load_dataset, steps_per_epoch
from sweeps.distributed import (
    World,
    agree,
    all_reduce_gradients,
    broadcast_state,
    default_threads,
)
from sweeps.kfac import KFAC, KFACSettings
from sweeps.models import build_model, count_parameters
from sweeps.nas import model_cost
from sweeps.schedule import learning_rate, scaled_lr

__all__ = ["PHASES", "Status", "Timers", "Trainer"]

#: How a job ended: ``completed`` (planned length or target accuracy reached), ``preempted``
#: (a signal: checkpoint written, run it again to resume), ``pruned`` (the Optuna study's pruner
#: stopped the trial) or ``diverged`` (the loss became non-finite).
Status = Literal["completed", "preempted", "pruned", "diverged"]

#: The timed phases of a step (``time_<phase>_ms`` metrics, ``step_time_ms`` in the result).
PHASES = ("forward", "backward", "curvature", "inverse", "communication", "update")
_KFAC_PHASES = ("curvature", "inverse", "communication", "precondition")
_EVAL_BATCH = 1024


def _zero_phases() -> dict[str, float]:
    return dict.fromkeys(PHASES, 0.0)


@dataclass
class Timers:
    """Totals a job carries over a preemption (the checkpoint's ``timers`` entry).

    Attributes:
        train_time: Seconds of training steps, evaluation and logging excluded.
        log_time: Seconds spent logging to MLflow.
        to_target: When validation accuracy first reached ``target_accuracy``: ``steps``,
            ``epochs`` and ``time`` (``train_time`` then); None until then.
        best: Best validation accuracy so far.
        phases: Seconds per phase (:data:`PHASES`) over all steps.
    """

    train_time: float = 0.0
    log_time: float = 0.0
    to_target: dict[str, float] | None = None
    best: float = 0.0
    phases: dict[str, float] = field(default_factory=_zero_phases)

    def to_state(self) -> dict[str, Any]:
        """The plain dict a checkpoint stores."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Timers:
        """Read what :meth:`to_state` stored."""
        return cls(**state)


@dataclass
class _Window:
    # Seconds per phase over the steps since the last throughput log (``log_every_steps``).
    seconds: dict[str, float] = field(default_factory=_zero_phases)
    steps: int = 0


class Trainer:
    """A training job on this rank, from a checked config to its result.

    Building one loads the data and builds the model, the SGD optimizer and (for
    ``optimizer=kfac``) K-FAC; :meth:`run` does the rest (see the module's docstring). Every rank
    of a data-parallel job builds one and calls the same methods in the same order: several of
    them are collective.

    Args:
        config: The checked config (:func:`sweeps.config.parse`).
        composed: The same config as composed, a plain dict (:func:`sweeps.config.validate`):
            what the fingerprint hashes, MLflow logs as params and a checkpoint records.
        world: This process's place in the process group.

    Raises:
        ConfigError: ``batch_size`` does not divide over the ranks or exceeds the training set.
    """

    def __init__(self, config: TrainConfig, composed: Mapping[str, Any], world: World) -> None:
        self.config = config
        self.composed = dict(composed)
        self.world = world
        torch.set_num_threads(config.num_threads or default_threads(world.local_size))
        self.data: Dataset = load_dataset(dataclasses.asdict(config.data))
        _check_batch_size(config.batch_size, world, self.data)
        self.steps_per_epoch = steps_per_epoch(len(self.data.x_train), config.batch_size)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.fingerprint = fingerprint(self.composed)
        self.checkpoint_path = _checkpoint_path(config, self.fingerprint)
        self.result_path = self.checkpoint_path.with_suffix(".result.json")
        self.model, self.optimizer, self.kfac = _build(config, self.data, world)
        self.peak_lr = scaled_lr(
            config.optimizer.lr, config.batch_size, config.schedule.base_batch_size
        )
        self._schedule = dataclasses.asdict(config.schedule)
        self._x_train = self.data.x_train.to(world.device)
        self._y_train = self.data.y_train.to(world.device)
        self._order_epoch, self._order = -1, torch.empty(0, dtype=torch.int64)

        # What a checkpoint carries: progress, the MLflow run, totals, the partial epoch's
        # training statistics (loss * n, correct, n since the epoch began, on this rank).
        self.step_count = 0
        self.run_id: str | None = None
        self.timers = Timers()
        self.epoch_sums = torch.zeros(3, dtype=torch.float64)

        self.status: Status = "completed"
        self.logger: BatchedLogger | None = None  # rank 0, when tracking is enabled
        self.last_eval: tuple[float, float] | None = None  # validation loss and accuracy
        self.train_stats: tuple[float | None, float | None] = (None, None)  # last full epoch
        self._run_open = False
        self._window = _Window()
        self._loss_finite = True
        self._prune_now = False
        self._last_loss, self._last_lr = 0.0, 0.0

    # --- The job, start to end -------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Resume, open tracking, train, and report; returns :meth:`result`."""
        self.resume()
        self.open_tracking()
        self.train()
        if self.status == "preempted":
            self.save_checkpoint()
            self._close_run("KILLED")  # until a resume reopens it (RUNNING) and finishes it
        result = self.result()
        if self.status != "preempted":
            self._finish(result)
        if self.world.rank == 0:
            self.result_path.parent.mkdir(parents=True, exist_ok=True)
            self.result_path.write_text(json.dumps(result, indent=2))
            print("result: " + json.dumps(result), flush=True)
        return result

    def resume(self) -> bool:
        """Continue from the checkpoint, when ``checkpoint.resume`` is on and the file exists.

        Restores the model, the optimizer, K-FAC (with this rank's sampler), the RNG states, the
        step, the MLflow run id, the timers and the partial epoch's statistics.

        Returns:
            Whether it resumed.

        Raises:
            ConfigError: The checkpoint was written by another config or world size.
        """
        path = self.checkpoint_path
        if not (self.config.checkpoint.resume and path.exists()):
            return False
        state = load_checkpoint(path)
        if state["fingerprint"] != self.fingerprint or state["world_size"] != self.world.size:
            raise ConfigError(
                "checkpoint.path",
                str(path),
                f"written by another config or world size ({state['world_size']} ranks); "
                "point checkpoint.path elsewhere or set checkpoint.resume=false",
                "checkpoint.resume=false",
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.kfac is not None:
            generator = state["kfac_generators"][self.world.rank]
            self.kfac.load_state_dict({**state["kfac"], "generator": generator})
        _set_rng_state(state["rng"])
        self.step_count, self.run_id = state["step"], state["run_id"]
        self.timers = Timers.from_state(state["timers"])
        # Rank 0 carries the ranks' summed partial-epoch statistics; the epoch end sums again.
        if self.world.rank == 0:
            self.epoch_sums = state["epoch_sums"]
        return True

    def open_tracking(self) -> None:
        """Open the MLflow run on rank 0 (reopen it after a resume).

        Raises:
            Exception: Rank 0's error opening the run, on rank 0; a RuntimeError on the other
                ranks, which learn of it so that none waits forever in a collective.
        """
        failure: Exception | None = None
        try:
            self.logger = _open_run(
                self.config, self.composed, self.fingerprint, self.world, self.run_id
            )
        except Exception as e:  # re-raised below, once every rank knows (else they would hang)
            failure = e
        if agree([failure is not None], self.world)[0]:
            if failure is not None:
                raise failure
            raise RuntimeError("rank 0 could not open the MLflow run; its error says why")
        if self.logger is not None:
            self.run_id = self.logger.run_id
            self._run_open = True

    def train(self) -> Status:
        """Step until the planned length, the target accuracy, or a reason to stop.

        Returns:
            :attr:`status`: ``completed`` at the planned length or the target accuracy; else
            why every rank stopped at this step boundary.
        """
        self.model.train()
        with PreemptionFlag() as flag:
            while self.step_count < self.total_steps:
                started = time.perf_counter()
                stop = self._agree_to_stop(flag)
                agree_time = time.perf_counter() - started
                if stop is not None:
                    self.status = stop
                    break
                self.step(agree_time)
                self._log_window_when_full()
                if self._evaluation_due() and self._evaluate_and_report():
                    break  # the target accuracy is reached
                every = self.config.checkpoint.every_steps
                if every and self.step_count % every == 0:
                    self.save_checkpoint()
        return self.status

    def abandon(self) -> None:
        """After a crash: mark the MLflow run FAILED (not RUNNING forever) if it is open."""
        if self.logger is not None and self._run_open:
            self._run_open = False
            with contextlib.suppress(Exception):
                self.logger.finish("FAILED")

    # --- One step ------------------------------------------------------------------------------

    def step(self, agree_time: float = 0.0) -> None:
        """One optimizer step on the next global batch (this rank's share of it).

        Sets the scheduled learning rate; forward, backward, gradient all-reduce, K-FAC, SGD
        step, each timed; adds the batch to the epoch's training statistics.

        Args:
            agree_time: Seconds spent just before, agreeing with the other ranks to go on
                (counted as communication and as training time).
        """
        inputs, labels = self._next_batch()
        lr = learning_rate(
            self._schedule, self.peak_lr, self.step_count, self.total_steps, self.steps_per_epoch
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        _sync(self.world)
        t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=False)
        outputs: torch.Tensor = self.model(inputs)
        loss = F.cross_entropy(outputs, labels)
        _sync(self.world)
        t1 = time.perf_counter()
        # The sampled-Fisher backward runs inside the forward (a model hook): count it once.
        in_forward = self.kfac.timings["curvature"] if self.kfac else 0.0
        loss.backward()  # type: ignore[no-untyped-call]  # unannotated in torch
        _sync(self.world)
        t2 = time.perf_counter()
        if self.world.distributed:
            all_reduce_gradients(self.model, self.world.size)
        t3 = time.perf_counter()
        if self.kfac is not None:
            self.kfac.step(lr)
        t4 = time.perf_counter()
        self.optimizer.step()
        _sync(self.world)
        t5 = time.perf_counter()
        kfac = self.kfac.pop_timings() if self.kfac else dict.fromkeys(_KFAC_PHASES, 0.0)
        spent = {
            "forward": t1 - t0 - in_forward,
            "backward": t2 - t1,
            "communication": (t3 - t2) + kfac["communication"] + agree_time,
            "curvature": kfac["curvature"],
            "inverse": kfac["inverse"],
            "update": (t5 - t4) + kfac["precondition"],
        }
        self._add_times(spent, t5 - t0 + agree_time)
        self._last_lr = lr
        with torch.no_grad():
            self._last_loss = float(loss)
            correct = float((outputs.argmax(1) == labels).sum())
            self.epoch_sums += torch.tensor(
                [self._last_loss * len(labels), correct, len(labels)], dtype=torch.float64
            )
        self.step_count += 1
        self._loss_finite = bool(torch.isfinite(loss.detach()))

    def _agree_to_stop(self, flag: PreemptionFlag) -> Status | None:
        # A signal may reach one rank only, and a loss may turn non-finite on one shard only:
        # every rank leaves at the same step, or the others hang in the next collective.
        preempted, diverged, pruned = agree(
            [flag.received is not None, not self._loss_finite, self._prune_now], self.world
        )
        if diverged:
            return "diverged"  # a sweep's too-large learning rate: stop, report, go on
        if preempted:
            return "preempted"
        if pruned:
            return "pruned"  # the study's pruner stopped this trial (decided by rank 0)
        return None

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # The same batches whatever the number of ranks, and after a resume.
        epoch, step_in_epoch = divmod(self.step_count, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order_epoch = epoch
            self._order = epoch_order(len(self.data.x_train), self.config.seed, epoch)
        idx = batch_indices(
            self._order,
            batch_size=self.config.batch_size,
            step_in_epoch=step_in_epoch,
            rank=self.world.rank,
            world=self.world.size,
        )
        return self._x_train[idx], self._y_train[idx]

    def _add_times(self, spent: Mapping[str, float], step_time: float) -> None:
        for phase in PHASES:
            self._window.seconds[phase] += spent[phase]
            self.timers.phases[phase] += spent[phase]
        self._window.steps += 1
        self.timers.train_time += step_time

    def _log_window_when_full(self) -> None:
        # Throughput and step-time metrics once per window of log_every_steps steps.
        if self._window.steps != self.config.log_every_steps:
            return
        if self.logger is not None:
            self.timers.log_time += self._log_window(self.logger)
        self._window = _Window()
        if self.world.rank == 0:
            print(
                f"step={self.step_count} loss={self._last_loss:.4f} lr={self._last_lr:.4g}",
                flush=True,
            )

    def _log_window(self, logger: BatchedLogger) -> float:
        start = time.perf_counter()
        seconds, n = self._window.seconds, self._window.steps
        busy = sum(seconds[p] for p in PHASES)
        metrics = {f"time_{p}_ms": 1000 * seconds[p] / n for p in PHASES}
        metrics |= {
            "step_time_ms": 1000 * busy / n,
            "samples_per_sec": n * self.config.batch_size / busy if busy else 0.0,
            "lr": self._last_lr,
            # Logging so far over training so far (this flush is counted in the next window).
            "log_time_fraction": self.timers.log_time / max(self.timers.train_time, 1e-9),
        }
        logger.log_metrics(metrics, self.step_count)
        logger.flush()
        return time.perf_counter() - start

    # --- Evaluation ----------------------------------------------------------------------------

    def evaluate(self, split: Literal["val", "train"] = "val") -> tuple[float, float]:
        """Loss (mean cross-entropy) and accuracy of this rank's model on the validation set, or
        on the whole training set (``split="train"``, once at the end of a run: the running mean
        of an epoch's batches is no measure of the final model)."""
        data, device = self.data, self.world.device
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_train, data.y_train)
        self.model.eval()
        loss, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(x), _EVAL_BATCH):
                xb = x[start : start + _EVAL_BATCH].to(device)
                yb = y[start : start + _EVAL_BATCH].to(device)
                out: torch.Tensor = self.model(xb)
                loss += float(F.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
        self.model.train()
        return loss / len(x), correct / len(x)

    def _end_of_epoch(self) -> bool:
        return self.step_count % self.steps_per_epoch == 0

    def _evaluation_due(self) -> bool:
        every = self.config.eval_every_steps
        return (
            self._end_of_epoch()
            or bool(every and self.step_count % every == 0)
            or self.step_count == self.total_steps
        )

    def _evaluate_and_report(self) -> bool:
        # Evaluate; close the epoch at its end; note the target; report to the trial and to
        # MLflow. True: the target accuracy is reached.
        if self.world.distributed:
            broadcast_state(self.model)  # BatchNorm statistics differ per rank
        self.last_eval = self.evaluate()
        val_loss, val_accuracy = self.last_eval
        self.timers.best = max(self.timers.best, val_accuracy)
        metrics = {"val_loss": val_loss, "val_accuracy": val_accuracy}
        if self._end_of_epoch():
            metrics |= self._close_epoch()
        metrics |= self._note_target(val_accuracy)
        if self.world.rank == 0:
            # A trial of the orch_optuna sweeper (no-ops otherwise): rank 0 reports the sweep's
            # `report` metric and asks the pruner; every rank stops on its answer (see
            # _agree_to_stop).
            trial.report(metrics, self.step_count)
            self._prune_now = trial.should_prune()
        if self.logger is not None:
            start = time.perf_counter()
            self.logger.log_metrics(metrics, self.step_count)
            self.logger.flush()
            self.timers.log_time += time.perf_counter() - start
        return self.timers.to_target is not None

    def _close_epoch(self) -> dict[str, float]:
        loss, accuracy = _mean_loss_and_accuracy(self._summed_epoch_sums())
        self.train_stats = (loss, accuracy)
        self.epoch_sums.zero_()
        return {
            "train_loss": loss,
            "train_accuracy": accuracy,
            "epoch": self.step_count / self.steps_per_epoch,
        }

    def _note_target(self, val_accuracy: float) -> dict[str, float]:
        # The first time validation accuracy reaches target_accuracy: record it and log it.
        target, timers, step = self.config.target_accuracy, self.timers, self.step_count
        if target is not None and timers.to_target is None and val_accuracy >= target:
            epochs = step / self.steps_per_epoch
            timers.to_target = {"steps": step, "epochs": epochs, "time": timers.train_time}
            return {
                "time_to_target_s": timers.train_time,
                "steps_to_target": step,
                "epochs_to_target": epochs,
            }
        return {}

    def _summed_epoch_sums(self) -> torch.Tensor:
        sums = self.epoch_sums.clone()
        if self.world.distributed:
            dist.all_reduce(sums)
        return sums

    # --- Checkpoint and result -----------------------------------------------------------------

    def save_checkpoint(self) -> None:
        """Write the checkpoint (rank 0; collective: every rank calls it)."""
        kfac = self.kfac
        generators: list[Any] = [kfac.generator.get_state() if kfac else None]
        sums = self.epoch_sums.clone()
        if self.world.distributed:
            generators = [None] * self.world.size
            dist.all_gather_object(generators, kfac.generator.get_state() if kfac else None)
            dist.all_reduce(sums)  # the partial epoch's training statistics, summed over ranks
        if self.world.rank == 0:
            kfac_state = kfac.state_dict() if kfac else None
            if kfac_state is not None:
                kfac_state.pop("generator")  # each rank's is in kfac_generators
            state = {
                "fingerprint": self.fingerprint,
                "world_size": self.world.size,
                "config": self.composed,
                "step": self.step_count,
                "run_id": self.run_id,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "kfac": kfac_state,
                "kfac_generators": generators,
                "rng": _rng_state(),
                "timers": self.timers.to_state(),
                "epoch_sums": sums,
            }
            save_checkpoint(self.checkpoint_path, state)
        if self.world.distributed:
            dist.barrier()

    def result(self) -> dict[str, Any]:
        """The job's result (the keys :func:`sweeps.train.main` lists); collective.

        Evaluates first when training stopped before any evaluation.
        """
        if self.last_eval is None:
            self.last_eval = self.evaluate()
        val_loss, val_accuracy = self.last_eval
        sums = self._summed_epoch_sums()
        peak = self._peak_memory_per_rank()
        train_loss, train_accuracy = self.train_stats
        if sums[2] > 0:  # a partial epoch since the last epoch end: report it rather than the last
            train_loss, train_accuracy = _mean_loss_and_accuracy(sums)
        timers, step, target = self.timers, self.step_count, self.timers.to_target
        result: dict[str, Any] = {
            "status": self.status,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "best_val_accuracy": max(timers.best, val_accuracy),
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "steps": step,
            "epochs": step / self.steps_per_epoch,
            "reached_target": target is not None,
            "steps_to_target": target["steps"] if target else None,
            "epochs_to_target": target["epochs"] if target else None,
            "time_to_target_s": target["time"] if target else None,
            "train_time_s": timers.train_time,
            "log_time_s": timers.log_time,
            "log_batch_calls": self.logger.calls if self.logger is not None else 0,
            # Mean per step over the whole run (this process; ranks differ little).
            "step_time_ms": {p: 1000 * v / max(step, 1) for p, v in timers.phases.items()},
            "samples_per_sec": (
                step * self.config.batch_size / timers.train_time if timers.train_time else None
            ),
            "peak_memory_mb": peak[0],
            "peak_memory_mb_per_rank": peak,
            "parameters": count_parameters(self.model),
            "run_id": self.run_id,
            "checkpoint": str(self.checkpoint_path),
            "world_size": self.world.size,
        }
        if self.status != "preempted":
            final_loss, final_accuracy = self.evaluate("train")
            result["final_train_loss"] = final_loss
            result["final_train_accuracy"] = final_accuracy
            result["diverged"] = divergence(
                self.status, final_loss, val_accuracy, self.data.num_classes
            )
        if self.status != "preempted" and self.world.rank == 0:
            result |= model_cost(self.model, self.data.shape)
        return result

    def _finish(self, result: dict[str, Any]) -> None:
        # A job that ended (not preempted): its metrics on the trial, the final metrics and status
        # in MLflow, and no checkpoint left for a rerun to "resume".
        if self.world.rank == 0:
            trial.set_metrics(result)  # the sweeper reads `objectives` from them
        if self.logger is not None:
            final = {
                "final_val_accuracy": result["val_accuracy"],
                "final_train_accuracy": result["final_train_accuracy"],
                "final_train_loss": result["final_train_loss"],
                "train_time_s": self.timers.train_time,
                "n_params": result["n_params"],
                "latency_ms": result["latency_ms"],
            }
            self.logger.log_metrics(final, self.step_count)
            tags = {"status": self.status}
            if result["diverged"] is not None:
                tags["diverged"] = result["diverged"]
            self.logger.set_tags(tags)
            self._close_run("FINISHED" if self.status in ("completed", "pruned") else "FAILED")
            result["log_batch_calls"] = self.logger.calls
        if self.world.rank == 0:
            self.checkpoint_path.unlink(missing_ok=True)

    def _close_run(self, status: str) -> None:
        if self.logger is not None:
            self.logger.finish(status)
            self._run_open = False

    def _peak_memory_per_rank(self) -> list[Any]:
        if not self.world.distributed:
            return [_peak_memory_mb(self.world)]
        peak: list[Any] = [None] * self.world.size
        dist.all_gather_object(peak, _peak_memory_mb(self.world))
        return peak


# --- Building blocks -----------------------------------------------------------------------------


def divergence(status: str, train_loss: float, val_accuracy: float, classes: int) -> str | None:
    """Why a finished run counts as diverged, or None.

    A non-finite loss (the run stopped as ``diverged``); a final training loss above
    ``ln(classes)``, the loss of guessing uniformly, near which a freshly initialised network
    starts (so above the initial loss); or a validation accuracy within 20 % of chance
    (``1 / classes``). Such runs say nothing of generalisation: the report leaves them out.

    >>> divergence("completed", 0.3, 0.9, 10) is None
    True
    >>> divergence("completed", 5.1, 0.25, 10)
    'final training loss 5.1 above ln(10) = 2.3, the loss of a uniform guess'
    """
    if status == "diverged" or not math.isfinite(train_loss):
        return "the loss became non-finite"
    uniform = math.log(classes)
    if train_loss > uniform:
        return (
            f"final training loss {train_loss:.2g} above ln({classes}) = {uniform:.2g}, "
            "the loss of a uniform guess"
        )
    if val_accuracy <= 1.2 / classes:
        return f"validation accuracy {val_accuracy:.2g} within 20 % of chance (1/{classes})"
    return None


def _check_batch_size(batch_size: int, world: World, data: Dataset) -> None:
    if batch_size % world.size:
        raise ConfigError(
            "batch_size",
            batch_size,
            f"must divide evenly over WORLD_SIZE={world.size} ranks",
            f"batch_size={max(world.size, batch_size - batch_size % world.size)}",
        )
    n_train = len(data.x_train)
    if batch_size > n_train:
        raise ConfigError(
            "batch_size",
            batch_size,
            f"larger than the {n_train} training samples of data={data.name}",
            f"batch_size={n_train}",
        )


def _checkpoint_path(config: TrainConfig, fingerprint: str) -> Path:
    given = config.checkpoint.path
    return Path(given) if given else Path.cwd() / "checkpoints" / f"{fingerprint}.pt"


def _build(
    config: TrainConfig, data: Dataset, world: World
) -> tuple[nn.Module, torch.optim.SGD, KFAC | None]:
    # The model (seeded; rank 0's weights on every rank), SGD, and K-FAC for optimizer=kfac.
    torch.manual_seed(config.seed)
    model = build_model(dataclasses.asdict(config.model), data.shape, data.num_classes)
    model = model.to(world.device)
    if world.distributed:
        broadcast_state(model)
    opt = config.optimizer
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=opt.lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        weight_decay=opt.weight_decay,
    )
    kfac = None
    if isinstance(opt, KFACOptimizerConfig):
        settings = KFACSettings.from_config(dataclasses.asdict(opt.kfac), seed=config.seed)
        kfac = KFAC(model, settings)
    return model, optimizer, kfac


def _open_run(
    config: TrainConfig,
    composed: Mapping[str, Any],
    fingerprint: str,
    world: World,
    run_id: str | None,
) -> BatchedLogger | None:
    # Rank 0's MLflow run: a new one (its params: the whole composed config, flattened), or
    # the checkpoint's, reopened.
    if world.rank != 0 or not config.tracking.enabled:
        return None
    client = connect(config.tracking.uri or default_tracking_uri())
    name = config.run_name or (
        f"{config.model.name}-{config.data.name}-{config.optimizer.name}"
        f"-bs{config.batch_size}-s{config.seed}"
    )
    tags = {
        "optimizer": config.optimizer.name,
        "model": config.model.name,
        "data": config.data.name,
        "world_size": str(world.size),
        "fingerprint": fingerprint,
        **env_tags(),
        **_sweep_tags(),
    }
    resumed = run_id is not None
    run_id = start_or_resume_run(client, config.tracking.experiment, name, tags, run_id)
    logger = BatchedLogger(client, run_id)
    if not resumed:
        logger.log_params(flatten_params(composed))
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


def _mean_loss_and_accuracy(sums: torch.Tensor) -> tuple[float, float]:
    # From the summed (loss * n, correct, n).
    return sums[0].item() / sums[2].item(), sums[1].item() / sums[2].item()


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
