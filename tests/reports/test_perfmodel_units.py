"""The performance model's parts: collective costs, model presets, the step model, and
`orch predict` calibrated on the recorded experiment."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.perfmodel import (
    DEFAULT_PROFILE,
    MODELS,
    NETWORKS,
    KfacSchedule,
    Link,
    allreduce_time,
    calibrate,
    efficiency,
    halving_doubling_allreduce,
    inverse_load,
    load_points,
    predict_step,
    resnet50,
    ring_allreduce,
    torus_allreduce,
    torus_shape,
)
from orchestrator.perfmodel._conf_models import CONF_MODELS
from orchestrator.perfmodel.model import StepPrediction
from orchestrator.tracking import connect
from tests.reports.model_presets_gen import build_table
from tests.reports.record_experiment import Recorded

LINK = Link(2e-6, 1 / 10e9)


@pytest.mark.parametrize("p", [2, 3, 4, 7, 8, 64, 1000])
def test_ring_and_halving_doubling_share_the_bandwidth_term(p: int) -> None:
    n = 1e8  # large: the bandwidth term dominates
    bw = 2 * (p - 1) / p * n * LINK.beta_s_per_byte
    assert ring_allreduce(p, n, LINK) == pytest.approx(bw + 2 * (p - 1) * LINK.alpha_s)
    if p & (p - 1) == 0:  # a power of two: log2(p) steps each way
        assert halving_doubling_allreduce(p, n, LINK) == pytest.approx(
            bw + 2 * math.log2(p) * LINK.alpha_s
        )
    else:  # folding the extra ranks costs a whole-message exchange each way
        assert halving_doubling_allreduce(p, n, LINK) > ring_allreduce(p, n, LINK) - 1e-12 or (
            p > 8
        )


def test_small_messages_favour_halving_doubling_on_a_tree() -> None:
    # 8 bytes on 1,024 nodes: latency only; log2 beats linear.
    assert halving_doubling_allreduce(1024, 8, LINK) < ring_allreduce(1024, 8, LINK) / 50
    assert allreduce_time("tree", 1024, 8, LINK) == halving_doubling_allreduce(1024, 8, LINK)
    assert allreduce_time("flat", 1024, 8, LINK) == ring_allreduce(1024, 8, LINK)


def test_torus_rings_pay_latency_per_axis_not_per_node() -> None:
    dims = [48, 69, 48]
    shape = torus_shape(80_000, dims)
    assert math.prod(shape) >= 80_000 and all(s <= d for s, d in zip(shape, dims, strict=True))
    assert max(shape) - min(shape) <= 2  # compact
    t = allreduce_time("torus3d", 80_000, 8, LINK, dims)
    assert t == pytest.approx(sum(2 * (s - 1) for s in shape) * LINK.alpha_s, rel=1e-3)
    assert t < ring_allreduce(80_000, 8, LINK) / 500
    # Bandwidth: the same 2(1 - 1/p) n beta as a ring, halved by the two directions.
    big = 1e9
    assert torus_allreduce(shape, big, Link(0, 1e-9)) == pytest.approx(
        (1 - 1 / math.prod(shape)) * big * 1e-9
    )
    with pytest.raises(ValueError, match="do not fit"):
        torus_shape(10**6, dims)
    with pytest.raises(ValueError, match="unknown topology"):
        allreduce_time("ring", 4, 8, LINK)


def test_resnet50_matches_its_published_size() -> None:
    spec = resnet50()
    assert spec.params == 25_557_032  # torchvision's resnet50, to the parameter
    assert spec.forward_flops / 2 == pytest.approx(4.09e9, rel=0.01)  # 4.1 GMAC per image
    assert len([lay for lay in spec.layers if lay.positions > 1]) == 53  # convolutions


def test_conf_model_presets_match_the_torch_modules() -> None:
    assert build_table() == CONF_MODELS, (
        "sweeps/models.py changed: regenerate with python tests/reports/model_presets_gen.py"
    )
    assert MODELS["mlp-mnist5k"].params == 235_146  # as the training job reports it


def test_inverse_work_spreads_until_one_factor_per_rank() -> None:
    dims = MODELS["resnet50"].factor_dims
    loads = [inverse_load(dims, p) for p in (1, 2, 8, 64, len(dims), 10 * len(dims))]
    assert loads[0] == pytest.approx(sum(float(d) ** 3 for d in dims))
    assert all(a >= b for a, b in itertools.pairwise(loads))
    assert loads[-1] == loads[-2] == max(float(d) ** 3 for d in dims)


def test_step_model_kfac_costs_more_and_efficiency_falls_with_nodes() -> None:
    spec, fugaku = MODELS["resnet50"], NETWORKS["fugaku"]
    prof = DEFAULT_PROFILE.scaled(fugaku.node_flops or 1.0)
    dims = [48, 69, 48]
    steps = {
        opt: [
            predict_step(
                spec,
                opt,
                n,
                32,
                profile=prof,
                topology="torus3d",
                link=fugaku.link,
                dims=dims,
                kfac=KfacSchedule(),
            )
            for n in (1, 64, 4096, 80_000)
        ]
        for opt in ("sgd", "kfac")
    }
    for s, k in zip(steps["sgd"], steps["kfac"], strict=True):
        assert k.total > s.total and k.comm_factors >= 0
    eff = [p.samples_per_s / (p.nodes * steps["sgd"][0].samples_per_s) for p in steps["sgd"]]
    assert eff[0] == pytest.approx(1.0) and eff == sorted(eff, reverse=True) and eff[-1] > 0
    with pytest.raises(ValueError, match="optimizer"):
        predict_step(spec, "adam", 1, 32, profile=prof, topology="flat", link=fugaku.link)


def test_calibration_on_the_recorded_runs(recorded: Recorded) -> None:
    client = connect(recorded.uri)
    exp = client.get_experiment_by_name(recorded.experiment)
    assert exp is not None
    points = load_points(client, [exp.experiment_id])
    mine = [p for p in points if p.model == "mlp-digits"]
    assert {p.world_size for p in mine} == {1, 2}
    assert all(p.model is None for p in points if p.batch_size == 128)  # NAS variants: no preset
    prof = calibrate(points, "mlp-digits")
    assert prof.train_flops > 1e8 and prof.inverse_units_per_s > 0
    assert prof.host_cores is not None and 0 < prof.host_cores <= 2  # the local preset's
    with pytest.raises(ValueError, match="no finished 1-rank run"):
        calibrate(points, "resnet50")


def test_orch_predict_prints_measured_points_beside(recorded: Recorded) -> None:
    args = ["predict", "--tracking-uri", recorded.uri, "--model", "mlp-digits"]
    local = CliRunner().invoke(
        main,
        [
            *args,
            "--cluster",
            "local",
            "--global-batch",
            "256",
            "--nodes",
            "1,2,4",
            "--format",
            "json",
        ],
    )
    assert local.exit_code == 0, local.output
    rows = json.loads(local.output)["rows"]
    measured = {(r["optimizer"], r["nodes"]) for r in rows if r["measured_step_ms"]}
    assert measured == {("sgd", 1), ("sgd", 2), ("kfac", 1), ("kfac", 2)}
    far = CliRunner().invoke(main, [*args, "--cluster", "fugaku"])
    assert far.exit_code == 0, far.output
    assert "80,000" in far.output and "calibrated on mlp-digits" in far.output
    bad = CliRunner().invoke(main, [*args, "--nodes", "0,2"])
    assert bad.exit_code == 2 and "--nodes" in bad.output
    too_many = CliRunner().invoke(main, [*args, "--cluster", "local", "--nodes", "8"])
    assert too_many.exit_code == 1 and "exceed cluster 'local'" in too_many.output


def test_docstring_examples_hold() -> None:
    import doctest

    from orchestrator.perfmodel import collectives, model, predict, workloads

    for module in (collectives, model, predict, workloads):
        failed, tried = doctest.testmod(module)
        assert tried > 0 and failed == 0, module.__name__


@settings(max_examples=200, deadline=None)
@given(
    optimizer=st.sampled_from(["sgd", "kfac"]),
    nodes=st.integers(1, 100_000),
    batch=st.sampled_from([1.0, 8.0, 32.0, 256.0, 4096.0]),
    network=st.sampled_from(["fugaku", "slurm16", "fattree1024"]),
    model=st.sampled_from(["resnet50", "mlp-digits", "cnn-mnist5k"]),
    intervals=st.tuples(st.integers(1, 100), st.integers(1, 1000)),
    strong=st.booleans(),
)
def test_efficiency_is_at_most_one_by_construction(
    optimizer: str,
    nodes: int,
    batch: float,
    network: str,
    model: str,
    intervals: tuple[int, int],
    strong: bool,
) -> None:
    # Issue 17: K-FAC's efficiency came out 1.09-1.15 on fugaku: the one-node baseline did every
    # inverse itself. Weak (the batch per node fixed) and strong scaling (the global batch).
    net = NETWORKS[network]
    prof = DEFAULT_PROFILE.scaled(net.node_flops or 1.0)
    topology = "torus3d" if network == "fugaku" else "tree"
    dims = [48, 69, 48] if topology == "torus3d" else None
    schedule = KfacSchedule(factor_interval=intervals[0], inverse_interval=intervals[1])

    def step(n: int, b: float) -> StepPrediction:
        return predict_step(
            MODELS[model], optimizer, n, b, profile=prof, topology=topology, link=net.link,
            dims=dims, kfac=schedule,
        )  # fmt: skip

    single = step(1, batch * nodes if strong else batch)
    pred = step(nodes, batch)
    assert efficiency(pred, single) <= 1.0 + 1e-9
    assert efficiency(single, single) == pytest.approx(1.0)


def test_predict_prints_the_global_batch_and_warns_past_the_known_convergence() -> None:
    # Issue 17: 80,000 nodes x 32 samples is far past any batch ResNet-50 is known to train at.
    def run(nodes: str) -> dict[str, Any]:
        result = CliRunner().invoke(
            main,
            ["predict", "--model", "resnet50", "--cluster", "fugaku", "--optimizer", "kfac",
             "--batch-per-node", "32", "--nodes", nodes, "--no-calibrate", "--format", "json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        document: dict[str, Any] = json.loads(result.output)
        return document

    within = run("1,1024")
    assert [r["global_batch"] for r in within["rows"]] == [32, 32_768]
    assert within["warnings"] == []
    assert "stragglers" in within["left_out"] and "I/O" in within["left_out"]
    past = run("1,2048")
    (warning,) = past["warnings"]
    assert "32,768" in warning and "from 2,048 nodes" in warning and "CVPR 2019" in warning
