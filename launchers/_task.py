"""The per-task supervisor of the local backend (standard library only; run as a script).

Usage: ``python -I -S _task.py ATTEMPT_DIR RANK -- ARGV...``

It is the leader of the task's process group. It records its own pid and start time, refuses to
run if the attempt was aborted (a daemon crashed while starting it), runs ``ARGV`` exactly as
given (no shell), waits for it while the group's signals reach both, and writes the exit status
atomically so a daemon restarted later still learns how the task ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _start_ticks(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def main(args: list[str]) -> int:
    attempt_dir, rank, sep, *argv = args
    if sep != "--" or not argv:
        print("usage: _task.py ATTEMPT_DIR RANK -- ARGV...", file=sys.stderr)
        return 2
    directory = Path(attempt_dir)
    pid = os.getpid()
    _atomic_write(directory / f"task-{rank}.pid", f"{pid} {_start_ticks(pid)}\n")
    # Written after the pid file: a recovering daemon writes "abort" first, then reads pid files,
    # so either it sees this task, or this task sees the abort.
    if (directory / "abort").exists():
        return 125
    # The group's signals (SIGTERM at the walltime, a cancel) reach the child too; the
    # supervisor only waits for it and records how it ended.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)
    try:
        child = subprocess.Popen(argv)
    except OSError as e:
        print(f"orch: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        code = 127 if isinstance(e, FileNotFoundError) else 126
    else:
        while True:
            try:
                code = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
        if code < 0:
            code = 128 - code
    _atomic_write(directory / f"task-{rank}.rc", f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
