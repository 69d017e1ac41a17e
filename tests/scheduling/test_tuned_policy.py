"""Tuned policies: the score family's named points, the YAML file, `orch tune`'s search and its
training data, `--order tuned:FILE` in simulate and in the protocol."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.exceptions import PolicyFileError
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.topology import FlatTopology
from orchestrator.scheduling.policies import Backfill, MultifactorOrdering, make_ordering
from orchestrator.scheduling.tuned import (
    ScoreOrdering,
    ScoreWeights,
    TunedPolicy,
    load_policy,
    resolve_order,
    save_policy,
)
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.protocol import protocol_workloads, schedgym_jobs
from orchestrator.simulate.swf import read_swf
from orchestrator.simulate.tune import (
    TuneSpec,
    bootstrap_windows,
    outside_segments,
    tune,
)
from orchestrator.simulate.workload import workload_from_swf

TRACE = Path(__file__).resolve().parents[2] / "orchestrator" / "data" / "lublin_256.swf.gz"
CLUSTER = Cluster(name="flat256", topology=FlatTopology(256))


@pytest.fixture(scope="module")
def lublin():  # type: ignore[no-untyped-def]
    return read_swf(TRACE)


def _schedule(jobs, order, backfill):  # type: ignore[no-untyped-def]
    result = simulate(CLUSTER, jobs, order=order, backfill=backfill, commit_head=True)
    return list(zip(result.jobs["job_id"], result.jobs["start"], strict=True))


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("fcfs", ScoreWeights(submit=1.0)),
        ("sjf", ScoreWeights(runtime=1.0)),
        ("f1", ScoreWeights(runtime_size=1.0, submit=870.0)),
    ],
)
def test_named_orderings_are_points_of_the_score_family(lublin, name, weights) -> None:  # type: ignore[no-untyped-def]
    jobs, _ = workload_from_swf(lublin, CLUSTER, window=(3000, 600))
    for backfill in (Backfill.STRICT, Backfill.EASY):
        assert _schedule(jobs, ScoreOrdering(weights), backfill) == _schedule(
            jobs, name, backfill
        ), (name, backfill)


def test_aging_weights_make_the_score_depend_on_the_clock() -> None:
    assert not ScoreOrdering(ScoreWeights(runtime=1.0)).time_dependent
    assert ScoreOrdering(ScoreWeights(wait=-1.0)).time_dependent
    assert ScoreOrdering(ScoreWeights(slowdown=-1.0)).time_dependent


weights_strategy = st.fixed_dictionaries(
    {},
    optional={
        key: st.floats(-1e6, 1e6, allow_nan=False)
        for key in ("runtime", "size", "runtime_size", "submit", "wait", "slowdown")
    },
)


@settings(max_examples=40, deadline=None)
@given(
    weights=weights_strategy,
    backfill=st.sampled_from(list(Backfill)),
    note=st.text(max_size=30),
)
def test_a_policy_file_round_trips(tmp_path_factory, weights, backfill, note) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("policy") / "p.yaml"
    policy = TunedPolicy(
        family="score",
        weights=weights,
        backfill=backfill,
        origin={"trace": note, "search": {"trials": 3}},
        scores={"tuned": {"training": 1.5}},
    )
    save_policy(policy, path)
    loaded = load_policy(path)
    assert loaded == policy
    assert make_ordering(f"tuned:{path}", 256).weights == ScoreWeights(**weights)  # type: ignore[attr-defined]


def test_a_multifactor_policy_loads_as_slurm_s_ordering_with_a_run_time_factor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mf.yaml"
    save_policy(
        TunedPolicy(
            family="multifactor", weights={"age": 0.5, "runtime": 1.0, "favor_small": True}
        ),
        path,
    )
    ordering = make_ordering(f"tuned:{path}", 64)
    assert isinstance(ordering, MultifactorOrdering)
    assert ordering.weights.runtime == 1.0 and ordering.weights.favor_small
    from orchestrator.resources.request import JobRequest

    short = JobRequest(nodes=1, walltime_s=60.0, submit_time=0.0)
    long = JobRequest(nodes=1, walltime_s=86400.0, submit_time=0.0)
    assert ordering.score(short, 10.0) < ordering.score(long, 10.0)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("format: other/1\nfamily: score\nweights: {}\n", "format"),
        ("format: orchestrator.tuned-policy/1\nfamily: rl\nweights: {}\n", "family"),
        (
            "format: orchestrator.tuned-policy/1\nfamily: score\nweights: {speed: 1}\n",
            "weights.speed",
        ),
        (
            "format: orchestrator.tuned-policy/1\nfamily: score\nweights: {runtime: fast}\n",
            "weights.runtime",
        ),
        (
            "format: orchestrator.tuned-policy/1\nfamily: score\nweights: {runtime: .nan}\n",
            "weights.runtime",
        ),
        (
            "format: orchestrator.tuned-policy/1\nfamily: score\nweights: {}\nbackfill: lazy\n",
            "backfill",
        ),
        ("format: orchestrator.tuned-policy/1\nfamily: score\nweights: [1]\n", "weights"),
        ("- a list\n", "(document)"),
        ("{unclosed: [\n", "order"),
    ],
)
def test_a_bad_policy_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyFileError) as caught:
        load_policy(path)
    assert caught.value.field == field
    assert str(path) in str(caught.value) or field == "order"


def test_a_missing_policy_file_is_a_usage_error_naming_order(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["simulate", "--order", f"tuned:{tmp_path / 'nope.yaml'}", "--window", "0:50"]
    )
    assert result.exit_code == 2
    assert "--order" in result.output and "cannot read the policy file" in result.output


def test_resolve_order_takes_the_policy_s_backfill_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    save_policy(
        TunedPolicy(family="score", weights={"runtime": 1.0}, backfill=Backfill.STRICT), path
    )
    order, backfill = resolve_order(f"tuned:{path}", None)
    assert (order, backfill) == (f"tuned:{path.resolve()}", Backfill.STRICT)
    assert resolve_order(f"tuned:{path}", "easy")[1] is Backfill.EASY
    assert resolve_order("sjf", None) == ("sjf", Backfill.EASY)
    with pytest.raises(ValueError, match="unknown ordering"):
        resolve_order("fastest", None)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 400),
    windows=st.lists(st.tuples(st.integers(0, 399), st.integers(1, 120)), max_size=6),
)
def test_outside_segments_are_exactly_the_jobs_no_window_covers(n, windows) -> None:  # type: ignore[no-untyped-def]
    covered = {i for s, length in windows for i in range(s, min(s + length, n))}
    segments = outside_segments(n, windows)
    outside = [i for s, length in segments for i in range(s, s + length)]
    assert outside == sorted(set(range(n)) - covered)
    # Maximal stretches: two segments never touch.
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(segments))


def test_training_windows_hold_only_jobs_from_outside_the_evaluation_windows(lublin) -> None:  # type: ignore[no-untyped-def]
    evaluation, eval_workloads = protocol_workloads(lublin, CLUSTER, variant="schedgym")
    jobs_trace = schedgym_jobs(lublin)
    segments = outside_segments(len(jobs_trace.jobs), evaluation)
    pools = [workload_from_swf(jobs_trace, CLUSTER, window=s)[0] for s in segments]
    windows = bootstrap_windows(pools, count=3, length=500, block=64, seed=7)
    assert [len(w) for w in windows] == [500, 500, 500]

    def key(job):  # type: ignore[no-untyped-def]
        r = job.request
        return (r.node_count, r.walltime_s, r.estimate, job.run_time)

    outside = {key(j) for p in pools for j in p}
    for window in windows:
        assert all(key(j) in outside for j in window)
        submits = [j.request.submit_time for j in window]
        assert submits == sorted(submits)
    # The job rows of the evaluation windows (by trace position) are never drawn.
    eval_ids = {j.job_id for jobs, _ in eval_workloads for j in jobs}
    pool_ids = {j.job_id for p in pools for j in p}
    assert not eval_ids & pool_ids


def test_tuning_beats_its_starting_point_on_the_held_in_windows(lublin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = TuneSpec(trials=12, timeout_s=None, training_windows=2, length=400, block=50, seed=3)
    policy = tune(lublin, CLUSTER, spec)
    start, tuned = policy.scores["start"], policy.scores["tuned"]
    assert tuned["training"] < start["training"]
    # Both are measured on the protocol's windows too (whatever the outcome there).
    assert math.isfinite(tuned["evaluation"]) and math.isfinite(start["evaluation"])
    assert start["evaluation"] == pytest.approx(73.30649683910792)  # SJF, strict: the table's 73.31
    search = policy.origin["search"]
    assert search["trials"] == 12 and search["sampler"] == "tpe"
    assert policy.origin["trace"] == TRACE.name and len(policy.origin["trace_sha256"]) == 64
    # The file replays the same training score through --order tuned:FILE.
    path = tmp_path / "tuned.yaml"
    save_policy(policy, path)
    assert load_policy(path) == policy


def test_cmaes_searches_too(lublin) -> None:  # type: ignore[no-untyped-def]
    spec = TuneSpec(
        sampler="cmaes", trials=4, timeout_s=None, training_windows=1, length=300, block=50
    )
    policy = tune(lublin, CLUSTER, spec)
    assert policy.origin["search"]["trials"] == 4
    assert policy.scores["tuned"]["training"] <= policy.scores["start"]["training"]


def test_orch_tune_writes_a_policy_that_simulate_and_the_protocol_load(tmp_path: Path) -> None:
    out = tmp_path / "policy.yaml"
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "tune",
            "--trials",
            "3",
            "--training-windows",
            "1",
            "--block",
            "64",
            "--backfill",
            "search",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"--order tuned:{out}" in result.output
    policy = load_policy(out)
    assert policy.origin["search"]["backfill"] == "searched"
    replay = runner.invoke(
        main, ["simulate", "--order", f"tuned:{out}", "--window", "0:300", "--format", "json"]
    )
    assert replay.exit_code == 0, replay.output
    summary = json.loads(replay.output.strip().splitlines()[-1])
    assert summary["backfill"] == policy.backfill.value  # the policy's own mode
    protocol = runner.invoke(
        main,
        [
            "simulate",
            "--protocol",
            "rlscheduler",
            "--orders",
            f"sjf,multifactor,tuned:{out}",
            "--backfills",
            "strict",
            "--format",
            "json",
        ],
    )
    assert protocol.exit_code == 0, protocol.output
    rows = json.loads(protocol.output.strip().splitlines()[-1])
    assert [r["order"] for r in rows] == ["sjf", "multifactor", f"tuned:{out}"]
    assert rows[0]["mean_bsld"] == pytest.approx(73.30649683910792)
    # The tuned row is the policy's evaluation score when tuned with strict backfilling.
    if policy.backfill is Backfill.STRICT:
        assert rows[2]["mean_bsld"] == pytest.approx(policy.scores["tuned"]["evaluation"])


def test_a_bad_starting_point_is_refused() -> None:
    with pytest.raises(ValueError, match="not a starting point of the score family"):
        TuneSpec(start="multifactor")
    with pytest.raises(ValueError, match="trial count or a time limit"):
        TuneSpec(trials=None, timeout_s=None)
    assert dataclasses.replace(TuneSpec(), family="multifactor", start="multifactor")


def test_the_published_lublin_figures_are_never_shown_beside_another_trace(tmp_path: Path) -> None:
    """They were: `--protocol rlscheduler --trace KTH...` printed Lublin-256's 73.31 beside SJF."""
    from orchestrator.simulate.protocol import rlscheduler_protocol
    from orchestrator.simulate.swf import SwfTrace

    lublin = read_swf(TRACE)
    other = SwfTrace(path=str(tmp_path / "site.swf"), header=lublin.header, jobs=lublin.jobs)
    kwargs = {"orders": ["sjf"], "backfills": [Backfill.STRICT], "windows": 1, "length": 300}
    (row,) = rlscheduler_protocol(other, CLUSTER, **kwargs)  # type: ignore[arg-type]
    assert row.published_bsld is None
    (row,) = rlscheduler_protocol(lublin, CLUSTER, **kwargs)  # type: ignore[arg-type]
    assert row.published_bsld == 73.31


def test_hopeless_trials_stop_early_when_asked(lublin) -> None:  # type: ignore[no-untyped-def]
    spec = TuneSpec(
        trials=24, timeout_s=None, training_windows=4, length=250, block=50, seed=1, prune=True
    )
    pruned = tune(lublin, CLUSTER, spec).origin["search"]
    assert pruned["trials"] == 24 and pruned["pruned"] > 0
    kept = tune(lublin, CLUSTER, dataclasses.replace(spec, prune=False)).origin["search"]
    assert kept["pruned"] == 0 and kept["pruner"] == "none"
