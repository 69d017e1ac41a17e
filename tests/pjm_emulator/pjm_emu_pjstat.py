"""The emulator's ``pjstat``: the user guide's table formats over the emulator's job records."""

from __future__ import annotations

import time
from typing import Any

from pjm_emu import (
    FINISHED,
    RUNNING,
    WAITING,
    PjmUsageError,
    all_records,
    config,
    fmt_date,
    fmt_elapse,
    root,
)

DEFAULT_COLUMNS = [
    "JOB_ID", "JOB_NAME", "MD", "ST", "USER", "START_DATE", "ELAPSE_LIM", "NODE_REQUIRE",
    "VNODE", "CORE", "V_MEM",
]  # fmt: skip
VERBOSE_COLUMNS = [
    "JOB_ID", "JOB_NAME", "MD", "ST", "USER", "GROUP", "START_DATE", "ELAPSE_TIM",
    "ELAPSE_LIM", "NODE_REQUIRE", "VNODE", "CORE", "V_MEM", "LST", "EC", "PC", "SN",
    "ACCEPT", "RSC_UNIT", "REASON",
]  # fmt: skip
CHOOSE = {
    "jid": "JOB_ID", "jnam": "JOB_NAME", "md": "MD", "st": "ST", "usr": "USER",
    "grp": "GROUP", "sdt": "START_DATE", "edt": "END_DATE", "elp": "ELAPSE_TIM",
    "elpl": "ELAPSE_LIM", "nnumr": "NODE_REQUIRE", "nnuma": "NODE_ALLOC", "lst": "LST",
    "ec": "EC", "pc": "PC", "sn": "SN", "adt": "ACCEPT", "rscg": "RSC_GRP",
}  # fmt: skip


def aggregate(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for a bulk or step job: the state of its sub jobs taken together."""
    if len(members) == 1 and members[0]["md"] == "NM":
        return members[0]
    row = dict(members[0])
    row["id"] = members[0]["group"]
    states = [m["state"] for m in members]
    running = [s for s in states if s in RUNNING]
    if running:
        row["state"] = "RUN" if "RUN" in running else running[0]
    elif any(s in WAITING for s in states):
        row["state"] = "QUE"
    else:
        row["state"] = "CCL" if "CCL" in states else "EXT"
    codes = [m["end_code"] for m in members if m["end_code"]]
    row["end_code"] = codes[0] if codes else (0 if row["state"] == "EXT" else None)
    starts = [m["start"] for m in members if m["start"] is not None]
    row["start"] = min(starts) if starts else None
    return row


def cell(rec: dict[str, Any], column: str, user: str) -> str:
    st = rec["state"]
    finished = st in FINISHED
    value: Any
    if column == "JOB_ID":
        value = rec["id"]
    elif column == "JOB_NAME":
        value = rec["name"]
    elif column == "MD":
        value = rec["md"]
    elif column in ("ST", "LST"):
        value = st
    elif column == "USER":
        value = user
    elif column == "GROUP":
        value = rec["group_name"]
    elif column == "START_DATE":
        value = fmt_date(rec["start"])
    elif column == "END_DATE":
        value = fmt_date(rec["end"])
    elif column == "ACCEPT":
        value = fmt_date(rec["accept"])
    elif column == "ELAPSE_LIM":
        value = fmt_elapse(rec["elapse_lim"])
    elif column == "ELAPSE_TIM":
        start = rec["start"]
        value = "-" if start is None else fmt_elapse((rec["end"] or time.time()) - start)
    elif column in ("NODE_REQUIRE", "NODE_ALLOC"):
        value = rec["node_require"]
    elif column == "EC":
        value = rec["exit_code"] if finished and rec["exit_code"] is not None else "-"
    elif column == "PC":
        value = rec["end_code"] if finished and rec["end_code"] is not None else "-"
    elif column == "SN":
        value = rec["signal"] if rec["signal"] is not None else "-"
    elif column in ("RSC_GRP", "RSC_UNIT"):
        value = rec["rscgrp"] if column == "RSC_GRP" else "rscunit_ft01"
    else:
        value = "-"
    return str(value)


def pjstat(argv: list[str]) -> str:
    base = root()
    cfg = config(base)
    history = verbose = expand = False
    columns: list[str] | None = None
    wanted: list[str] = []
    i = 0
    while i < len(argv):
        w = argv[i]
        if w == "-H":
            history = True
        elif w == "-v":
            verbose = True
        elif w == "-E":
            expand = True
        elif w == "--choose":
            i += 1
            if i >= len(argv):
                raise PjmUsageError("0004", "option --choose needs a value.")
            keys = argv[i].split(",")
            unknown = [k for k in keys if k not in CHOOSE]
            if unknown:
                raise PjmUsageError("0004", f"--choose: unknown item {unknown[0]}.")
            columns = [CHOOSE[k] for k in keys]
        elif w.startswith("-"):
            raise PjmUsageError("0004", f"unknown option {w}.")
        else:
            wanted.append(w)
        i += 1
    records = all_records(base)
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(rec["group"], []).append(rec)
    rows: list[dict[str, Any]] = []
    for gid, members in groups.items():
        expand_this = expand or any(m["id"] in wanted for m in members if m["id"] != gid)
        candidates = members if expand_this and members[0]["md"] != "NM" else [aggregate(members)]
        for rec in candidates:
            if wanted and rec["id"] not in wanted and rec["group"] not in wanted:
                continue
            if (rec["state"] in FINISHED) != history:
                continue
            rows.append(rec)
    names = columns or (VERBOSE_COLUMNS if verbose else DEFAULT_COLUMNS)
    table = [names] + [[cell(r, c, cfg["user"]) for c in names] for r in rows]
    widths = [max(len(row[k]) for row in table) for k in range(len(names))]
    return "".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip() + "\n"
        for row in table
    )
