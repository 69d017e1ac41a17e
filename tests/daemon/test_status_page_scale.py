"""The status page on a big cluster (issue 17): Fugaku's 158,976 nodes with 1,000 running jobs,
drawn as a heat map of Tofu units, every job findable by id or user, in headless Chromium.

The daemon runs in this process on the simulated backend of the daemon-correctness tests
(:mod:`sim_world`: no processes), served by the real :class:`ApiServer` in a thread. The
benchmark ``benchmarks/status_page_render.py`` reuses :func:`fugaku_page`.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import ARTIFACTS, chromium
from sim_world import SimBackend, SimWorld, StoreFactory

from orchestrator.backends.contract import Handle, LaunchSpec
from orchestrator.daemon.api_documents import aggregate, text_summary
from orchestrator.daemon.listener import ApiServer
from orchestrator.daemon.service import Daemon
from orchestrator.daemon.spec import JobSpec
from orchestrator.resources.cluster import load_cluster
from orchestrator.resources.topology import Torus3DTopology

JOBS = 1000
SHAPES = (
    "2x3x2:torus",
    "4x6x4:torus",
    "2x6x4:torus",
    "4x3x2:torus",
    "6x6x8:torus",
    "4x4x4:mesh",
    "2x2x12:mesh",
)
NODE_COUNTS = (1, 7, 24, 100)
USERS = 37


class BigWorld(SimWorld):
    """A :class:`SimWorld` for one tick that starts a thousand jobs on 86,000 nodes.

    The world checks each launch against every live task (:meth:`SimWorld.busy_nodes`) and
    sweeps every live task for endings after each launch; with a thousand launches that is
    quadratic, a minute here. The busy nodes are kept as launches come instead, and a zero
    step of time checks nothing (no task here ends before its 100,000 s). The checks still
    run on every launch and their findings still land in :attr:`violations`.
    """

    def __init__(self, nodes: Sequence[str], now: float) -> None:
        super().__init__(nodes, now)
        self._busy: dict[str, tuple[int, int]] = {}

    def launch(self, spec: LaunchSpec) -> Handle:
        handle = super().launch(spec)
        for node in spec.nodes:
            self._busy[node] = (spec.job_id, spec.attempt)
        return handle

    def busy_nodes(self) -> dict[str, tuple[int, int]]:
        return self._busy

    def advance(self, dt: float) -> None:
        if dt:
            super().advance(dt)


@dataclass
class FugakuPage:
    """A served daemon on the fugaku preset with :data:`JOBS` running jobs."""

    url: str
    daemon: Daemon
    world: BigWorld

    @property
    def topology(self) -> Torus3DTopology:
        topo = self.daemon.cluster.topology
        assert isinstance(topo, Torus3DTopology)
        return topo

    def blocks(self) -> dict[int, list[int]]:
        """Job id -> the node indices it holds (the daemon's own blocks)."""
        return {
            job_id: [int(n) for n in job.block.nodes]
            for job_id, job in self.daemon.active.items()
            if job.block is not None
        }

    def users(self) -> dict[int, str]:
        return {r["id"]: r["user"] for r in self.daemon.store.list_jobs(states=["RUNNING"])}

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/api/v1/status") as response:
            status: dict[str, Any] = json.load(response)
        return status


def submissions(count: int = JOBS, seed: int = 17) -> list[JobSpec]:
    """``count`` jobs: an array of 4 Tofu-unit boxes (jobs 1_0 .. 1_3), then assorted torus
    and mesh boxes and plain node counts, by :data:`USERS` users."""
    rng = random.Random(seed)
    specs = []
    for i in range(count - 3):
        payload: dict[str, Any] = {
            "argv": ["sim"],
            "env": {"SIM": "ok:100000"},
            "user": f"user{i % USERS}",
            "name": f"job<{i}>",
        }
        if i == 0:
            payload.update(array="0-3", shape="2x3x2:torus")
        elif rng.random() < 0.75:
            payload["shape"] = rng.choice(SHAPES)
        else:
            payload["nodes"] = rng.choice(NODE_COUNTS)
        specs.append(JobSpec.from_mapping(payload))
    return specs


@contextmanager
def fugaku_page(count: int = JOBS) -> Iterator[FugakuPage]:
    """The fugaku daemon with ``count`` jobs started in one tick, its API on a free port."""
    cluster = load_cluster("fugaku")
    world = BigWorld(cluster.topology.node_names, now=time.time())
    store = StoreFactory.create("status-page")
    daemon = Daemon(store, cluster, SimBackend(world), clock=world.clock)
    daemon.submit(submissions(count))
    daemon.tick(world.now)
    server = ApiServer(daemon, "status-page-token")
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    try:
        yield FugakuPage(server.url, daemon, world)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        StoreFactory.dispose(store)


def dump(url: str, profile: Path) -> str:
    """The page's DOM once its first draw is done (3 s of virtual time: a refresh or two)."""
    dom = chromium(url, profile, "--dump-dom", budget_ms=3000)
    assert 'data-ready="1"' in dom, dom[-2000:]
    return dom


def unit_cells(nodes: list[int], dims: Sequence[int], unit: Sequence[int]) -> list[int]:
    """The Tofu units (cells of the heat map) that hold ``nodes``, computed independently."""
    _, y_dim, z_dim = dims
    grid = [d // u for d, u in zip(dims, unit, strict=True)]
    cells = set()
    for n in nodes:
        x, rest = divmod(n, y_dim * z_dim)
        y, z = divmod(rest, z_dim)
        cells.add(((x // unit[0]) * grid[1] + y // unit[1]) * grid[2] + z // unit[2])
    return sorted(cells)


def found_items(dom: str) -> dict[int, dict[str, str]]:
    """The search result list: job id -> the attributes of its entry."""
    found = re.search(r'<div id="found"[^>]*>.*?</div>', dom, re.S)
    assert found, "no search result panel"
    items = {}
    for attrs, text in re.findall(r"<li ([^>]*)>(.*?)</li>", found.group(0), re.S):
        fields = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', attrs))
        fields["text"] = unescape(text)
        items[int(fields["job"])] = fields
    return items


def panel(dom: str) -> dict[str, str]:
    head = re.search(r'<div id="found"([^>]*)>', dom)
    assert head
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', head.group(1)))


def marked(dom: str) -> set[int]:
    canvas = re.search(r'<canvas id="heat"[^>]*data-marked="([\d,]*)"', dom)
    assert canvas, "no heat map canvas"
    return {int(c) for c in canvas.group(1).split(",") if c}


@pytest.fixture(scope="module")
def page() -> Iterator[FugakuPage]:
    with fugaku_page() as served:
        assert served.world.violations == []
        assert served.daemon.store.count_by_state() == {"RUNNING": JOBS}
        yield served


def test_every_running_job_is_found_on_the_fugaku_heat_map(
    page: FugakuPage, tmp_path: Path
) -> None:
    """All 1,000 jobs searched at once (#job=1,2,...): each one listed with the Tofu units
    that hold its nodes, the node count and a bounding box that covers its nodes, and all
    their units marked on the heat map; jobs at z = 44-47 (the planes past the 16 the old page
    drew) among them."""
    topo = page.topology
    dims, unit = topo.dims, topo.unit
    blocks = page.blocks()
    users = page.users()
    status = page.status()
    layout_users = {j["id"] for j in status["layout"]["aggregate"]["jobs"] if "user" in j}
    # The page names the user of a job in the running list (or in the layout, if it has them).
    named = {j["id"] for j in status["running"]} | layout_users
    assert len(named) >= 500
    assert len(blocks) == JOBS
    ids = sorted(blocks)
    dom = dump(f"{page.url}/#job={','.join(map(str, ids))}", tmp_path / "profile")
    assert 'data-ready="1"' in dom
    assert re.search(r'<div id="map"[^>]*data-view="heat"', dom)
    assert re.search(r'<canvas id="heat"[^>]*data-cells="13248"', dom)
    # Not a square per node: the page stays small.
    assert dom.count('class="node') == 0 and len(dom) < 2_000_000
    items = found_items(dom)
    assert panel(dom)["jobs"] == ",".join(map(str, ids))
    assert sorted(items) == ids
    all_cells: set[int] = set()
    for job_id, nodes in blocks.items():
        item = items[job_id]
        cells = unit_cells(nodes, dims, unit)
        all_cells.update(cells)
        assert item["cells"] == ",".join(map(str, cells)), job_id
        assert int(item["nodes"]) == len(nodes)
        lo_text, size_text = item["box"].split("+")
        lo = [int(v) for v in lo_text.split(",")]
        size = [int(v) for v in size_text.split(",")]
        for n in nodes:  # the box covers every node (wrapping round the torus)
            assert all((c - lo[a]) % dims[a] < size[a] for a, c in enumerate(topo.coords(n)))
        job = page.daemon.active[job_id]
        if job.block is not None and job.block.extents is not None:
            assert size == list(job.block.extents)
            assert lo == [o % d for o, d in zip(job.block.origin or (), dims, strict=True)]
        if job_id in named:
            assert f" ({users[job_id]}) · {len(nodes)} nodes · box " in item["text"]
    assert marked(dom) == all_cells
    high = [j for j, nodes in blocks.items() if any(topo.coords(n)[2] >= 44 for n in nodes)]
    assert len(high) >= 10, "the jobs should reach the last z-planes"
    grid_z = dims[2] // unit[2]
    for job_id in high:  # listed with a z range reaching 44-47, their units in the last layers
        z = re.search(r", z (\d+)(?:-(\d+))?( \(wraps\))?", items[job_id]["text"])
        assert z and (int(z[2] or z[1]) >= 44 or z[3]), items[job_id]["text"]
        assert any(int(c) % grid_z >= 44 // unit[2] for c in items[job_id]["cells"].split(","))


def test_search_by_job_or_user_marks_only_their_units(page: FugakuPage, tmp_path: Path) -> None:
    """One job at z = 44-47 and every job of one user (more than the running list's 500
    rows hold: the page asks the daemon for the user's jobs); a screenshot of it is kept."""
    topo = page.topology
    blocks = page.blocks()
    users = page.users()
    top = max(blocks, key=lambda j: (max(topo.coords(n)[2] for n in blocks[j]), j))
    assert max(topo.coords(n)[2] for n in blocks[top]) >= 44
    user = "user36"
    theirs = sorted(j for j, u in users.items() if u == user)
    assert theirs and max(theirs) > 500  # past the running list the status document sends
    # An array element by its label (12_3) too.
    labels = page.status()["layout"]["labels"]
    element = next(int(job) for job, name in labels.items() if name.endswith("_2"))
    dom = dump(f"{page.url}/#q={top}%20{user}%20{labels[str(element)]}", tmp_path / "profile")
    assert panel(dom)["state"] == "done"
    items = found_items(dom)
    assert sorted(items) == sorted({top, element, *theirs})
    expect = {c for j in items for c in unit_cells(blocks[j], topo.dims, topo.unit)}
    assert marked(dom) == expect
    assert f"job {labels[str(element)]} (user0) · 12 nodes" in items[element]["text"]
    assert all(f"({user}) · " in items[j]["text"] for j in theirs)
    # Nobody finds nothing.
    dom = dump(f"{page.url}/#q=nobody", tmp_path / "profile")
    assert panel(dom)["jobs"] == "" and "no running job" in dom and marked(dom) == set()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page-fugaku.png"
    shot.unlink(missing_ok=True)
    chromium(
        f"{page.url}/#job={top}",
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,1100",
        budget_ms=3000,
    )
    assert shot.stat().st_size > 20_000


def test_nodes_document_keeps_owners_and_the_summary(page: FugakuPage) -> None:
    """``orch nodes`` on a big cluster (text_summary) still reads ``owners``: every plane."""
    with urllib.request.urlopen(f"{page.url}/api/v1/nodes") as response:
        doc = json.load(response)
    assert len(doc["owners"]) == 158_976 and "names" not in doc
    assert len(doc["aggregate"]["jobs"]) == JOBS
    assert sum(doc["aggregate"]["busy"]) == doc["allocated"]
    text = text_summary(doc)
    assert re.search(r"z=47 +[#.]{40} \d+/3312", text)


def test_aggregate_of_a_wrapping_torus_job_and_of_leaf_switches() -> None:
    """The bounding box takes the short way round the torus; groups cut into cells."""
    dims = [8, 6, 4]
    owners: list[int | None] = [None] * 192

    def index(x: int, y: int, z: int) -> int:
        return (x * dims[1] + y) * dims[2] + z

    for x in (7, 0):  # wraps round x
        for z in (3, 0):  # and round z
            owners[index(x, 2, z)] = 5
    owners[index(3, 4, 1)] = 9
    doc = {"kind": "torus3d", "dims": dims, "size": 192}
    agg = aggregate(doc, owners, users={5: "alice"}, unit=(2, 3, 2))
    assert agg["grid"] == [4, 2, 2] and agg["capacity"] == [12] * 16
    five, nine = agg["jobs"]
    assert five == {
        "id": 5,
        "nodes": 4,
        "cells": [0, 1, 12, 13],
        "lo": [7, 2, 3],
        "size": [2, 1, 2],
        "user": "alice",
    }
    assert nine["lo"] == [3, 4, 1] and nine["size"] == [1, 1, 1] and "user" not in nine
    assert sum(agg["busy"]) == 5

    groups = [{"name": "s1", "nodes": [0, 1, 2]}, {"name": "s2", "nodes": [3, 4]}]
    agg = aggregate({"kind": "tree", "size": 5, "groups": groups}, [None, 1, None, 1, 2])
    assert agg["rows"] == [
        {"name": "s1", "first": 0, "count": 3},
        {"name": "s2", "first": 3, "count": 2},
    ]
    assert agg["busy"] == [0, 1, 0, 1, 1]
    assert [j["groups"] for j in agg["jobs"]] == [["s1", "s2"], ["s2"]]
