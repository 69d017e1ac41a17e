"""What the API returns: job documents and the allocation map (and its text picture).

Pure functions of store rows and the daemon's state; the HTTP layer only serialises them (the
models in :mod:`.models` document their shape). No web framework is imported here: the CLI
draws ``orch nodes`` with :func:`text_map`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.resources.cluster import Cluster
from orchestrator.resources.hostlist import compress_hostlist
from orchestrator.resources.topology import Torus3DTopology, TreeTopology

__all__ = [
    "MAP_NODES",
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


def layout(
    cluster: Cluster,
    owners: Sequence[int | None],
    labels: Mapping[int, str] | None = None,
    usage: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The allocation picture: who holds each node, grouped as the topology suggests.

    A tree is drawn per leaf switch, a torus as Z slices of X x Y grids, a flat cluster as one
    row. ``owners[i]`` is the job holding node ``i`` (None: free); ``labels`` names a job as
    ``orch queue`` does (``12_3``: element 3 of array 12), when that differs from its id. On a
    cluster that shares nodes, ``usage[i]`` says what of node ``i`` is in use and by whom
    (``Daemon.node_usage``).
    """
    topo = cluster.topology
    doc: dict[str, Any] = {
        "cluster": cluster.name,
        "kind": topo.kind,
        "size": topo.size,
        "describe": topo.describe(),
        "owners": list(owners),
        "labels": {str(job): label for job, label in (labels or {}).items()},
        "allocated": sum(o is not None for o in owners),
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
    if topo.size <= 4096:
        doc["names"] = list(topo.node_names)
    return doc


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
