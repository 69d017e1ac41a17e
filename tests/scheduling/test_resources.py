"""Host lists, requests, topologies and presets."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.exceptions import ClusterConfigError, InvalidRequestError
from orchestrator.resources.cluster import cluster_from_mapping, list_presets, load_cluster
from orchestrator.resources.hostlist import compress_hostlist, expand_hostlist
from orchestrator.resources.request import JobRequest, ShapeMode, parse_duration, parse_shape
from orchestrator.resources.topology import Torus3DTopology


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("n[1-2,5],x", ["n1", "n2", "n5", "x"]),
        ("c[0009-0011]", ["c0009", "c0010", "c0011"]),
        ("s[1-2]", ["s1", "s2"]),
        ("solo", ["solo"]),
    ],
)
def test_expand_hostlist(text: str, hosts: list[str]) -> None:
    assert expand_hostlist(text) == hosts
    assert expand_hostlist(compress_hostlist(hosts)) == hosts


@pytest.mark.parametrize("bad", ["n[1-3", "n[3-1]", "n[a-b]", "n]1["])
def test_expand_hostlist_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="host list"):
        expand_hostlist(bad)


def test_compress_hostlist() -> None:
    assert compress_hostlist(["n1", "n2", "n3", "n7"]) == "n[1-3,7]"
    assert compress_hostlist(["node0", "node1", "node2", "node3"]) == "node[0-3]"
    assert compress_hostlist(["c0009", "c0010", "x"]) == "c[0009-0010],x"


@pytest.mark.parametrize(
    ("text", "extents", "mode", "strict"),
    [
        ("4", (4,), ShapeMode.MESH, False),
        ("4x6", (4, 6), ShapeMode.MESH, False),
        ("4x6x16:torus", (4, 6, 16), ShapeMode.TORUS, False),
        ("2x2x2:mesh:strict", (2, 2, 2), ShapeMode.MESH, True),
        ("2x3:strict:noncont", (2, 3), ShapeMode.NONCONT, True),
        ("8X8:TORUS", (8, 8), ShapeMode.TORUS, False),
    ],
)
def test_parse_shape(text: str, extents: tuple[int, ...], mode: ShapeMode, strict: bool) -> None:
    shape = parse_shape(text)
    assert (shape.extents, shape.mode, shape.strict) == (extents, mode, strict)
    assert parse_shape(str(shape)) == shape


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0x2", "extent"),
        ("-1x2", "extent"),
        ("2x2x2x2", "rank 4"),
        ("2x2:ring", "unknown suffix ':ring'"),
        ("axb", "not a positive integer"),
        ("2x2:torus:mesh", "more than one"),
        ("", "expected a shape"),
    ],
)
def test_parse_shape_errors_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_shape(text)
    assert info.value.field == "shape"
    message = str(info.value)
    assert fragment in message
    assert "for example: shape=" in message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), ("90", 90.0), ("10:00", 600.0), ("1:00:00", 3600.0), ("2-01:00:00", 176400.0)],
)
def test_parse_duration(value: str | int, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "1:xx", 0, -5, "0:00"])
def test_parse_duration_rejects(value: str | int) -> None:
    with pytest.raises(InvalidRequestError, match="walltime"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"nodes": -3}, "nodes"),
        ({"nodes": "4"}, "nodes"),
        ({}, "nodes"),
        ({"nodes": 2, "shape": "2x1"}, "shape"),
        ({"nodes": 2, "tasks_per_node": 0}, "tasks_per_node"),
        ({"nodes": 2, "walltime_s": "never"}, "walltime_s"),
        ({"nodes": 2, "user": ""}, "user"),
    ],
)
def test_invalid_requests_rejected_when_created(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        JobRequest(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_presets_load() -> None:
    assert set(list_presets()) >= {"local", "slurm16", "fugaku", "fattree1024"}
    fugaku = load_cluster("fugaku")
    assert isinstance(fugaku.topology, Torus3DTopology)
    assert fugaku.size == 158_976
    assert fugaku.topology.unit == (2, 3, 2)
    assert fugaku.topology.unit_grid == (24, 23, 24)
    slurm16 = load_cluster("slurm16")
    assert slurm16.size == 16
    assert slurm16.topology.node_names[0] == "n1"
    fat = load_cluster("fattree1024")
    assert fat.size == 1024
    assert len(fat.topology.leaves) == 32  # type: ignore[attr-defined]
    assert all(leaf.nodes and len(leaf.nodes) == 32 for leaf in fat.topology.leaves)  # type: ignore[attr-defined]


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ClusterConfigError, match=r"known: .*slurm16"):
        load_cluster("nope")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"topology": "ring"}, "not one of flat, tree, torus3d"),
        ({"topology": "torus3d", "dims": [4, 4]}, "three positive integers"),
        ({"topology": "torus3d", "dims": [4, 4, 4], "unit": [3, 1, 1]}, "not a multiple"),
        ({"topology": "flat", "nodes": 0}, "nodes >= 1"),
        ({"topology": "flat", "nodes": 2, "colour": 1}, "unknown keys"),
        ({"topology": "tree", "switches": [{"name": "a", "switches": "b"}]}, "unknown switch"),
        (
            {
                "topology": "tree",
                "switches": [{"name": "a", "nodes": "n1"}, {"name": "b", "nodes": "n1"}],
            },
            "exactly one root|more than one leaf",
        ),
    ],
)
def test_bad_cluster_specs(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(ClusterConfigError, match=fragment):
        cluster_from_mapping(spec)


def test_requests_checked_against_the_cluster() -> None:
    flat = load_cluster("local")
    with pytest.raises(
        InvalidRequestError, match=r"shapes need a torus3d.*for example: nodes=4"
    ) as info:
        flat.check_request(JobRequest(shape="2x2"))
    assert info.value.field == "shape"
    with pytest.raises(InvalidRequestError, match="has 4") as info:
        flat.check_request(JobRequest(nodes=5))
    assert info.value.field == "nodes"
    with pytest.raises(InvalidRequestError) as info:
        flat.check_request(JobRequest(nodes=1, tasks_per_node=2, cpus_per_task=2))
    assert info.value.field == "cpus_per_task"
    torus = cluster_from_mapping({"topology": "torus3d", "dims": [4, 2, 8], "name": "t"})
    torus.check_request(JobRequest(shape="8x4x2"))  # fits after an axis swap
    with pytest.raises(InvalidRequestError, match="without swapping"):
        torus.check_request(JobRequest(shape="8x4x2:strict"))
    with pytest.raises(InvalidRequestError, match="does not fit"):
        torus.check_request(JobRequest(shape="9x1x1"))


def test_torus_coordinates_round_trip() -> None:
    topo = Torus3DTopology([4, 3, 5])
    for i in range(topo.size):
        assert topo.index(*topo.coords(i)) == i
    box = topo.box_nodes((3, 2, 4), (2, 2, 2))  # wraps on every axis
    coords = {topo.coords(int(i)) for i in box}
    assert coords == {(x, y, z) for x in (3, 0) for y in (2, 0) for z in (4, 0)}
    assert np.unique(topo.curve_rank).size == topo.size
