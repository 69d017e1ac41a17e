"""Views of the API: allocation layouts and their text maps, the OpenAPI document."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from orchestrator.backends import make_backend
from orchestrator.daemon.access import Access
from orchestrator.daemon.api import Guard, create_app
from orchestrator.daemon.api_documents import display_id, layout, text_map, text_summary
from orchestrator.daemon.models import JobSubmission
from orchestrator.daemon.service import Daemon
from orchestrator.daemon.state_folder import ensure_token
from orchestrator.exceptions import DaemonError
from orchestrator.resources.cluster import Cluster, load_cluster
from orchestrator.resources.topology import FlatTopology, Torus3DTopology
from orchestrator.store import Store, sqlite_url


def test_tree_map_is_drawn_per_leaf_switch() -> None:
    cluster = load_cluster("slurm16")
    owners: list[int | None] = [None] * 16
    for n in (0, 1, 2, 8):
        owners[n] = 7
    owners[15] = 9
    doc = layout(cluster, owners)
    assert [g["name"] for g in doc["groups"]] == ["s1", "s2"]
    assert doc["allocated"] == 5
    assert text_map(doc).splitlines() == [
        "slurm16: tree, 16 nodes under 2 leaf switches, 5 of 16 allocated",
        "  s1 AAA.....",
        "  s2 A......B",
        "legend: A=7  B=9",
    ]


def test_array_elements_are_named_in_the_map_as_in_the_queue() -> None:
    # Issue 17: orch nodes said 12 where orch queue said 3_0.
    cluster = load_cluster("slurm16")
    owners: list[int | None] = [None] * 16
    owners[0], owners[1], owners[2] = 12, 13, 40
    doc = layout(cluster, owners, {12: "3_0", 13: "3_1"})
    assert text_map(doc).splitlines()[-1] == "legend: A=3_0  B=3_1  C=40"


def test_a_fugaku_map_is_summarised_per_plane_with_every_plane() -> None:
    # Issue 17: orch nodes printed 3,362 lines on fugaku; the page drew 16 of 48 planes.
    cluster = load_cluster("fugaku")
    topo = cluster.topology
    assert isinstance(topo, Torus3DTopology)
    owners: list[int | None] = [None] * topo.size
    for x in range(4):  # job 7: 4 nodes in the last plane
        owners[topo.index(x, 0, 47)] = 7
    owners[topo.index(0, 0, 0)] = 8
    lines = text_summary(layout(cluster, owners, {8: "3_1"})).splitlines()
    assert len(lines) == 1 + 48 + 2
    assert lines[-2] == "jobs (nodes): 7:4  3_1:1"
    assert lines[48].split()[0] == "z=47" and lines[48].endswith(
        f" 4/{topo.dims[0] * topo.dims[1]}"
    )
    assert lines[1].endswith(f" 1/{topo.dims[0] * topo.dims[1]}")


def test_torus_map_is_drawn_per_z_slice() -> None:
    cluster = Cluster("t", Torus3DTopology([3, 2, 2]))
    topo = cluster.topology
    assert isinstance(topo, Torus3DTopology)
    owners: list[int | None] = [None] * topo.size
    owners[topo.index(2, 1, 1)] = 4
    text = text_map(layout(cluster, owners))
    assert text.splitlines()[1:] == [
        "z=0",
        "  y=0   ...",
        "  y=1   ...",
        "z=1",
        "  y=0   ...",
        "  y=1   ..A",
        "legend: A=4",
    ]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    """The API's FastAPI application over a daemon with a 4-node local cluster."""
    store = Store(sqlite_url(tmp_path / "orch.db"))
    cluster = Cluster("flat4", FlatTopology(4))
    daemon = Daemon(store, cluster, make_backend("local", tmp_path, cluster))
    guard = create_app(daemon, Access("secret"))
    assert isinstance(guard, Guard) and isinstance(guard.app, FastAPI)
    yield guard.app
    store.close()


def test_openapi_lists_every_submission_field_and_protects_changes(app: FastAPI) -> None:
    doc = app.openapi()
    schemas = doc["components"]["schemas"]
    assert set(schemas["JobSubmission"]["properties"]) == set(JobSubmission.model_fields)
    assert schemas["JobSubmission"]["additionalProperties"] is False
    batch = schemas["BatchSubmission"]["properties"]["jobs"]
    assert batch["items"] == {"$ref": "#/components/schemas/JobSubmission"}
    assert batch["maxItems"] == 10_000
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert op["responses"], (path, method)
            # Changes and job output (it may hold secrets) need an authenticated caller.
            protected = method == "post" or path.endswith("/output")
            assert ("security" in op) == protected, (path, method)
            if protected:
                assert {"401", "403", "422"} <= set(op["responses"]), (path, method)
    assert display_id({"id": 5, "array_id": 3, "array_index": 2}) == "3_2"
    assert display_id({"id": 5, "array_id": None, "array_index": None}) == "5"


def test_token_file_is_owner_only_and_refused_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = ensure_token(path)
    assert len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == token
    path.chmod(0o644)
    with pytest.raises(DaemonError, match="chmod 600"):
        ensure_token(path)
