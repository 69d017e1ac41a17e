"""The per-rank supervisor of the PJM backend (standard library only; run by mpiexec).

Usage: ``mpiexec ... python -I -S supervisor.py JOB_JSON``

Fujitsu MPI's mpiexec starts one copy per rank and tells it its rank (``OMPI_COMM_WORLD_RANK``,
as Open MPI, on which Fujitsu MPI is built). This wrapper turns that into the variables every
backend of ours exports (``RANK``, ``LOCAL_RANK``, ``ORCH_NODE_RANK``, ...), records its pid and
start time, runs the job's command, copies the command's stdout and stderr line by line into the
job's two files with a ``RANK: `` label (as ``srun --label``; one ``write`` per line on a file
opened for appending, so ranks never interleave within a line), and writes the exit status
(with the CPU time and peak memory the kernel counted for the command) atomically, so the
daemon learns how each rank ended even when it was down at the time.

Signals: the daemon cannot reach a process inside a batch job, so it appends signal numbers to
``signals`` in the attempt's folder (shared file system) and each wrapper forwards them to its
command. A SIGTERM the wrapper receives itself came from the engine (pjdel, the elapse limit, the
pilot allocation ending): the task's end record (:mod:`orchestrator.nodeside.record`) then names
that signal, so the backend can requeue; a signal the daemon asked for is not named there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

if not __package__:
    # Run as a script under -I: the repository root (where orchestrator/nodeside lies) is not
    # on sys.path by itself.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from orchestrator.nodeside import record
from orchestrator.nodeside.files import atomic_write
from orchestrator.nodeside.rank_env import rank_environment

POLL_S = 0.05
RENDEZVOUS_S = 120.0


def _pump(source: IO[bytes], fd: int, label: bytes) -> None:
    """Copy lines from ``source`` to ``fd``, each prefixed, each in one write."""
    for line in iter(source.readline, b""):
        os.write(fd, label + (line if line.endswith(b"\n") else line + b"\n"))
    source.close()


def _signals(path: Path) -> list[int]:
    try:
        return [int(w) for w in path.read_text().split()]
    except (FileNotFoundError, ValueError):
        return []


def _rendezvous(path: Path, rank: int, timeout_s: float = RENDEZVOUS_S) -> tuple[str, str]:
    """``MASTER_ADDR`` and ``MASTER_PORT``: rank 0's host and a port free there.

    Rank 0 publishes them in the attempt's folder; the other ranks wait for the file. Only rank
    0's node can tell which of its ports is free, and which name the other nodes reach it by.
    """
    if rank == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        atomic_write(path, f"{socket.gethostname()} {port}\n")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            host, port_text = path.read_text().split()
            return host, port_text
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank 0 did not publish {path} in {timeout_s:g} s") from None
            time.sleep(0.02)


def _environment(job: dict[str, Any], rank: int) -> dict[str, str]:
    """The rank's environment: ours, the job's, the rank variables (and rendezvous)."""
    tpn = int(job["tasks_per_node"])
    env = dict(os.environ)
    env.update(job["env"])
    env.update(rank_environment(job["nodes"], tpn, rank // tpn, rank % tpn))
    if job.get("rendezvous"):
        env["MASTER_ADDR"], env["MASTER_PORT"] = _rendezvous(Path(job["dir"]) / "master", rank)
    return env


def _supervise(child: subprocess.Popen[bytes], signals_path: Path, fds: tuple[int, int],
               label: bytes) -> tuple[int, int, float, int]:  # fmt: skip
    """Copy the child's output, forward the daemon's signals; its status, how many signals
    were forwarded, and the CPU seconds and peak resident KiB the kernel counted for it."""
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(child.stdout, fds[0], label), daemon=True),
        threading.Thread(target=_pump, args=(child.stderr, fds[1], label), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    forwarded = 0
    while True:
        # wait4, not Popen.wait: the kernel's count of what the task used comes with its status.
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = code = os.waitstatus_to_exitcode(status)
            break
        requested = _signals(signals_path)
        for number in requested[forwarded:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, number)
        forwarded = len(requested)
        time.sleep(POLL_S)
    deadline = time.monotonic() + 2.0
    for pump in pumps:  # a grandchild may hold the pipes open: do not wait for it forever
        pump.join(max(0.0, deadline - time.monotonic()))
    return (128 - code if code < 0 else code), forwarded, *record.usage_from_rusage(rusage)


def main(args: list[str]) -> int:
    if len(args) != 1:
        print("usage: supervisor.py JOB_JSON", file=sys.stderr)
        return 2
    job: dict[str, Any] = json.loads(Path(args[0]).read_text())
    folder = Path(job["dir"])
    rank_text = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMIX_RANK"))
    if rank_text is None:
        print("orch: no rank from mpiexec (OMPI_COMM_WORLD_RANK)", file=sys.stderr)
        return 2
    rank = int(rank_text)
    record.write_pid(folder, rank, os.getpid())
    if record.is_aborted(folder):
        return record.ABORTED
    engine_signal: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # The command is in our process group and got the same signal: just remember it.
        engine_signal.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    try:
        env = _environment(job, rank)
    except TimeoutError as e:
        print(f"orch: rank {rank}: {e}", file=sys.stderr)
        record.write_task_end(folder, rank, record.TaskEnd(1))
        return 1
    signals_path = folder / "signals"
    pending = _signals(signals_path)
    if pending:  # cancelled before this rank started: do not start it
        code = 128 + pending[-1]
        record.write_task_end(folder, rank, record.TaskEnd(code))
        return code
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    fds = (os.open(job["stdout"], flags, 0o644), os.open(job["stderr"], flags, 0o644))
    label = f"{rank}: ".encode()
    try:
        child = subprocess.Popen(
            job["argv"],
            env=env,
            cwd=job["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        os.write(fds[1], label + f"orch: cannot run {job['argv'][0]!r}: {e}\n".encode())
        code = 127 if isinstance(e, FileNotFoundError) else 126
        record.write_task_end(folder, rank, record.TaskEnd(code))
        return code
    code, forwarded, cpu_s, maxrss_kib = _supervise(child, signals_path, fds, label)
    # The daemon's signals come through the signals file; one the supervisor got otherwise
    # came from the engine.
    engine = signal.Signals(engine_signal[0]).name if engine_signal and forwarded == 0 else None
    record.write_task_end(folder, rank, record.TaskEnd(code, engine, cpu_s, maxrss_kib))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
