"""An emulator of Fujitsu PJM's user commands (pjsub, pjstat, pjdel) and of Fujitsu MPI's mpiexec.

No public PJM exists, so the PJM backend's tests run against this. It emulates the *interface*
(options, ``#PJM`` directives, checks against a machine and its resource groups, the documented
message and table formats); the jobs are real: every submitted script runs as local processes,
under a detached runner per job that advances the job's states, enforces the elapse limit and
honours pjdel. Standard library only, so any ``python3`` runs it.

State lives in the folder named by ``PJM_EMU_ROOT``::

    config.json         the machine: {"shape": [X, Y, Z], "rscgrp": {name: {...}}, ...}
    seq, lock           the job id counter and the lock every change of state takes
    jobs/<ID>/          record.json (the job), script, runner.log, cancel (a pjdel request)

Usage: ``python3 pjm_emu.py install BIN_DIR [--python PY]`` writes the executables ``pjsub``,
``pjstat``, ``pjdel`` and ``mpiexec`` into BIN_DIR; the tests put BIN_DIR first on PATH.
``python3 pjm_emu.py nodedown JOBID`` fails a node under a running job (end code 20).
See README.md next to this file for what is and is not emulated.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
COMMANDS = ("pjsub", "pjstat", "pjdel", "mpiexec")
DEFAULT_CONFIG: dict[str, Any] = {
    "shape": [4, 6, 4],
    "unit": [2, 3, 2],
    "rscgrp": {
        "small": {"min_nodes": 1, "max_nodes": 96, "max_elapse_s": 3600},
        "large": {"min_nodes": 25, "max_nodes": 96, "max_elapse_s": 3600},
    },
    "default_rscgrp": "small",
    "default_elapse_s": 600,
    "kill_grace_s": 2.0,
    "tick_s": 0.02,
    "user": "user1",
}
RUNNING = ("RNA", "RNP", "RUN", "RNE", "RNO")
WAITING = ("ACC", "QUE", "HLD")
FINISHED = ("EXT", "CCL", "ERR", "RJT")


class PjmUsageError(Exception):
    """An ``[ERR.] PJM nnnn`` message: the command prints it and exits 1."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- state folder ------------------------------------------------------------------------------


def root() -> Path:
    value = os.environ.get("PJM_EMU_ROOT")
    if not value:
        raise PjmUsageError("0001", "PJM_EMU_ROOT is not set (the emulator's state folder)")
    path = Path(value)
    (path / "jobs").mkdir(parents=True, exist_ok=True)
    return path


def config(base: Path) -> dict[str, Any]:
    cfg = dict(DEFAULT_CONFIG)
    path = base / "config.json"
    if path.exists():
        cfg.update(json.loads(path.read_text()))
    return cfg


@contextmanager
def locked(base: Path) -> Iterator[None]:
    fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def job_dir(base: Path, jid: str) -> Path:
    return base / "jobs" / jid


def load(base: Path, jid: str) -> dict[str, Any]:
    return dict(json.loads((job_dir(base, jid) / "record.json").read_text()))


def save(base: Path, rec: dict[str, Any]) -> None:
    write_json(job_dir(base, rec["id"]) / "record.json", rec)


def all_records(base: Path) -> list[dict[str, Any]]:
    out = []
    if not (base / "jobs").is_dir():  # no PJM command has run yet
        return out
    for d in (base / "jobs").iterdir():
        try:
            out.append(json.loads((d / "record.json").read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            continue
    return sorted(out, key=lambda r: (r["seq"], r.get("sub", 0)))


def next_seq(base: Path) -> int:
    path = base / "seq"
    value = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(value))
    return value


# -- directives --------------------------------------------------------------------------------

_ELAPSE = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+)$")


