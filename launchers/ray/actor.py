"""The Ray actor that runs one task of a job: a subprocess, its output and its exit status.

One actor per task, placed in the job's placement group on the task's node. It is the task's
supervisor on that node, the way ``_task.py`` is for the local backend: it starts the command
(no shell) in a session of its own, so a signal reaches the command and everything it started;
pumps its stdout and stderr to per-task files and, labelled with the task's rank (as
``srun --label``), to the job's two shared files; and keeps the exit status (128 + signal for a
signal) in memory and in the task's end record (with the CPU time and peak memory the kernel
counted for the command) so a daemon that restarts later still learns it.

GPUs: Ray gives the actor its task's GPUs and sets the actor's ``CUDA_VISIBLE_DEVICES`` to them;
the task gets that value (not the daemon's, not our allocator's indices) and the GPU ids in
``ORCH_GPUS``, both empty when the task has no GPU, so that it sees none (as the local backend's
tasks without GPUs).

The child is tied to the actor's life (``PR_SET_PDEATHSIG``): a killed actor, or a node that
dies, takes its command down with it rather than leaving an orphan that nobody polls.

This module is imported inside Ray workers: the standard library, :mod:`orchestrator.nodeside`
(standard library only) and ``ray`` only at import time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from orchestrator.nodeside import record

__all__ = ["LineLabeller", "TaskActor"]

PR_SET_PDEATHSIG = 1
_PUMP_JOIN_S = 2.0
"""After the command exits, how long to wait for its pipes to close (a background grandchild
may hold them open for ever)."""


try:
    # Resolved here, not in the forked child: between fork and exec the child only makes
    # this one system call (no import, no dlopen, no lock another thread may hold).
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    # Linux: SIGKILL this child when the thread that forked it (the actor's) goes away.
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class LineLabeller:
    """Turns a byte stream into whole lines prefixed with a label (``"3: "``).

    Whole lines only, so that each becomes one ``write`` on an ``O_APPEND`` file and lines of
    different tasks never interleave mid-line; a last line without newline is completed at
    :meth:`flush`.

    >>> lab = LineLabeller(b"1: ")
    >>> lab.feed(b"a\\nb"), lab.feed(b"c\\n"), lab.flush()
    (b'1: a\\n', b'1: bc\\n', b'')
    """

    def __init__(self, label: bytes) -> None:
        self.label = label
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk
        head, sep, self._partial = data.rpartition(b"\n")
        if not sep:
            self._partial = data
            return b""
        return b"".join(self.label + line + b"\n" for line in head.split(b"\n"))

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return self.label + rest + b"\n" if rest else b""


def _pump(source: IO[bytes], own: Path, shared: Path, label: bytes) -> None:
    """Copy ``source`` to the task's own file as it comes, and labelled lines to the job's."""
    labeller = LineLabeller(label)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    own_fd = os.open(own, flags, 0o644)
    shared_fd = os.open(shared, flags, 0o644)
    try:
        while chunk := source.read1(65536):  # type: ignore[attr-defined]
            os.write(own_fd, chunk)
            if lines := labeller.feed(chunk):
                os.write(shared_fd, lines)
        if rest := labeller.flush():
            os.write(shared_fd, rest)
    finally:
        os.close(own_fd)
        os.close(shared_fd)
        source.close()


class TaskActor:
    """Runs one task. Made a Ray actor class by the backend (``ray.remote(TaskActor)``).

    Args:
        attempt_dir: The attempt's folder (``task-<rank>.out``, ``.err``, ``.rc``, ``abort``).
        job_out: The job's stdout file (labelled lines of every task).
        job_err: The job's stderr file.
        rank: The task's global rank.
        label: Prefix each line in the job's files with ``"<rank>: "`` (jobs of several tasks).
    """

    def __init__(
        self, attempt_dir: str, job_out: str, job_err: str, rank: int, label: bool
    ) -> None:
        self.dir = Path(attempt_dir)
        self.job_out = Path(job_out)
        self.job_err = Path(job_err)
        self.rank = rank
        self.label = f"{rank}: ".encode() if label else b""
        self.child: subprocess.Popen[bytes] | None = None
        self.code: int | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def endpoint(self) -> tuple[str, int]:
        """This node's address and a TCP port free on it now: rank 0's are the job's
        ``MASTER_ADDR`` and ``MASTER_PORT``."""
        import ray

        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
            port = int(s.getsockname()[1])
        return address, port

    def node_id(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def devices(self) -> dict[str, str]:
        """The task's GPU variables: ``ORCH_GPUS``, the ids of the GPUs Ray gave this actor,
        and ``CUDA_VISIBLE_DEVICES`` as Ray set it for them (both empty without GPUs)."""
        import ray

        ids = ",".join(str(g) for g in ray.get_gpu_ids())
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", ids) if ids else ""
        return {"ORCH_GPUS": ids, "CUDA_VISIBLE_DEVICES": visible}

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> int:
        """Start the command with ``env`` and the GPU variables of :meth:`devices` laid over it;
        returns its pid, or -1 when the attempt was aborted.

        An exit status is recorded even when the command cannot start (127: not found,
        126: not executable), as a shell would.
        """
        env = {**env, **self.devices()}
        with self._lock:
            if self.child is not None or self._done.is_set():
                return self.child.pid if self.child is not None else -1
            # A recovering daemon writes "abort" before it kills the actors: either this start
            # sees the marker, or the daemon's kill sees the command.
            if record.is_aborted(self.dir):
                self._record(record.ABORTED)
                return -1
            try:
                self.child = subprocess.Popen(
                    list(argv),
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, see above
                )
            except OSError as e:
                with open(self.job_err, "ab") as err:
                    err.write(self.label + f"orch: cannot run {argv[0]!r}: {e}\n".encode())
                self._record(127 if isinstance(e, FileNotFoundError) else 126)
                return -1
            child = self.child
        stem = self.dir / f"task-{self.rank}"
        assert child.stdout is not None and child.stderr is not None
        pumps = [
            threading.Thread(
                target=_pump,
                args=(child.stdout, stem.with_suffix(".out"), self.job_out, self.label),
                daemon=True,
            ),
            threading.Thread(
                target=_pump,
                args=(child.stderr, stem.with_suffix(".err"), self.job_err, self.label),
                daemon=True,
            ),
        ]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._wait, args=(child, pumps), daemon=True).start()
        return child.pid

    def _wait(self, child: subprocess.Popen[bytes], pumps: list[threading.Thread]) -> None:
        # wait4, not Popen.wait: the kernel's count of what the task used comes with its status.
        _, status, rusage = os.wait4(child.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        for pump in pumps:
            # The output is complete before the task is seen to end (unless a grandchild
            # keeps the pipes open).
            pump.join(_PUMP_JOIN_S)
        self._record(128 - code if code < 0 else code, *record.usage_from_rusage(rusage))

    def _record(self, code: int, cpu_s: float | None = None, maxrss_kib: int | None = None) -> None:
        with contextlib.suppress(OSError):
            end = record.TaskEnd(code, None, cpu_s, maxrss_kib)
            record.write_task_end(self.dir, self.rank, end)
        self.code = code
        self._done.set()

    def status(self) -> int | None:
        """The exit status, or None while the command runs."""
        return self.code if self._done.is_set() else None

    def signal(self, signum: int) -> None:
        """Signal the command's whole session (its process group), while it runs."""
        child = self.child
        if child is None or child.returncode is not None:
            return  # not started, or reaped: its pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)

    def describe(self) -> dict[str, Any]:
        """Pid, node and status, for tests and diagnostics."""
        return {
            "pid": self.child.pid if self.child is not None else None,
            "node_id": self.node_id(),
            "code": self.status(),
            "gpus": self.devices()["ORCH_GPUS"],
        }
