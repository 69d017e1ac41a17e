"""The asynchronous Optuna sweeper, end to end: real Hydra apps, real jobs, a real study.

The pruning and NAS sweeps run the real training job (``python -m sweeps.train``) as jobs of
the embedded scheduler; resume and failure handling use a tiny objective app.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.trial import TrialState
from sweep_test_helpers import free_port, objective_app, run, train_app, wait_port

from hydra_plugins.orch_optuna_sweeper._space import parse_space
from hydra_plugins.orch_optuna_sweeper.orch_optuna_sweeper import OrchOptunaSweeper
from orchestrator.demo import read_sweep
from sweeps.nas import pareto_front
from sweeps.trial_link import SweepConfigError, make_pruner, open_storage


def _study(journal: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{journal}"))


def test_discovery() -> None:
    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert OrchOptunaSweeper.__name__ in names


def test_search_space_grammar() -> None:
    space = parse_space(
        {
            "optimizer.lr": "tag(log, interval(1e-4, 1.0))",
            "model.depth": "range(1, 5)",
            "model.kernel_sizes": "choice([3,3],[5,5])",
            "batch_size": "64",
        },
        ["optimizer=sgd,kfac"],
    )
    d = space.distributions
    assert isinstance(d["optimizer.lr"], optuna.distributions.FloatDistribution)
    assert d["optimizer.lr"].log
    assert (d["model.depth"].low, d["model.depth"].high) == (1, 4)  # Hydra's range: 5 excluded
    assert d["model.kernel_sizes"].choices == ("[3,3]", "[5,5]")
    assert d["optimizer"].choices == ("sgd", "kfac")
    assert space.fixed == ["batch_size=64"]
    assert "model.kernel_sizes=[5,5]" in space.overrides({"model.kernel_sizes": "[5,5]"})
    with pytest.raises(SweepConfigError, match=r"hydra\.sweeper\.params\.x"):
        parse_space({"x": "glob(*)"})


def test_resume_and_failure_records(tmp_path: Path) -> None:
    """A failed trial is a record, within max_failure_rate; a restarted sweep resumes its study
    (finished trials count, a trial left RUNNING is run again), and exceeding the failure rate
    stops the sweep with an error that says so."""
    journal = tmp_path / "study.journal"
    common = [
        "hydra/launcher=orch",
        "hydra/sweeper=orch_optuna",
        "+x=interval(0.0, 1.0)",
        f"hydra.sweeper.storage=journal:{journal}",
        "hydra.sweeper.sampler.name=random",
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.max_failure_rate=0.5",
    ]
    obj = ["+fail_above=0.8", "hydra.sweeper.study_name=obj"]
    run(
        objective_app(*common, *obj, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={tmp_path}/a"),
        tmp_path,
    )
    study = _study(journal, "obj")
    assert len(study.trials) == 6
    failed = [t for t in study.trials if t.state is TrialState.FAIL]
    assert all(t.params["x"] > 0.8 for t in failed)
    assert all(t.state is TrialState.COMPLETE for t in study.trials if t.params["x"] <= 0.8)

    # A sweep that died leaves a trial RUNNING: the next run fails it and runs its params again.
    stale = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    stale_x = stale.params["x"]
    run(
        objective_app(*common, *obj, "hydra.sweeper.n_trials=9", f"hydra.sweep.dir={tmp_path}/b"),
        tmp_path,
    )
    study = _study(journal, "obj")
    done = [t for t in study.trials if t.state.is_finished()]
    assert len(done) == 9  # n_trials: 6 earlier + the stale one (failed) + 2 new ones
    assert study.trials[stale.number].state is TrialState.FAIL
    assert any(t.params["x"] == stale_x for t in study.trials[stale.number + 1 :])
    summary = OmegaConf.load(tmp_path / "b" / "optimization_results.yaml")
    assert sum(summary.this_sweep.values()) == 2
    assert summary.best_value == max(t.value for t in study.trials if t.value is not None)

    # Every trial fails: above max_failure_rate the sweep stops with the reason.
    with pytest.raises(AssertionError, match="max_failure_rate"):
        run(
            objective_app(
                *common,
                "hydra.sweeper.study_name=all-fail",
                "+fail_above=-1",
                "hydra.sweeper.n_trials=4",
                f"hydra.sweep.dir={tmp_path}/c",
            ),
            tmp_path,
        )


def test_async_sweep_with_pruning(tmp_path: Path) -> None:
    """Trials of the real training job: pruned ones stop early (fewer steps reported), complete
    ones run to the end, and a freed slot is refilled while the other trial still runs."""
    journal = tmp_path / "prune.journal"
    max_steps, n_jobs = 100, 2
    run(
        train_app(
            "hydra/launcher=orch",
            "hydra/sweeper=orch_optuna",
            "data=digits",
            f"max_steps={max_steps}",
            "eval_every_steps=10",
            "log_every_steps=10",
            "num_threads=1",
            "tracking.enabled=false",
            "optimizer.lr=choice(0.0001, 0.05)",
            "hydra.sweeper.study_name=prune",
            f"hydra.sweeper.storage=journal:{journal}",
            "hydra.sweeper.n_trials=8",
            f"hydra.sweeper.n_jobs={n_jobs}",
            "hydra.sweeper.sampler.name=random",
            "hydra.sweeper.sampler.seed=0",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.pruner.n_startup_trials=2",
            "hydra.sweeper.pruner.n_warmup_steps=10",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ),
        tmp_path,
        timeout=600,
    )
    study = _study(journal, "prune")
    trials = study.trials
    assert len(trials) == 8
    pruned = [t for t in trials if t.state is TrialState.PRUNED]
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert pruned, [(t.params, t.state, t.intermediate_values) for t in trials]
    for t in pruned:
        assert max(t.intermediate_values) < max_steps  # really stopped early
        assert t.user_attrs["orch.status"] == "pruned"
        assert t.user_attrs["orch.metrics"]["steps"] < max_steps
    for t in complete:
        assert max(t.intermediate_values) == max_steps
        assert t.user_attrs["orch.metrics"]["steps"] == max_steps
    # Refilled slots: a trial after the first n_jobs starts while another trial still runs
    # (a synchronous batch would start each batch's first trial with nothing running).
    overlapped = 0
    for j in trials[n_jobs:]:
        assert j.datetime_start is not None
        if any(
            i.number != j.number
            and i.datetime_start is not None
            and i.datetime_complete is not None
            and i.datetime_start < j.datetime_start < i.datetime_complete
            for i in trials
        ):
            overlapped += 1
    assert overlapped >= (len(trials) - n_jobs) // 2, overlapped


def test_nas_pareto_front(tmp_path: Path) -> None:
    """experiment=nas, shrunk: a multi-objective study (accuracy up, latency down) whose Pareto
    front is written and whose trials nest under the sweep's MLflow parent run."""
    from mlflow import MlflowClient

    journal = tmp_path / "nas.journal"
    db = tmp_path / "mlflow.db"
    run(
        train_app(
            "experiment=nas",
            "max_steps=30",
            f"tracking.uri=sqlite:///{db}",
            f"hydra.sweeper.storage=journal:{journal}",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=3",
            "hydra.sweeper.sampler.population_size=3",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ),
        tmp_path,
        timeout=600,
    )
    study = _study(journal, "nas")
    complete = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert len(complete) == 3
    summary = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    front = {p.number for p in summary.pareto_front}
    points = [t.values for t in complete]
    expected = {complete[i].number for i in pareto_front(points, [True, False])}
    assert front == expected
    for t in complete:
        assert set(t.params) == {
            "model.kind",
            "model.depth",
            "model.width",
            "model.kernel_sizes",
            "model.skip",
            "model.activation",
        }
        assert t.values[1] > 0  # latency in ms, measured

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("nas")
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`orch.role` = 'sweep'")
    assert parent.data.tags["orch.study"] == "nas"
    assert parent.data.metrics["n_complete"] == 3
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    for child in children:
        assert child.data.tags["orch.role"] == "trial"
        assert child.data.tags["orch.sweep_id"] == parent.data.tags["orch.sweep_id"]
        assert {"n_params", "latency_ms", "val_accuracy"} <= set(child.data.metrics)
    # The demo's reader (orchestrator/demo.py) finds the latest sweep and its trials the same way.
    summary_run, rows = read_sweep(f"sqlite:///{db}", "nas")
    assert summary_run["run_id"] == parent.info.run_id
    assert len(rows) == 3 and all(r.val_accuracy is not None for r in rows)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"name": "none"}, optuna.pruners.NopPruner),
        ({"name": "median", "n_startup_trials": 2}, optuna.pruners.MedianPruner),
        ({"name": "asha", "min_resource": 10}, optuna.pruners.SuccessiveHalvingPruner),
        ({"name": "hyperband", "max_resource": 100}, optuna.pruners.HyperbandPruner),
    ],
)
def test_pruners(spec: dict[str, object], kind: type) -> None:
    assert isinstance(make_pruner(spec), kind)


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(SweepConfigError, match=r"hydra\.sweeper\.pruner\.name"):
        make_pruner({"name": "sometimes"})
    with pytest.raises(SweepConfigError, match=r"hydra\.sweeper\.storage"):
        open_storage("somewhere")
    journal = open_storage(f"journal:{tmp_path}/a/s.journal")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path}/s.db"), optuna.storages.RDBStorage)
    try:
        import grpc  # noqa: F401
    except ImportError:
        with pytest.raises(SweepConfigError, match="grpcio"):
            open_storage("grpc://127.0.0.1:13000")
    with pytest.raises(AssertionError, match=r"hydra\.sweeper\.direction"):
        run(
            objective_app(
                "hydra/launcher=orch",
                "hydra/sweeper=orch_optuna",
                "+x=interval(0.0, 1.0)",
                "hydra.sweeper.direction=sideways",
                f"hydra.sweep.dir={tmp_path}/bad",
            ),
            tmp_path,
        )


