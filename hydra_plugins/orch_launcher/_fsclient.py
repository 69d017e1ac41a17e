"""The command of a trial when its sweep has a fork server (standard library only).

``python -I -S _fsclient.py FOLDER``: asks the server at ``$ORCH_FORKSERVER`` to fork the trial
with this process's stdout, stderr, environment and working folder, relays the signals this
process gets (the scheduler's cancel, walltime and checkpoint signals) to the trial's process
group, and exits with the trial's status (a trial killed by signal N kills this process with N).
When the server cannot be reached (another host, the server stopped), it becomes the worker in a
fresh interpreter instead (``exec``), so a trial never depends on the server being there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _fresh_interpreter(folder: str) -> None:
    argv = [sys.executable, "-m", "hydra_plugins.orch_launcher._worker", folder]
    os.execv(sys.executable, argv)


def _connect(path: str) -> socket.socket | None:
    if not path:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def main(folder: str) -> int:
    conn = _connect(os.environ.get("ORCH_FORKSERVER", ""))
    if conn is None:
        _fresh_interpreter(folder)
    assert conn is not None
    body = json.dumps({"folder": folder, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    # Signals that come before the server has answered are held and relayed after.
    pending: list[int] = []
    for signum in RELAYED:
        signal.signal(signum, lambda n, _f: pending.append(n))
    try:
        socket.send_fds(conn, [len(body).to_bytes(4, "big")], [0, 1, 2])
        conn.sendall(body)
        reader = conn.makefile("rb")
        first = reader.readline().decode().split()
    except OSError:
        first = []
    if len(first) != 2 or first[0] != "pid":
        # The server went away before forking: nothing of the trial runs yet.
        conn.close()
        _fresh_interpreter(folder)

    def relay(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(f"sig {signum}\n".encode())

    for signum in RELAYED:
        signal.signal(signum, relay)
    for held in pending:
        relay(held, None)
    while True:
        try:
            line = reader.readline().decode().split()
        except InterruptedError:
            continue
        except OSError:
            line = []
        if not line:
            # The server died; its trials die with it (they asked for SIGKILL on that).
            print(f"orch: the fork server ended before trial pid {first[1]}", file=sys.stderr)
            return 1
        if line[0] == "exit" and len(line) == 2:
            break
    status = int(line[1])
    if os.WIFSIGNALED(status):
        killed_by = os.WTERMSIG(status)
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
