"""The public trial API (``from orchestrator import trial``) and the sweeper settings around it.

A user's own Hydra app (``tests/hydra/apps/trial_app.py``, not ``sweeps.train``) reports a
learning curve under ``hydra/sweeper=orch_optuna`` and is pruned; outside a sweep every call is a
no-op; importing the module loads nothing heavy; ``hydra.launcher.detach=true`` is refused; the
``grid`` sampler enumerates choice/range parameters and refuses intervals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import product
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from hydra_plugins.orch_optuna_sweeper._core import make_sampler
from hydra_plugins.orch_optuna_sweeper._space import parse_space
from orchestrator import trial
from orchestrator.trial import (
    ENV_PARAMS,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL_ID,
    SweepConfigError,
    make_pruner,
    open_storage,
)
from tests.hydra.sweep_test_helpers import APPS, objective_app, run

HEAVY = ("optuna", "torch", "numpy", "sqlalchemy", "hydra", "omegaconf", "mlflow", "pandas")
ENV = (ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID, ENV_PARAMS)


def trial_app(*overrides: str) -> list[str]:
    return [sys.executable, str(APPS / "trial_app.py"), "-m", *overrides]


def _study(journal: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal}"))


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV, "RANK"):
        monkeypatch.delenv(name, raising=False)


# -- outside a sweep ------------------------------------------------------------------------------

PROBE = """
import json, sys
from orchestrator import trial
trial.report(0.5, 1)
trial.report({"val_accuracy": 0.5}, 2)
assert trial.should_prune() is False
assert dict(trial.params) == {}
trial.set_metrics({"val_accuracy": 0.5})
import orchestrator
assert orchestrator.trial is trial
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def test_importing_and_using_it_outside_a_sweep_loads_nothing_heavy() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_import_probe_sees_a_heavy_import() -> None:
    # The probe above can fail: importing the sweeper's side does load optuna.
    probe = "import json, sys, optuna; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "optuna" in json.loads(out.stdout)


def test_outside_a_sweep_every_call_is_a_no_op(no_sweep: None) -> None:
    assert trial.report(0.3, 0) is None
    assert trial.report({"val_accuracy": 0.3}, 1) is None
    assert trial.should_prune() is False
    assert dict(trial.params) == {}
    with pytest.raises(TypeError):
        trial.params["lr"] = 0.1  # type: ignore[index]  # read-only
    assert trial.set_metrics({"val_accuracy": 0.3}) is None
    # A bad step is a bug in the app: said outside a sweep too, not first on the cluster.
    with pytest.raises(ValueError, match="step"):
        trial.report(0.3, -1)
    with pytest.raises(TypeError, match="step"):
        trial.report(0.3, 1.5)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        _ = trial.paramz  # type: ignore[attr-defined]


# -- inside a sweep, in this process -------------------------------------------------------------


def _poor_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: str) -> optuna.Study:
    """A study with finished good trials, and the environment of a new trial of it."""
    storage = f"journal:{tmp_path}/api.journal"
    pruner = {"name": "median", "n_startup_trials": 2}
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name="api",
        direction="maximize",
        pruner=make_pruner(pruner),
    )
    study.set_user_attr("orch.pruner", pruner)
    study.set_user_attr("orch.report", report)
    space = {"optimizer": CategoricalDistribution(("sgd", "kfac"))}
    for _ in range(3):
        good = study.ask(space)
        for step in range(1, 6):
            good.report(0.9, step)
        study.tell(good, 0.9)
    poor = study.ask(space)
    monkeypatch.setenv(ENV_STORAGE, storage)
    monkeypatch.setenv(ENV_STUDY, "api")
    monkeypatch.setenv(ENV_TRIAL_ID, str(poor._trial_id))
    monkeypatch.setenv(ENV_PARAMS, json.dumps(poor.params))
    monkeypatch.delenv("RANK", raising=False)
    return study


def test_in_a_trial_it_reports_prunes_and_gives_the_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _poor_trial(tmp_path, monkeypatch, report="val_accuracy")
    number = study.trials[-1].number
    assert dict(trial.params) == study.trials[-1].params
    # A mapping: the sweep's `report` metric is taken from it; a plain number is reported as is.
    trial.report({"val_loss": 2.0, "val_accuracy": 0.1}, 1)
    trial.report(float("nan"), 2)  # not finite: not reported
    trial.report(0.2, 3)
    trial.report({"val_loss": 2.0}, 4)  # no `report` metric in it: not reported
    assert study.trials[number].intermediate_values == {1: 0.1, 3: 0.2}
    assert trial.should_prune() is True
    trial.set_metrics({"steps": 3, "val_accuracy": 0.2, "note": "text is dropped"})
    attrs = study.trials[number].user_attrs
    assert attrs["orch.status"] == "pruned"  # the sweeper tells Optuna PRUNED from this
    assert attrs["orch.metrics"] == {"steps": 3.0, "val_accuracy": 0.2}