def test_sweep_through_grpc_storage_proxy(tmp_path: Path) -> None:
    """Nodes without a shared file system: `orch sweep storage-proxy` serves the study over
    Optuna's gRPC proxy; the sweeper and the jobs (reporting, pruning) reach it by URL only."""
    journal = tmp_path / "proxied.journal"
    port = free_port()
    orch = str(Path(sys.executable).parent / "orch")
    argv = [orch, "sweep", "storage-proxy", f"--storage=journal:{journal}", f"--port={port}"]
    proxy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proxy)
        run(
            train_app(
                "hydra/launcher=orch",
                "hydra/sweeper=orch_optuna",
                "data=digits",
                "max_steps=20",
                "eval_every_steps=10",
                "num_threads=1",
                "tracking.enabled=false",
                "optimizer.lr=choice(0.01, 0.05)",
                "hydra.sweeper.study_name=proxied",
                f"hydra.sweeper.storage=grpc://127.0.0.1:{port}",
                "hydra.sweeper.n_trials=2",
                "hydra.sweeper.n_jobs=2",
                "hydra.sweeper.pruner.name=median",
                f"hydra.sweep.dir={tmp_path}/sweep",
            ),
            tmp_path,
            timeout=600,
        )
    finally:
        proxy.send_signal(signal.SIGINT)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
    study = _study(journal, "proxied")  # what the proxy wrote, read from its file
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        assert {10, 20} <= set(t.intermediate_values)  # reported by the jobs through gRPC


