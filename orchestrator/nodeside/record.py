"""What a task leaves in its attempt's folder: the one module that writes and reads it.

An attempt's folder (``JOB/attempt-<n>/``, see :class:`orchestrator.backends.JobPaths`) holds,
per task rank, written by the task's node-side supervisor:

``task-<rank>.pid``
    ``PID START_TICKS``: the supervisor's process, named across pid reuse (backends whose
    supervisor the daemon can reach by pid: local, PJM).
``task-<rank>.rc``
    ``CODE SIGNAL [CPU_SECONDS MAXRSS_KIB]``: the task's exit status (128 + N when signal N
    ended it), the name of the first signal the supervisor itself received while the task ran
    (``-`` for none), and, when the supervisor waited the task's process, what the kernel says
    it used (``wait4``'s rusage: user plus system CPU seconds, and the peak resident set in KiB,
    both counting the descendants it waited for; ``-`` for one unknown). Written once,
    atomically, when the task has ended: its presence means "ended", so a daemon that was down
    at the time still learns how. Older forms (``CODE``, ``CODE SIGNAL``) are still read, and a
    reader of the older forms reads the first two words of this one.

and, written by the daemon, ``abort``: the attempt must never start (a daemon crashed while
starting it). A supervisor writes its pid record first and looks for ``abort`` after, while a
recovering daemon writes ``abort`` first and reads pid records after: either the daemon sees the
task, or the task sees the abort.

Standard library only, no pathlib (see the package).
"""

from __future__ import annotations

import os
import resource  # os.wait4 imports it anyway (its rusage is a resource.struct_rusage)
import sys

from orchestrator.nodeside.files import atomic_write, process_start_ticks

__all__ = [
    "ABORTED",
    "TaskEnd",
    "abort_path",
    "is_aborted",
    "parse_task_end",
    "pid_path",
    "rc_path",
    "read_pid",
    "read_task_end",
    "usage_from_rusage",
    "write_abort",
    "write_pid",
    "write_task_end",
]

ABORTED = 125
"""The status of a task that refused to start because its attempt was aborted."""


class TaskEnd:
    """How one task ended (a small class, not a NamedTuple: ``typing`` costs each task 3 ms).

    Attributes:
        code: The exit status (128 + N when signal N ended it).
        signal: The first signal the task's supervisor received while the task ran (its name,
            ``SIGTERM``), or None: the engine's signal before a time limit or a preemption, or
            the daemon's own cancel. Backends whose engine signals tasks behind the daemon's
            back (Slurm, PJM) read it to requeue a job that checkpointed on that signal.
        cpu_s: The CPU time the task's process used, user plus system, in seconds (None:
            unknown, as for a command that could not start or a record of before issue 17).
        maxrss_kib: Its peak resident set size in KiB (None: unknown).
    """

    __slots__ = ("code", "cpu_s", "maxrss_kib", "signal")

    def __init__(
        self,
        code: int,
        signal: str | None = None,
        cpu_s: float | None = None,
        maxrss_kib: int | None = None,
    ) -> None:
        self.code = code
        self.signal = signal
        self.cpu_s = cpu_s
        self.maxrss_kib = maxrss_kib

    def _key(self) -> tuple[int, str | None, float | None, int | None]:
        return (self.code, self.signal, self.cpu_s, self.maxrss_kib)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskEnd):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        usage = ""
        if self.cpu_s is not None or self.maxrss_kib is not None:
            usage = f", cpu_s={self.cpu_s!r}, maxrss_kib={self.maxrss_kib!r}"
        return f"TaskEnd(code={self.code!r}, signal={self.signal!r}{usage})"


def usage_from_rusage(rusage: resource.struct_rusage) -> tuple[float, int]:
    """``(cpu_s, maxrss_kib)`` from ``os.wait4``'s rusage of a task: user plus system seconds,
    and ``ru_maxrss`` (KiB on Linux; bytes on macOS, turned into KiB)."""
    maxrss = rusage.ru_maxrss // 1024 if sys.platform == "darwin" else rusage.ru_maxrss
    return rusage.ru_utime + rusage.ru_stime, maxrss


def rc_path(attempt_dir: str | os.PathLike[str], rank: int) -> str:
    return os.path.join(attempt_dir, f"task-{rank}.rc")


def pid_path(attempt_dir: str | os.PathLike[str], rank: int) -> str:
    return os.path.join(attempt_dir, f"task-{rank}.pid")


def abort_path(attempt_dir: str | os.PathLike[str]) -> str:
    return os.path.join(attempt_dir, "abort")


def write_task_end(attempt_dir: str | os.PathLike[str], rank: int, end: TaskEnd) -> None:
    text = f"{end.code} {end.signal or '-'}"
    if end.cpu_s is not None or end.maxrss_kib is not None:
        cpu = "-" if end.cpu_s is None else f"{end.cpu_s:.6f}"
        rss = "-" if end.maxrss_kib is None else str(end.maxrss_kib)
        text += f" {cpu} {rss}"
    atomic_write(rc_path(attempt_dir, rank), text + "\n")


def parse_task_end(text: str) -> TaskEnd | None:
    """``"3 SIGUSR1"`` -> TaskEnd(3, "SIGUSR1"); ``"0 -"`` or ``"0"`` -> TaskEnd(0); junk -> None.
    The usage words, when there, are read too (one unreadable: None).

    >>> parse_task_end("143 SIGTERM\\n")
    TaskEnd(code=143, signal='SIGTERM')
    >>> parse_task_end("0 - 1.500000 51200\\n")
    TaskEnd(code=0, signal=None, cpu_s=1.5, maxrss_kib=51200)
    """
    words = text.split()
    if not words or not words[0].isdigit():
        return None
    signal = words[1] if len(words) > 1 and words[1] != "-" else None
    cpu_s = maxrss_kib = None
    if len(words) > 2:
        try:
            seconds = float(words[2])
        except ValueError:  # "-": not known
            seconds = -1.0
        cpu_s = seconds if 0.0 <= seconds < float("inf") else None
    if len(words) > 3 and words[3].isdigit():
        maxrss_kib = int(words[3])
    return TaskEnd(int(words[0]), signal, cpu_s, maxrss_kib)


def read_task_end(attempt_dir: str | os.PathLike[str], rank: int) -> TaskEnd | None:
    """How the task of ``rank`` ended, or None while it has not (or left nothing readable)."""
    try:
        with open(rc_path(attempt_dir, rank)) as f:
            return parse_task_end(f.read())
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_pid(attempt_dir: str | os.PathLike[str], rank: int, pid: int) -> None:
    """Record ``pid`` (a live process: its start time is read now) as the task's supervisor."""
    atomic_write(pid_path(attempt_dir, rank), f"{pid} {process_start_ticks(pid)}\n")


def read_pid(pid_file: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(pid, start_ticks)`` from a pid record, or None when it is missing or unreadable."""
    try:
        with open(pid_file) as f:
            pid_text, ticks_text = f.read().split()
        return int(pid_text), int(ticks_text)
    except (OSError, ValueError):
        return None


def write_abort(attempt_dir: str | os.PathLike[str]) -> None:
    atomic_write(abort_path(attempt_dir), "aborted\n")


def is_aborted(attempt_dir: str | os.PathLike[str]) -> bool:
    return os.path.exists(abort_path(attempt_dir))
