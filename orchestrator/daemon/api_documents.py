"""What the API returns: job documents and the allocation map (and its text picture).

Pure functions of store rows and the daemon's state; the HTTP layer only serialises them (the
models in :mod:`.models` document their shape). No web framework is imported here: the CLI
draws ``orch nodes`` with :func:`text_map`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrator.resources.cluster import Cluster
from orchestrator.resources.hostlist import compress_hostlist
from orchestrator.resources.topology import Torus3DTopology, TreeTopology

__all__ = [
    "AGGREGATE_NODES",
    "MAP_NODES",
    "aggregate",
    "display_id",
    "job_document",
    "layout",
    "text_map",
    "text_summary",
]

API_VERSION = "1.0.0"


def display_id(row: Mapping[str, Any]) -> str:
    """Slurm's notation: ``12`` for a job, ``12_3`` for element 3 of array 12."""
    if row.get("array_id") is not None and row.get("array_index") is not None:
        return f"{row['array_id']}_{row['array_index']}"
    return str(row["id"])


def job_document(
    row: Mapping[str, Any],
    nodelist: Sequence[str] | None = None,
    events: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON document of one job (with its events when given)."""
    doc: dict[str, Any] = {
        "id": row["id"],
        "display_id": display_id(row),
        "name": row["name"],
        "user": row["user"],
        "account": row["account"],
        "state": row["state"],
        "reason": row["reason"],
        "nodes": row["nodes"],
        "shape": row["shape"],
        "tasks_per_node": row["tasks_per_node"],
        "cpus_per_task": row["cpus_per_task"],
        "gpus_per_task": row["gpus_per_task"],
        "gpus_per_node": row["gpus_per_node"],
        "mem_per_node_mb": row["mem_per_node_mb"],
        "exclusive": bool(row["exclusive"]),
        "partition": row["partition"],
        "time": row["walltime_s"],
        "priority": row["priority"],
        "submit_time": row["submit_time"],
        "start_time": row["start_time"],
        "end_time": row["end_time"],
        "exit_code": row["exit_code"],
        # Accounting of the attempt that ended the job (None: unknown, or not ended).
        "cpu_time_s": row.get("cpu_time_s"),
        "max_rss_mb": row.get("max_rss_mb"),
        "task_usage": row.get("task_usage"),
        "attempts": row["attempts"],
        "max_retries": row["max_retries"],
        "array_id": row["array_id"],
        "array_index": row["array_index"],
        "array_limit": row["array_limit"],
        "dependency": row["dependency"],
        "argv": row["argv"],
        "script": row["script"] is not None,
        "workdir": row["workdir"],
        "nodelist": compress_hostlist(nodelist) if nodelist else "",
    }
    if events is not None:
        doc["events"] = [
            {
                "time": e["time"],
                "old_state": e["old_state"],
                "new_state": e["new_state"],
                "reason": e["reason"],
            }
            for e in events
        ]
    return doc


AGGREGATE_NODES = 4096
"""Past this many nodes :func:`layout` adds ``aggregate`` and no ``names``: the status page then
draws a heat map of cells (a Tofu unit each on Fugaku) instead of one square per node."""
MAX_CELLS = 16384
"""The most cells an ``aggregate`` has (a torus's cells grow past its unit to stay under it)."""


def layout(
    cluster: Cluster,
    owners: Sequence[int | None],
    labels: Mapping[int, str] | None = None,
    usage: Sequence[Mapping[str, Any]] | None = None,
    users: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """The allocation picture: who holds each node, grouped as the topology suggests.

    A tree is drawn per leaf switch, a torus as Z slices of X x Y grids, a flat cluster as one
    row. ``owners[i]`` is the job holding node ``i`` (None: free); ``labels`` names a job as
    ``orch queue`` does (``12_3``: element 3 of array 12), when that differs from its id. On a
    cluster that shares nodes, ``usage[i]`` says what of node ``i`` is in use and by whom
    (``Daemon.node_usage``).

    Up to :data:`AGGREGATE_NODES` nodes the document names every node (``names``). Past it, it
    adds ``aggregate`` (see :func:`aggregate`): occupancy per cell of nodes and every job's
    block, which is what the status page draws for a big cluster; ``users`` (job id -> user),
    when given, goes into it so that the page finds a user's jobs without asking again.
    """
    topo = cluster.topology
    doc: dict[str, Any] = {
        "cluster": cluster.name,
        "kind": topo.kind,
        "size": topo.size,
        "describe": topo.describe(),
        "owners": list(owners),
        "labels": {str(job): label for job, label in (labels or {}).items()},
        "allocated": len(owners) - list(owners).count(None),
    }
    if usage is not None:
        doc["usage"] = list(usage)
    if isinstance(topo, TreeTopology):
        doc["groups"] = [
            {"name": leaf.name, "nodes": [int(n) for n in nodes]}
            for leaf, nodes in zip(topo.leaves, topo.leaf_nodes, strict=True)
        ]
    elif isinstance(topo, Torus3DTopology):
        doc["dims"] = list(topo.dims)
    else:
        doc["groups"] = [{"name": cluster.name, "nodes": list(range(topo.size))}]
    if topo.size <= AGGREGATE_NODES:
        doc["names"] = list(topo.node_names)
    else:
        unit = topo.unit if isinstance(topo, Torus3DTopology) else (1, 1, 1)
        doc["aggregate"] = aggregate(doc, owners, usage, users, unit=unit)
    return doc


def aggregate(
    doc: Mapping[str, Any],
    owners: Sequence[int | None],
    usage: Sequence[Mapping[str, Any]] | None = None,
    users: Mapping[int, str] | None = None,
    *,
    unit: Sequence[int] = (1, 1, 1),
) -> dict[str, Any]:
    """A big cluster as the status page draws it: cells of nodes, how many of each cell's
    nodes are busy, and every job's block.

    On a torus a cell is the allocation ``unit`` (Fugaku: one 2 x 3 x 2 Tofu unit, 12 nodes;
    24 x 23 x 24 = 13,248 cells), widened along the axis of most cells while there would be over
    :data:`MAX_CELLS`; the page draws one X x Y grid of cells per cell layer along Z. Elsewhere
    a cell is a run of consecutive nodes of one group (leaf switch), as few nodes as keep the
    count under :data:`MAX_CELLS`; the page draws a row of cells per group.

    Keys: ``by`` (``"torus"`` or ``"groups"``); ``busy`` (busy nodes per cell); ``capacity``
    (nodes per cell); for a torus ``cell`` (nodes per cell along x, y, z) and ``grid`` (cells
    along x, y, z; cell ``(cx, cy, cz)`` has index ``(cx * GY + cy) * GZ + cz``), for groups
    ``rows`` (``{"name", "first", "count"}``: the group's cells are ``first .. first+count-1``);
    ``jobs``, one per job holding nodes, by id: ``id``, ``nodes`` (how many it holds),
    ``cells`` (the cells it has nodes in, ascending), and for a torus ``lo`` and ``size``, its
    bounding box in node coordinates (the shortest stretch along each axis, which may wrap:
    ``lo + size`` past the edge goes on at 0), for groups ``groups`` (the groups it spans);
    ``user`` when ``users`` names it.
    """
    import numpy as np  # the daemon has it already; kept off the CLI's import path

    # (node, job) pairs, by job then node: a shared node can hold several jobs.
    if usage is not None and any(u["jobs"] for u in usage):
        pairs = [(n, j) for n, u in enumerate(usage) for j in u["jobs"]]
        nodes = np.array([p[0] for p in pairs], dtype=np.int64)
        jobs = np.array([p[1] for p in pairs], dtype=np.int64)
    else:
        # None becomes NaN: one pass in C instead of a generator over every node.
        held = np.array(owners, dtype=np.float64)
        nodes = np.flatnonzero(~np.isnan(held))
        jobs = held[nodes].astype(np.int64)
    order = np.lexsort((nodes, jobs))
    nodes, jobs = nodes[order], jobs[order]
    if doc["kind"] == "torus3d":
        out, cell_of, describe = _torus_aggregate(doc, unit)
    else:
        out, cell_of, describe = _group_aggregate(doc)
    count = len(out["capacity"])
    out["busy"] = np.bincount(cell_of[_distinct(nodes)], minlength=count).tolist()
    ids, sizes = np.unique(jobs, return_counts=True)
    slot = np.repeat(np.arange(len(ids)), sizes)  # each pair's job, as a position in ids
    # Each job's cells: the distinct (job, cell) keys, split by job.
    keys = _distinct(slot * count + cell_of[nodes])
    bounds = np.searchsorted(keys // count, np.arange(len(ids) + 1)).tolist()
    cells = (keys % count).tolist()
    extra = describe(slot, nodes, len(ids))
    entries = []
    for i, (job, held_nodes) in enumerate(zip(ids.tolist(), sizes.tolist(), strict=True)):
        entry: dict[str, Any] = {
            "id": job,
            "nodes": held_nodes,
            "cells": cells[bounds[i] : bounds[i + 1]],
            **extra[i],
        }
        if users and job in users:
            entry["user"] = users[job]
        entries.append(entry)
    out["jobs"] = entries
    return out


Describe = Callable[[Any, Any, int], list[dict[str, Any]]]
"""(each pair's job position, each pair's node, how many jobs) -> per job, what
:func:`aggregate` says of its block besides its cells."""


def _torus_aggregate(
    doc: Mapping[str, Any], unit: Sequence[int]
) -> tuple[dict[str, Any], Any, Describe]:
    import numpy as np

    dims = [int(d) for d in doc["dims"]]
    cell, grid = _torus_cells(dims, unit)
    x, rest = np.divmod(np.arange(int(doc["size"]), dtype=np.int64), dims[1] * dims[2])
    y, z = np.divmod(rest, dims[2])
    cell_of = ((x // cell[0]) * grid[1] + y // cell[1]) * grid[2] + z // cell[2]
    capacity = [cell[0] * cell[1] * cell[2]] * (grid[0] * grid[1] * grid[2])

    def describe(slot: Any, nodes: Any, jobs: int) -> list[dict[str, Any]]:
        spans = []
        for axis, dim in zip((x, y, z), dims, strict=True):
            present = np.zeros((jobs, dim), dtype=bool)
            present[slot, axis[nodes]] = True
            spans.append([_circular_span(np.flatnonzero(row).tolist(), dim) for row in present])
        return [
            {"lo": [s[0] for s in job], "size": [s[1] for s in job]}
            for job in zip(*spans, strict=True)
        ]

    return {"by": "torus", "cell": cell, "grid": grid, "capacity": capacity}, cell_of, describe


def _group_aggregate(doc: Mapping[str, Any]) -> tuple[dict[str, Any], Any, Describe]:
    import numpy as np

    groups = doc["groups"]
    size = int(doc["size"])
    per = max(1, -(-size // MAX_CELLS))
    cell_of = np.zeros(size, dtype=np.int64)
    group_of = np.zeros(size, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    capacity: list[int] = []
    for g, group in enumerate(groups):
        members = np.asarray(group["nodes"], dtype=np.int64)
        first, count = len(capacity), -(-len(members) // per)
        cell_of[members] = first + np.arange(len(members)) // per
        group_of[members] = g
        capacity += [per] * count
        if count:
            capacity[-1] = len(members) - per * (count - 1)
        rows.append({"name": group["name"], "first": first, "count": count})

    def describe(slot: Any, nodes: Any, jobs: int) -> list[dict[str, Any]]:
        present = np.zeros((jobs, len(groups)), dtype=bool)
        present[slot, group_of[nodes]] = True
        return [{"groups": [groups[g]["name"] for g in np.flatnonzero(row)]} for row in present]

    return {"by": "groups", "rows": rows, "capacity": capacity}, cell_of, describe


def _distinct(values: Any) -> Any:
    """The distinct values of an integer array, ascending (a sort: numpy's unique hashes)."""
    import numpy as np

    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def _torus_cells(dims: Sequence[int], unit: Sequence[int]) -> tuple[list[int], list[int]]:
    """The cell (nodes along x, y, z) and the grid of cells of a torus: the unit, widened by
    the smallest factor of the axis with the most cells while there are over MAX_CELLS."""
    cell = [int(u) for u in unit]
    grid = [d // c for d, c in zip(dims, cell, strict=True)]
    while grid[0] * grid[1] * grid[2] > MAX_CELLS:
        axis = max(range(3), key=lambda a: grid[a])
        factor = next(f for f in range(2, grid[axis] + 1) if grid[axis] % f == 0)
        cell[axis] *= factor
        grid[axis] //= factor
    return cell, grid


def _circular_span(values: list[int], dim: int) -> tuple[int, int]:
    """The shortest stretch ``(lo, size)`` of a ring of ``dim`` positions that covers the sorted
    distinct ``values``: the ring cut at its widest gap (no wrap when that gap is the edge)."""
    best_lo, best_size = values[0], values[-1] - values[0] + 1
    for a, b in itertools.pairwise(values):
        size = dim - (b - a) + 1
        if size < best_size:
            best_lo, best_size = b, size
    return best_lo, best_size


_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def text_map(doc: Mapping[str, Any]) -> str:
    """A text picture of a :func:`layout` document: one character per node, ``.`` free.

    A tree prints one row per leaf switch, a torus one X x Y grid per Z slice (x across, y
    down), a flat cluster one row; a legend maps characters to jobs.
    """
    owners: list[int | None] = list(doc["owners"])
    jobs = sorted({o for o in owners if o is not None})
    glyph = {job: _GLYPHS[i % len(_GLYPHS)] for i, job in enumerate(jobs)}

    def ch(node: int) -> str:
        owner = owners[node]
        return "." if owner is None else glyph[owner]

    lines = [f"{doc['cluster']}: {doc['describe']}, {doc['allocated']} of {doc['size']} allocated"]
    if doc.get("usage") is not None:
        return "\n".join(lines + _usage_rows(doc))
    if doc["kind"] == "torus3d":
        x_dim, y_dim, z_dim = doc["dims"]
        for z in range(z_dim):
            lines.append(f"z={z}")
            for y in range(y_dim):
                row = "".join(ch((x * y_dim + y) * z_dim + z) for x in range(x_dim))
                lines.append(f"  y={y:<3d} {row}")
    else:
        width = max(len(g["name"]) for g in doc["groups"])
        for group in doc["groups"]:
            cells = "".join(ch(n) for n in group["nodes"])
            lines.append(f"  {group['name']:<{width}} {cells}")
    if jobs:
        labels = doc.get("labels", {})
        lines.append("legend: " + "  ".join(f"{glyph[j]}={labels.get(str(j), j)}" for j in jobs))
    return "\n".join(lines)


def _usage_rows(doc: Mapping[str, Any]) -> list[str]:
    """One row per node of a cluster that shares nodes: its state, cores, GPUs and memory in
    use, and the jobs on it (as ``sinfo -N -O NodeList,StateLong,CPUsState,GresUsed``)."""
    names = doc.get("names") or [str(i) for i in range(doc["size"])]
    labels = doc.get("labels", {})
    width = max(len(str(n)) for n in names)
    rows = [f"  {'NODE':<{width}} {'STATE':<9} {'CPUS':>9} {'GPUS':>7} {'MEM(MB)':>15}  JOBS"]
    for name, node in zip(names, doc["usage"], strict=True):
        cpus, gpus, mem = node["cpus"], node["gpus"], node["mem_mb"]
        jobs = ",".join(str(labels.get(str(j), j)) for j in node["jobs"]) or "-"
        rows.append(
            f"  {name:<{width}} {node['state']:<9} {cpus[0]:>4}/{cpus[1]:<4} "
            f"{gpus[0]:>3}/{gpus[1]:<3} {mem[0]:>7}/{mem[1]:<7}  {jobs}"
        )
    return rows


MAP_NODES = 1024
"""Past this many nodes ``orch nodes`` prints :func:`text_summary` (``--all``: the whole map)."""


def text_summary(doc: Mapping[str, Any], most_jobs: int = 20) -> str:
    """A :func:`layout` document in a few lines, for clusters too big to draw node by node:
    occupancy per torus Z plane or per leaf switch (a bar of 40 characters), then the largest
    jobs with their node counts."""
    owners: list[int | None] = list(doc["owners"])
    lines = [f"{doc['cluster']}: {doc['describe']}, {doc['allocated']} of {doc['size']} allocated"]
    if doc["kind"] == "torus3d":
        x_dim, y_dim, z_dim = doc["dims"]
        used = [0] * z_dim
        for node, owner in enumerate(owners):
            if owner is not None:
                used[node % z_dim] += 1
        groups = [(f"z={z}", used[z], x_dim * y_dim) for z in range(z_dim)]
    else:
        groups = [
            (g["name"], sum(owners[n] is not None for n in g["nodes"]), len(g["nodes"]))
            for g in doc["groups"]
        ]
    width = max(len(name) for name, _, _ in groups)
    for name, busy, total in groups:
        filled = round(40 * busy / total) if total else 0
        bar = "#" * filled + "." * (40 - filled)
        lines.append(f"  {name:<{width}} {bar} {busy}/{total}")
    sizes: dict[int, int] = {}
    for owner in owners:
        if owner is not None:
            sizes[owner] = sizes.get(owner, 0) + 1
    if sizes:
        labels = doc.get("labels", {})
        largest = sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:most_jobs]
        shown = "  ".join(f"{labels.get(str(j), j)}:{n}" for j, n in largest)
        more = f" (and {len(sizes) - most_jobs} more)" if len(sizes) > most_jobs else ""
        lines.append(f"jobs (nodes): {shown}{more}")
    lines.append("(orch nodes --all draws every node)")
    return "\n".join(lines)