def parse_elapse(text: str) -> int:
    """``[[h:]m:]s`` -> seconds; a range ``min-max`` keeps its maximum."""
    value = text.rsplit("-", maxsplit=1)[-1] or text.split("-", maxsplit=1)[0]
    match = _ELAPSE.match(value.strip())
    if not match:
        raise PjmUsageError("0050", f"elapse={text} is not [[hour:]minute:]second.")
    h, m, s = (int(g) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s


def parse_node(text: str, cfg: dict[str, Any]) -> tuple[list[int] | None, int, str]:
    """``node=`` value -> (shape or None, nodes allocated, the NODE_REQUIRE text)."""
    dims_text, *suffixes = text.lower().split(":")
    try:
        extents = [int(p) for p in dims_text.split("x")]
    except ValueError:
        raise PjmUsageError("0050", f"node={text} is not N, NxN or NxNxN.") from None
    if not 1 <= len(extents) <= 3 or min(extents) < 1:
        raise PjmUsageError("0050", f"node={text} is not N, NxN or NxNxN.")
    for suffix in suffixes:
        if suffix not in ("torus", "mesh", "noncont", "strict"):
            raise PjmUsageError("0050", f"node={text}: unknown placement {suffix!r}.")
    if len(extents) == 1 and not suffixes:
        return None, extents[0], str(extents[0])
    shape3 = ([*extents, 1, 1])[:3]
    if "torus" in suffixes:
        # Torus jobs take whole Tofu units, so they can get more nodes than they asked for.
        unit = cfg["unit"]
        shape3 = [math.ceil(e / u) * u for e, u in zip(shape3, unit, strict=False)]
    dims = list(cfg["shape"])
    fits = (
        all(e <= d for e, d in zip(shape3, dims, strict=False))
        if "strict" in suffixes
        else all(e <= d for e, d in zip(sorted(shape3), sorted(dims), strict=False))
    )
    if not fits and "noncont" not in suffixes:
        raise PjmUsageError(
            "0054", f"node={text} does not fit the machine ({'x'.join(map(str, dims))})."
        )
    count = math.prod(shape3)
    shown = "x".join(str(e) for e in shape3[: len(extents)])
    return shape3, count, f"{count}:{shown}"


def read_directives(script: str) -> list[str]:
    """The option words of the ``#PJM`` lines at the top of a script."""
    words: list[str] = []
    for line in script.splitlines()[1:] if script.startswith("#!") else script.splitlines():
        stripped = line.strip()
        if stripped.startswith("#PJM"):
            words += shlex.split(stripped[4:])
        elif stripped and not stripped.startswith("#"):
            break
    return words


def parse_options(words: list[str], opts: dict[str, Any]) -> list[str]:
    """Apply pjsub options to ``opts``; return the words left (the script path)."""
    rest: list[str] = []
    i = 0

    def value() -> str:
        nonlocal i
        i += 1
        if i >= len(words):
            raise PjmUsageError("0004", f"option {words[i - 1]} needs a value.")
        return words[i]

    while i < len(words):
        w = words[i]
        if w in ("-L", "--rsc-list"):
            for item in value().split(","):
                key, _, val = item.partition("=")
                opts.setdefault("L", {})[key.strip()] = val.strip()
        elif w == "--mpi":
            for item in value().split(","):
                key, _, val = item.partition("=")
                opts.setdefault("mpi", {})[key.strip()] = val.strip()
        elif w == "-N":
            opts["name"] = value()
        elif w == "-o":
            opts["stdout"] = value()
        elif w == "-e":
            opts["stderr"] = value()
        elif w == "-j":
            opts["join"] = True
        elif w in ("-s", "-S"):
            opts["stats"] = True
        elif w == "-g":
            opts["group"] = value()
        elif w == "-x":
            for item in value().split(","):
                key, _, val = item.partition("=")
                opts.setdefault("env", {})[key.strip()] = val
        elif w == "-X":
            opts["export_all"] = True
        elif w == "--bulk":
            opts["bulk"] = True
        elif w == "--step":
            opts["step"] = True
        elif w == "--sparam":
            opts["sparam"] = value()
        elif w.startswith("-"):
            raise PjmUsageError("0004", f"unknown option {w}.")
        else:
            rest.append(w)
        i += 1
    return rest


# -- pjsub -------------------------------------------------------------------------------------


def pjsub(argv: list[str]) -> str:
    base = root()
    cfg = config(base)
    cli: dict[str, Any] = {}
    rest = parse_options(argv, cli)
    if len(rest) > 1:
        raise PjmUsageError("0004", f"more than one job script: {' '.join(rest)}.")
    if rest:
        script_path = Path(rest[0])
        try:
            script = script_path.read_text()
        except OSError as e:
            raise PjmUsageError("0020", f"cannot read job script {rest[0]}: {e.strerror}.") from e
        name = script_path.name
    else:
        script, name = sys.stdin.read(), "STDIN"
    opts: dict[str, Any] = {}
    parse_options(read_directives(script), opts)
    for key, val in cli.items():  # the command line wins over the script's directives
        if isinstance(val, dict):
            opts.setdefault(key, {}).update(val)
        else:
            opts[key] = val
    limits = opts.get("L", {})
    rscgrp = limits.get("rscgrp", cfg["default_rscgrp"])
    group = cfg["rscgrp"].get(rscgrp)
    if group is None:
        raise PjmUsageError("0007", f"rscgrp={rscgrp} is not a resource group of this system.")
    shape, count, node_require = parse_node(limits.get("node", "1"), cfg)
    if count < group["min_nodes"]:
        raise PjmUsageError(
            "0054", f"node={count} is less than the lower limit ({group['min_nodes']})."
        )
    if count > group["max_nodes"] or count > math.prod(cfg["shape"]):
        raise PjmUsageError(
            "0054", f"node={count} is more than the upper limit ({group['max_nodes']})."
        )
    elapse = parse_elapse(limits["elapse"]) if "elapse" in limits else cfg["default_elapse_s"]
    if elapse > group["max_elapse_s"]:
        raise PjmUsageError(
            "0054",
            f"elapse={fmt_elapse(elapse)} is more than the upper limit "
            f"({fmt_elapse(group['max_elapse_s'])}).",
        )
    mpi = opts.get("mpi", {})
    ppn = int(mpi.get("max-proc-per-node", 1))
    proc = int(mpi.get("proc", count * ppn))
    if proc > count * ppn:
        raise PjmUsageError(
            "0054", f"proc={proc} is more than node x max-proc-per-node ({count * ppn})."
        )
    sparam = opts.get("sparam", "")
    members: list[tuple[str, int, dict[str, Any]]] = []
    with locked(base):
        if opts.get("bulk"):
            match = re.fullmatch(r"(\d+)-(\d+)", sparam.strip())
            if not match or int(match.group(1)) > int(match.group(2)):
                raise PjmUsageError("0050", f'--sparam "{sparam}" is not a bulk range FIRST-LAST.')
            seq = next_seq(base)
            gid, md = str(seq), "BU"
            for k in range(int(match.group(1)), int(match.group(2)) + 1):
                members.append((f"{seq}[{k}]", k, {"bulknum": k}))
        elif opts.get("step"):
            params = dict(p.partition("=")[::2] for p in sparam.split(",") if p)
            md = "ST"
            if "jid" in params:
                seq = int(params["jid"])
                steps = [r for r in all_records(base) if r["seq"] == seq and r["md"] == "ST"]
                if not steps:
                    raise PjmUsageError("0112", f"Job {seq} does not exist.")
                stepnum = max(r["sub"] for r in steps) + 1
            else:
                seq, stepnum = next_seq(base), int(params.get("sn", 0))
            gid = str(seq)
            extra = {"stepnum": stepnum, "after": f"{seq}_{stepnum - 1}" if stepnum else None}
            extra["sd"] = params.get("sd")
            members.append((f"{seq}_{stepnum}", stepnum, extra))
        else:
            seq = next_seq(base)
            gid, md = str(seq), "NM"
            members.append((gid, 0, {}))
        now = time.time()
        env = (
            dict(os.environ)
            if opts.get("export_all")
            else {
                k: os.environ[k]
                for k in ("PATH", "HOME", "USER", "LOGNAME", "LANG")
                if k in os.environ
            }
        )
        env.update(opts.get("env", {}))
        for jid, sub, extra in members:
            d = job_dir(base, jid)
            d.mkdir(parents=True)
            (d / "script").write_text(script)
            rec = {
                "id": jid,
                "group": gid,
                "seq": seq,
                "sub": sub,
                "md": md,
                "name": opts.get("name", name),
                "state": "ACC",
                "accept": now,
                "start": None,
                "end": None,
                "elapse_lim": elapse,
                "nodes": count,
                "shape": shape,
                "node_require": node_require,
                "rscgrp": rscgrp,
                "group_name": opts.get("group", "-"),
                "proc": proc,
                "ppn": ppn,
                "cwd": os.getcwd(),
                "stdout": opts.get("stdout"),
                "stderr": opts.get("stderr"),
                "join": bool(opts.get("join")),
                "stats": bool(opts.get("stats")),
                "env": env,
                "exit_code": None,
                "signal": None,
                "end_code": None,
                "bulknum": None,
                "stepnum": None,
                "after": None,
                "sd": None,
                **extra,
            }
            save(base, rec)
    for jid, _, _ in members:
        start_runner(base, jid)
    shown = members[0][0] if md == "ST" else gid
    return f"[INFO] PJM 0000 pjsub Job {shown} submitted.\n"


def start_runner(base: Path, jid: str) -> None:
    log = open(job_dir(base, jid) / "runner.log", "ab")  # noqa: SIM115 - handed to the child
    subprocess.Popen(
        [sys.executable, "-I", "-S", str(HERE), "_run", str(base), jid],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        close_fds=True,
    )
    log.close()


# -- the runner: one detached process per job --------------------------------------------------


def set_state(base: Path, jid: str, **fields: Any) -> dict[str, Any]:
    with locked(base):
        rec = load(base, jid)
        rec.update(fields)
        save(base, rec)
    return rec


def run_job(base: Path, jid: str) -> None:
    cfg = config(base)
    tick = float(cfg["tick_s"])
    cancel = job_dir(base, jid) / "cancel"
    rec = set_state(base, jid, state="QUE", runner=os.getpid())
    # A step waits for the step before it, then checks its dependency condition.
    while rec.get("after"):
        try:
            before = load(base, rec["after"])
        except FileNotFoundError:
            break
        if before["state"] in FINISHED:
            if step_deleted(rec.get("sd"), before):
                set_state(base, jid, state="CCL", end_code=1, end=time.time())
                return
            break
        if cancel.exists():
            set_state(base, jid, state="CCL", end_code=1, end=time.time())
            return
        time.sleep(tick)
    # Queue until the machine has the nodes (whole machine, counted in nodes).
    total = math.prod(cfg["shape"])
    while True:
        if cancel.exists():
            set_state(base, jid, state="CCL", end_code=1, end=time.time())
            return
        with locked(base):
            records = all_records(base)
            used = sum(r["nodes"] for r in records if r["state"] in RUNNING)
            rec = load(base, jid)
            if used + rec["nodes"] <= total and not _earlier_fits(records, rec, total - used):
                rec["state"] = "RNA"
                save(base, rec)
                break
        time.sleep(tick)
    set_state(base, jid, state="RNP")
    rec = set_state(base, jid, state="RUN", start=time.time())
    end_code, exit_code, signum = execute(base, rec, cancel, cfg)
    set_state(base, jid, state="RNE")
    set_state(base, jid, state="RNO")
    final = "CCL" if end_code == 1 else "EXT"
    rec = set_state(
        base, jid, state=final, end_code=end_code, exit_code=exit_code, signal=signum,
        end=time.time(),
    )  # fmt: skip
    if rec["stats"]:
        out = Path(rec["cwd"]) / f"{rec['name']}.{jid}.stats"
        out.write_text(
            f"JOB ID : {jid}\nJOB NAME : {rec['name']}\nSTATE : {final}\n"
            f"PJM CODE : {end_code}\nEXIT CODE : {exit_code if exit_code is not None else '-'}\n"
            f"NODE NUM (REQUIRE) : {rec['node_require']}\n"
            f"ELAPSE TIME (USE) : {fmt_elapse(rec['end'] - rec['start'])}\n"
        )


def _earlier_fits(records: list[dict[str, Any]], rec: dict[str, Any], free: int) -> bool:
    """Whether a job submitted before ``rec`` waits for nodes and fits in ``free`` now.

    Each job has its own runner process, and which of them looks first is up to the OS; PJM
    starts jobs in submission order, so a later job yields to an earlier one that fits (and
    passes one that does not, as backfilling would). Steps waiting for their predecessor and
    held jobs do not count.
    """
    key = (rec["seq"], rec.get("sub", 0))
    return any(
        (r["seq"], r.get("sub", 0)) < key
        and r["state"] in ("ACC", "QUE")
        and not r.get("after")
        and r["nodes"] <= free
        for r in records
    )


def step_deleted(sd: str | None, before: dict[str, Any]) -> bool:
    """``sd=ec!=0:...``: the step is deleted when the condition on the step before holds."""
    if not sd:
        return False
    match = re.match(r"ec(==|!=|<=|>=|<|>)(\d+)", sd)
    if not match:
        return False
    code = before.get("exit_code")
    code = -1 if code is None else int(code)
    op, value = match.group(1), int(match.group(2))
    return bool(
        {
            "==": code == value, "!=": code != value, "<": code < value,
            ">": code > value, "<=": code <= value, ">=": code >= value,
        }[op]
    )  # fmt: skip


def execute(
    base: Path, rec: dict[str, Any], cancel: Path, cfg: dict[str, Any]
) -> tuple[int, int | None, int | None]:
    """Run the job script; returns (PJM end code, exit code, signal)."""
    jid = rec["id"]
    cwd = Path(rec["cwd"])
    suffix = f"{rec['seq']}.{rec['bulknum']}" if rec["bulknum"] is not None else jid
    out_path = cwd / (rec["stdout"] or f"{rec['name']}.{suffix}.out")
    err_path = cwd / (rec["stderr"] or f"{rec['name']}.{suffix}.err")
    script_path = job_dir(base, jid) / "script"
    first = script_path.read_text().splitlines()[:1]
    interpreter = shlex.split(first[0][2:]) if first and first[0].startswith("#!") else ["/bin/sh"]
    shape = rec["shape"] or [rec["nodes"], 1, 1]
    env = dict(rec["env"])
    env.update(
        {
            "PJM_JOBID": jid,
            "PJM_JOBNAME": rec["name"],
            "PJM_O_WORKDIR": str(cwd),
            "PJM_NODE": str(rec["nodes"]),
            "PJM_NODE_X": str(shape[0]),
            "PJM_NODE_Y": str(shape[1]),
            "PJM_NODE_Z": str(shape[2]),
            "PJM_MPI_PROC": str(rec["proc"]),
            "PJM_PROC_BY_NODE": str(rec["ppn"]),
            "PJM_EMU_ROOT": str(base),
            "PJM_EMU_SHAPE": "x".join(str(s) for s in shape),
        }
    )
    if rec["bulknum"] is not None:
        env["PJM_BULKNUM"] = str(rec["bulknum"])
        env["PJM_SUBJOBID"] = jid
    if rec["stepnum"] is not None:
        env["PJM_STEPNUM"] = str(rec["stepnum"])
        env["PJM_SUBJOBID"] = jid
    with open(out_path, "wb") as out:
        err = out if rec["join"] else open(err_path, "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [*interpreter, str(script_path)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        finally:
            if err is not out:
                err.close()
    deadline = rec["start"] + rec["elapse_lim"]
    end_code = 0
    killed_at: float | None = None
    node_down = cancel.with_name("nodedown")
    while proc.poll() is None:
        now = time.time()
        if node_down.exists():
            # A node of the job died: its processes go at once, with no signal to catch.
            end_code = 20
            killpg(proc.pid, signal.SIGKILL)
        elif killed_at is None and (cancel.exists() or now >= deadline):
            end_code = 1 if cancel.exists() else 11
            killed_at = now
            killpg(proc.pid, signal.SIGTERM)
        elif killed_at is not None and now >= killed_at + float(cfg["kill_grace_s"]):
            killpg(proc.pid, signal.SIGKILL)
        time.sleep(float(cfg["tick_s"]))
    # A job ends with its script: whatever it left running in the job is killed.
    killpg(proc.pid, signal.SIGKILL)
    code = proc.returncode
    if code < 0:
        return end_code, None, -code
    return end_code, code, None


def killpg(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def fmt_elapse(seconds: float) -> str:
    total = int(seconds)
    return f"{total // 3600:04d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def fmt_date(t: float | None) -> str:
    return "-" if t is None else time.strftime("%m/%d %H:%M:%S", time.localtime(t))


# -- pjdel -------------------------------------------------------------------------------------


def pjdel(argv: list[str]) -> tuple[str, str, int]:
    base = root()
    if not argv:
        raise PjmUsageError("0004", "no job id given.")
    out, err, rc = [], [], 0
    records = all_records(base)
    for jid in argv:
        members = [r for r in records if r["id"] == jid or r["group"] == jid]
        live = [r for r in members if r["state"] not in FINISHED]
        if not live:
            err.append(f"[ERR.] PJM 0112 pjdel Job {jid} does not exist.\n")
            rc = 1
            continue
        for rec in live:
            (job_dir(base, rec["id"]) / "cancel").write_text("pjdel\n")
        out.append(f"[INFO] PJM 0100 pjdel Accepted job {jid}.\n")
    return "".join(out), "".join(err), rc


# -- entry points ------------------------------------------------------------------------------


def install(bin_dir: Path, python: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(
            f"#!{python} -IS\nimport sys\nsys.path.insert(0, {str(HERE.parent)!r})\n"
            f"import pjm_emu\nsys.exit(pjm_emu.main({name!r}, sys.argv[1:]))\n"
        )
        path.chmod(0o755)


def node_down(base: Path, jid: str) -> None:
    """Fail a node under a running job (an administrator's view, not a PJM command): the job's
    processes are killed at once and it ends with end code 20."""
    (job_dir(base, jid) / "nodedown").write_text("node down\n")


def stop_all(base: Path, timeout_s: float = 10.0) -> None:
    """pjdel every job still queued or running, wait for their runners, kill what is left."""
    records = all_records(base)
    for rec in records:
        if rec["state"] not in FINISHED:
            (job_dir(base, rec["id"]) / "cancel").write_text("stop_all\n")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if all(r["state"] in FINISHED for r in all_records(base)):
            return
        time.sleep(0.05)
    for rec in all_records(base):  # runners this emulator started, by their own pid
        if rec["state"] not in FINISHED and rec.get("runner"):
            with suppress(ProcessLookupError):
                os.kill(rec["runner"], signal.SIGKILL)


def main(command: str, argv: list[str]) -> int:
    if command == "mpiexec":
        from pjm_emu_mpiexec import mpiexec

        # PJM's SIGTERM reaches every process of the job, the ranks too: mpiexec waits for
        # them to end (they may checkpoint first), as Fujitsu MPI's does.
        signal.signal(signal.SIGTERM, lambda *_: None)
        return mpiexec(argv)
    try:
        if command == "pjsub":
            sys.stdout.write(pjsub(argv))
        elif command == "pjstat":
            from pjm_emu_pjstat import pjstat

            sys.stdout.write(pjstat(argv))
        elif command == "pjdel":
            out, err, rc = pjdel(argv)
            sys.stdout.write(out)
            sys.stderr.write(err)
            return rc
        else:
            raise PjmUsageError("0004", f"unknown command {command}.")
    except PjmUsageError as e:
        sys.stderr.write(f"[ERR.] PJM {e.code} {command} {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_run":
        run_job(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "nodedown":
        node_down(root(), sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "install":
        py = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--python" else sys.executable
        install(Path(sys.argv[2]), py)
    elif len(sys.argv) >= 2 and sys.argv[1] in COMMANDS:
        sys.exit(main(sys.argv[1], sys.argv[2:]))
    else:
        print(__doc__)
        sys.exit(2)
