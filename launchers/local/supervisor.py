"""The per-task supervisor of the local backend (standard library only; run as a script).

Usage: ``python -I -S supervisor.py ATTEMPT_DIR RANK -- ARGV...``

It is the leader of the task's process group. It records its own pid and start time, refuses to
run if the attempt was aborted (a daemon crashed while starting it), runs ``ARGV`` exactly as
given (no shell), waits for it while the group's signals reach both, and writes the exit status
atomically so a daemon restarted later still learns how the task ended.

A task that is a Python script run by this very interpreter in the same mode
(``sys.executable -I -S script.py ...``, as the Hydra launcher's trial client is) runs in a forked
copy of this supervisor instead of a new interpreter: the same interpreter, flags, environment,
folder and file descriptors, one interpreter start (about 25 ms of CPU) less.
"""

from __future__ import annotations

# Only what it needs, and no pathlib or runpy: this runs once per task, and each import is
# paid again by every task (pathlib alone costs about 8 ms of CPU at start).
import os
import signal
import sys

if not __package__:
    # Run as a script, or imported by the spawner, under -I: the repository root (where
    # orchestrator/nodeside lies) is not on sys.path by itself.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from orchestrator.nodeside import record
from orchestrator.nodeside.files import process_start_ticks
from orchestrator.nodeside.rank_env import affinity_cpus

__all__ = ["main", "process_start_ticks"]

# The group's signals the supervisor notes: those that end the task (a cancel, the walltime),
# and those that only warn it (the daemon's signal before the walltime, which a checkpointing
# program catches; the supervisor must not die of it).
_ENDING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WARNING = (signal.SIGUSR1, signal.SIGUSR2)


def _fork_script(argv: list[str]) -> int:
    """Run ``argv`` (a script and its arguments) in a forked child, as ``python -I -S`` would."""
    pid = os.fork()
    if pid:
        return pid
    for signum in (*_ENDING, *_WARNING):
        signal.signal(signum, signal.SIG_DFL)
    sys.argv = list(argv)
    with open(argv[0], "rb") as f:
        code = compile(f.read(), argv[0], "exec")
    # As ``python script.py`` runs it (runpy would add 10 ms of imports): the script's exit
    # (SystemExit, an uncaught exception) unwinds to the top of this interpreter, which exits
    # the way the script's own would (atexit handlers, flushed output).
    script = type(sys)("__main__")
    script.__file__ = argv[0]
    sys.modules["__main__"] = script
    try:
        exec(code, script.__dict__)
    except SystemExit:
        raise
    except BaseException as e:
        import traceback

        # The script's frames only, as its own interpreter would print them.
        traceback.print_exception(type(e), e, e.__traceback__.tb_next if e.__traceback__ else None)
        sys.exit(1)
    sys.exit(0)


def _wait(pid: int) -> tuple[int, float, int]:
    """The child's exit status (128 + N when signal N ended it), and the CPU seconds and peak
    resident KiB the kernel counted for it (``wait4``: with the descendants it waited for)."""
    _, status, rusage = os.wait4(pid, 0)  # PEP 475: retried after our (no-op) signal handlers
    if os.WIFSIGNALED(status):
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.waitstatus_to_exitcode(status)
    return (code, *record.usage_from_rusage(rusage))


def main(args: list[str]) -> int:
    attempt_dir, rank, sep, *argv = args
    if sep != "--" or not argv:
        print("usage: supervisor.py ATTEMPT_DIR RANK -- ARGV...", file=sys.stderr)
        return 2
    record.write_pid(attempt_dir, int(rank), os.getpid())
    # Written after the pid record: see orchestrator.nodeside.record on the abort marker.
    if record.is_aborted(attempt_dir):
        return record.ABORTED
    _bind_cores()
    # The group's signals (SIGTERM at the walltime, a cancel) reach the child too; the
    # supervisor only notes them, waits for the child and records how it ended.
    received: list[int] = []
    warned: list[int] = []
    for signum in _ENDING:
        signal.signal(signum, lambda n, _f: received.append(n))
    for signum in _WARNING:
        signal.signal(signum, lambda n, _f: warned.append(n))
    inline = argv[:3] == [sys.executable, "-I", "-S"] and len(argv) > 3 and argv[3].endswith(".py")
    if not inline:
        import subprocess  # before the check below: the window until the start stays short
    cpu_s: float | None = None
    maxrss_kib: int | None = None
    if received:
        # Cancelled before the command started: it never starts.
        code = 128 + received[0]
    elif inline:
        code, cpu_s, maxrss_kib = _wait(_started(_fork_script(argv[3:]), received))
    else:
        try:
            child = subprocess.Popen(argv)
        except OSError as e:
            print(f"orch: cannot run {argv[0]!r}: {e}", file=sys.stderr)
            code = 127 if isinstance(e, FileNotFoundError) else 126
        else:
            code, cpu_s, maxrss_kib = _wait(_started(child.pid, received))
            child.returncode = code  # reaped here: Popen must not wait for it again
    noted = received or warned
    first = signal.Signals(noted[0]).name if noted else None
    end = record.TaskEnd(code, first, cpu_s, maxrss_kib)
    record.write_task_end(attempt_dir, int(rank), end)
    return code


def _bind_cores() -> None:
    """Pin this supervisor, and so its task, to the real CPUs its declared cores map onto
    (``ORCH_CPUS``, set on a cluster that shares nodes; see ``rank_env.affinity_cpus``)."""
    declared = os.environ.get("ORCH_CPUS")
    if not declared or not hasattr(os, "sched_setaffinity"):
        return
    available = sorted(os.sched_getaffinity(0))
    cpus = affinity_cpus([int(c) for c in declared.split(",")], available)
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as e:  # a CPU set the kernel refuses (cgroup changes): run unpinned
        print(f"orch: cannot pin the task to CPUs {cpus}: {e}", file=sys.stderr)


def _started(pid: int, received: list[int]) -> int:
    """A signal that came while the child was being started may have missed it: pass it on."""
    for signum in received:
        os.kill(pid, signum)
    return pid


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
