"""The per-task supervisor of the local backend (standard library only; run as a script).

Usage: ``python -I -S _task.py ATTEMPT_DIR RANK -- ARGV...``

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


def _atomic_write(path: str, text: str) -> None:
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _start_ticks(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat.rsplit(")", 1)[1].split()[19]


def _fork_script(argv: list[str]) -> int:
    """Run ``argv`` (a script and its arguments) in a forked child, as ``python -I -S`` would."""
    pid = os.fork()
    if pid:
        return pid
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
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


def _wait(pid: int) -> int:
    """The child's exit status, 128 + N when signal N ended it."""
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after our (no-op) signal handlers
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def main(args: list[str]) -> int:
    attempt_dir, rank, sep, *argv = args
    if sep != "--" or not argv:
        print("usage: _task.py ATTEMPT_DIR RANK -- ARGV...", file=sys.stderr)
        return 2
    pid = os.getpid()
    _atomic_write(os.path.join(attempt_dir, f"task-{rank}.pid"), f"{pid} {_start_ticks(pid)}\n")
    # Written after the pid file: a recovering daemon writes "abort" first, then reads pid files,
    # so either it sees this task, or this task sees the abort.
    if os.path.exists(os.path.join(attempt_dir, "abort")):
        return 125
    # The group's signals (SIGTERM at the walltime, a cancel) reach the child too; the
    # supervisor only notes them, waits for the child and records how it ended.
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda n, _f: received.append(n))
    inline = argv[:3] == [sys.executable, "-I", "-S"] and len(argv) > 3 and argv[3].endswith(".py")
    if not inline:
        import subprocess  # before the check below: the window until the start stays short
    if received:
        # Cancelled before the command started: it never starts.
        code = 128 + received[0]
    elif inline:
        code = _wait(_started(_fork_script(argv[3:]), received))
    else:
        try:
            child = subprocess.Popen(argv)
        except OSError as e:
            print(f"orch: cannot run {argv[0]!r}: {e}", file=sys.stderr)
            code = 127 if isinstance(e, FileNotFoundError) else 126
        else:
            code = _wait(_started(child.pid, received))
    _atomic_write(os.path.join(attempt_dir, f"task-{rank}.rc"), f"{code}\n")
    return code


def _started(pid: int, received: list[int]) -> int:
    """A signal that came while the child was being started may have missed it: pass it on."""
    for signum in received:
        os.kill(pid, signum)
    return pid


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