def test_only_rank_0_talks_to_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _poor_trial(tmp_path, monkeypatch, report="val_accuracy")
    number = study.trials[-1].number
    monkeypatch.setenv("RANK", "1")
    trial.report(0.1, 1)
    assert trial.should_prune() is False
    assert dict(trial.params) == study.trials[-1].params  # every rank knows its parameters
    assert study.trials[number].intermediate_values == {}


# -- a user's Hydra app under the sweeper ---------------------------------------------------------


def _sweep(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return trial_app(
        "hydra/launcher=orch",
        "hydra/sweeper=orch_optuna",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage=journal:{tmp_path}/{name}.journal",
        f"hydra.sweep.dir={tmp_path}/{name}",
        *extra,
    )


@pytest.mark.parametrize("raise_pruned", [False, True])
def test_a_users_app_is_pruned(tmp_path: Path, raise_pruned: bool) -> None:
    """A bad curve (slope 0.1 against 1.0) is stopped by the median pruner once two trials have
    finished, whether the app returns early or raises ``optuna.TrialPruned``."""
    steps = 6
    run(
        _sweep(
            tmp_path,
            "user",
            "+slope=choice(1.0, 0.1)",
            f"+steps={steps}",
            f"+raise_pruned={str(raise_pruned).lower()}",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.n_jobs=1",  # in order: the startup trials finish first
            "hydra.sweeper.sampler.name=random",
            "hydra.sweeper.sampler.seed=0",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.pruner.n_startup_trials=2",
        ),
        tmp_path,
    )
    trials = _study(tmp_path / "user.journal", "user").trials
    assert len(trials) == 6
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    assert pruned, [(t.params, t.state, t.intermediate_values) for t in trials]
    for t in pruned:
        assert t.params["slope"] == 0.1
        assert max(t.intermediate_values) < steps  # really stopped early
    for t in trials:
        if t.params["slope"] == 1.0:
            assert t.state is TrialState.COMPLETE
            assert max(t.intermediate_values) == steps
            assert t.value == steps * 1.0
    summary = OmegaConf.load(tmp_path / "user" / "optimization_results.yaml")
    assert summary.this_sweep.n_pruned == len(pruned)
    assert summary.this_sweep.n_failed == 0


# -- settings the sweeper refuses or gains --------------------------------------------------------


def test_detach_is_refused(tmp_path: Path) -> None:
    """The asynchronous sweeper tells Optuna each result as its job ends: a detached sweep could
    not, so `hydra.launcher.detach=true` is refused before any trial starts."""
    with pytest.raises(AssertionError, match=r"hydra\.launcher\.detach") as info:
        run(
            objective_app(
                "hydra/launcher=orch",
                "hydra/sweeper=orch_optuna",
                "+x=interval(0.0, 1.0)",
                "hydra.launcher.detach=true",
                f"hydra.sweeper.storage=journal:{tmp_path}/detach.journal",
                f"hydra.sweep.dir={tmp_path}/detach",
            ),
            tmp_path,
        )
    assert "attached" in str(info.value)
    assert not (tmp_path / "detach.journal").exists()  # refused before the study was opened


def test_grid_runs_every_point_once(tmp_path: Path) -> None:
    """`sampler.name=grid`: each point of the choice x range grid once (n_trials, 20 by
    default, is capped at the grid's 4 points), asynchronously."""
    run(
        _sweep(
            tmp_path,
            "grid",
            "+slope=choice(1.0, 0.5)",
            "+steps=range(2, 4)",
            "hydra.sweeper.sampler.name=grid",
            "hydra.sweeper.n_jobs=2",
        ),
        tmp_path,
    )
    trials = _study(tmp_path / "grid.journal", "grid").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    points = sorted((t.params["slope"], t.params["steps"]) for t in trials)
    assert points == sorted(product([1.0, 0.5], [2, 3]))
    assert all(t.value == t.params["slope"] * t.params["steps"] for t in trials)


def test_grid_refuses_an_interval() -> None:
    grid = {"name": "grid", "seed": 0}
    sampler = make_sampler(
        grid, 1, parse_space({"a": "choice(x, y)", "b": "range(1, 4)", "c": "range(0.1,0.3,0.1)"})
    )
    assert isinstance(sampler, optuna.samplers.GridSampler)
    for text in ("interval(0.0, 1.0)", "tag(log, interval(1e-4, 1e-1))", "interval(1, 8)"):
        space = parse_space({"a": "choice(x, y)", "optimizer.lr": text})
        with pytest.raises(SweepConfigError, match=r"hydra\.sweeper\.params\.optimizer\.lr"):
            make_sampler(grid, 1, space)
    with pytest.raises(SweepConfigError, match="grid"):
        make_sampler({"name": "annealing"}, 1, parse_space({"a": "choice(x, y)"}))
