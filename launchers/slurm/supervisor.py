"""The per-task wrapper of the Slurm backend (standard library only; run by ``srun`` as a script).

Usage: ``python -I -S supervisor.py ATTEMPT_DIR -- ARGV...``

``srun`` starts one copy per task. It gives each task the rank variables every backend exports,
derived from Slurm's (``SLURMD_NODENAME``, ``SLURM_LOCALID``) and the node list our allocator
chose (``ORCH_NODES``, in node-rank order: Slurm numbers nodes in its own order, which need not
be ours), and ``ORCH_GPUS``, the GPUs Slurm bound to the task (:func:`gpu_variables`); refuses
to run if the attempt was aborted (a daemon crashed while submitting it), runs ``ARGV`` exactly
as given (no shell), and writes the task's end record
(:mod:`orchestrator.nodeside.record`): the exit status, the first signal the task was sent, and
the CPU time and peak memory the kernel counted for it.
The backend reads that signal to tell a job that checkpointed on the engine's signal and exited
with the "requeue me" code from a job that failed on its own.

Signals: Slurm signals every process of a step (``scancel --signal``, the time limit, the end of
an allocation), so the child gets them directly; the wrapper only notes them and keeps waiting,
never forwarding (a checkpointing program would see each signal twice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

if not __package__:
    # Run as a script under -I: the repository root (where orchestrator/nodeside lies) is not
    # on sys.path by itself.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from orchestrator.nodeside import record
from orchestrator.nodeside.rank_env import rank_environment

_NOTED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


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


def gpu_variables(env: dict[str, str]) -> dict[str, str]:
    """``ORCH_GPUS``: the node's indices of the GPUs Slurm gave this task (empty: none).

    Slurm chooses and binds GPUs itself (``--gpus-per-task``, ``--gpus-per-node``): it sets
    ``SLURM_STEP_GPUS`` to the step's GPUs on this node, narrowed to the task's own with
    ``--gpu-bind=per_task``, and ``CUDA_VISIBLE_DEVICES`` to the same GPUs as CUDA is to number
    them (from 0 where device cgroups hide the others). ``ORCH_GPUS`` names the GPUs as the node
    does, as our allocator's indices do on the other backends, so ``SLURM_STEP_GPUS`` comes
    first. Not ``SLURM_JOB_GPUS``: a step inherits the batch job's, all of the node's GPUs for
    a whole-node job, even when the step itself was given none. ``CUDA_VISIBLE_DEVICES`` is
    left as Slurm set it (unset when the task has no GPU).
    """
    for name in ("SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"):
        if name in env:
            return {"ORCH_GPUS": env[name]}
    return {"ORCH_GPUS": ""}


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--":
        print("usage: supervisor.py ATTEMPT_DIR -- ARGV...", file=sys.stderr)
        return 2
    directory, argv = args[0], args[2:]
    env = dict(os.environ)
    env.update(rank_variables(env))
    env.update(gpu_variables(env))
    rank = int(env["RANK"])
    if record.is_aborted(directory):
        return record.ABORTED
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    for signum in _NOTED:
        signal.signal(signum, note)
    cpu_s: float | None = None
    maxrss_kib: int | None = None
    try:
        child = subprocess.Popen(argv, env=env)
    except OSError as e:
        print(f"orch: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        code = 127 if isinstance(e, FileNotFoundError) else 126
    else:
        # wait4, not Popen.wait: the kernel's count of what the task used comes with its
        # status (PEP 475: a noted signal does not interrupt the wait).
        _, status, rusage = os.wait4(child.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        cpu_s, maxrss_kib = record.usage_from_rusage(rusage)
    first = signal.Signals(received[0]).name if received else None
    record.write_task_end(directory, rank, record.TaskEnd(code, first, cpu_s, maxrss_kib))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
