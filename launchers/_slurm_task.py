"""The per-task wrapper of the Slurm backend (standard library only; run by ``srun`` as a script).

Usage: ``python -I -S _slurm_task.py ATTEMPT_DIR -- ARGV...``

``srun`` starts one copy per task. It gives each task the rank variables every backend exports,
derived from Slurm's (``SLURMD_NODENAME``, ``SLURM_LOCALID``) and the node list our allocator
chose (``ORCH_NODES``, in node-rank order: Slurm numbers nodes in its own order, which need not
be ours), refuses to run if the attempt was aborted (a daemon crashed while submitting it), runs
``ARGV`` exactly as given (no shell), and writes ``task-<rank>.rc``: the exit status (128 +
signal for a signal) and the first signal the task was sent (``-`` for none). The backend reads
that second word to tell a job that checkpointed on the engine's signal and exited with the
"requeue me" code from a job that failed on its own.

Signals: Slurm signals every process of a step (``scancel --signal``, the time limit, the end of
an allocation), so the child gets them directly; the wrapper only notes them and keeps waiting,
never forwarding (a checkpointing program would see each signal twice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

if __package__:
    from launchers._rank_env import rank_environment
else:
    # Run as a script with ``python -I -S``: this folder is not on sys.path by itself.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _rank_env import rank_environment

_NOTED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rank_variables(env: dict[str, str]) -> dict[str, str]:
    """Our rank variables for this task, from Slurm's and ``ORCH_NODES``/``ORCH_TASKS_PER_NODE``."""
    nodes = env.get("ORCH_NODES", "").split(",")
    tpn = int(env.get("ORCH_TASKS_PER_NODE", "1"))
    node = env.get("SLURMD_NODENAME", "")
    node_rank = nodes.index(node) if node in nodes else int(env.get("SLURM_NODEID", "0"))
    variables = rank_environment(nodes, tpn, node_rank, int(env.get("SLURM_LOCALID", "0")))
    if node:
        variables["ORCH_NODENAME"] = node
    return variables


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: _slurm_task.py ATTEMPT_DIR -- ARGV...", file=sys.stderr)
        return 2
    directory, argv = Path(args[0]), args[2:]
    env = dict(os.environ)
    env.update(rank_variables(env))
    rank = env["RANK"]
    if (directory / "abort").exists():
        return 125
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    for signum in _NOTED:
        signal.signal(signum, note)
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as e:
        print(f"orch: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        code = 127 if isinstance(e, FileNotFoundError) else 126
    else:
        code = child.wait()  # PEP 475: a noted signal does not interrupt the wait
        if code < 0:
            code = 128 - code
    first = signal.Signals(received[0]).name if received else "-"
    _atomic_write(directory / f"task-{rank}.rc", f"{code} {first}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