@pytest.mark.parametrize(
    "pruner",
    [
        {"name": "median", "n_startup_trials": 3},
        {"name": "asha", "min_resource": 1, "reduction_factor": 2},
        {"name": "hyperband", "min_resource": 1, "max_resource": 8, "reduction_factor": 2},
    ],
)
def test_trial_link_prunes_a_poor_trial(tmp_path: Path, pruner: dict[str, object]) -> None:
    """The job's side, in this process: the study is opened from the environment alone, and the
    pruner rebuilt from the study's ``orch.pruner`` stops a trial far below the finished ones."""
    from sweeps.trial_link import ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID, TrialLink

    storage = f"journal:{tmp_path}/link.journal"
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name="link",
        direction="maximize",
        pruner=make_pruner(pruner),
    )
    study.set_user_attr("orch.pruner", pruner)
    study.set_user_attr("orch.report", "val_accuracy")
    for _ in range(6):  # good trials, finished; SHA keeps its rungs when a trial asks
        t = study.ask()
        for step in range(1, 9):
            t.report(0.9 + 0.01 * step, step)
            t.should_prune()
        study.tell(t, 0.98)
    poor = study.ask()
    # Hyperband sends a trial to one of its brackets by a hash of its number: it prunes only in
    # brackets with early rungs, so the poor trial may have to run to its bracket's first rung.
    env = {ENV_STORAGE: storage, ENV_STUDY: "link", ENV_TRIAL_ID: str(poor._trial_id)}
    link = TrialLink.from_env(env)
    assert link is not None
    pruned_at = None
    for step in range(1, 9):
        if link.report({"val_accuracy": 0.1, "val_loss": 2.0}, step):
            pruned_at = step
            break
    assert pruned_at is not None and pruned_at < 8
    link.finish("pruned", {"steps": pruned_at, "val_accuracy": 0.1, "note": "text is dropped"})
    attrs = study.trials[poor.number].user_attrs
    assert attrs["orch.status"] == "pruned"
    assert attrs["orch.metrics"] == {"steps": float(pruned_at), "val_accuracy": 0.1}
    assert TrialLink.from_env({}) is None
