"""The local backend's spawner: task supervisors forked from one small, already started process.

Usage: ``python -I -S spawner.py FD`` (standard library only), ``FD`` one end of a socket pair
whose other end the backend keeps.

Starting each task's supervisor (``supervisor.py``) as a new interpreter costs about 20 ms of CPU;
forking it from this process, which has ``supervisor`` imported already, costs about 1 ms. For each
request (one JSON line with the supervisor's arguments, environment and folder, and the task's
stdout and stderr attached with ``SCM_RIGHTS``) it forks a child that starts its own session
(the task's process group, as ``start_new_session`` gives), takes those descriptors, environment
and folder, and runs ``supervisor.main``; it answers ``pid START_TICKS`` (read before the child can
be reaped, so pid plus start time name it without a race), or ``error TEXT``. It reaps its
children; they do not depend on it (a task outlives the spawner and the daemon, as before).
It exits when the backend's end of the pair closes (the daemon stopped or died).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

# Under -I the repository root is not on sys.path; launchers/ and launchers/local/ import
# nothing at import time, so this loads the supervisor and the standard library only.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from launchers.local import supervisor

MAX_REQUEST = 16 << 20


def _child(request: dict[str, object], fds: list[int], ready: int) -> None:
    os.setsid()
    os.write(ready, b"s")
    os.close(ready)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    os.closerange(3, 1 << 16)
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    os.chdir(str(request["cwd"]))
    args = request["args"]
    assert isinstance(args, list)
    sys.argv = [supervisor.__file__, *map(str, args)]
    sys.exit(supervisor.main([str(a) for a in args]))


def _read_request(conn: socket.socket, head: bytes, fds: list[int]) -> dict[str, object] | None:
    """The JSON body announced by ``head`` (None: the backend's end closed)."""
    size_text, _, body = head.partition(b"\n")
    size = int(size_text)
    if not 0 < size <= MAX_REQUEST or len(fds) != 2:
        raise ValueError(f"bad request ({head[:16]!r}, {len(fds)} descriptors)")
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    request: dict[str, object] = json.loads(body)
    return request


def _fork_task(request: dict[str, object], fds: list[int]) -> tuple[int, int]:
    """Fork the task's supervisor; its pid and start ticks."""
    # SIGCHLD held until the start ticks are read: the handler must not reap the child first
    # (its /proc entry, and so the ticks, would be gone).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    ready_r, ready_w = os.pipe()
    try:
        try:
            pid = os.fork()
        except OSError:
            os.close(ready_w)
            raise
        if pid == 0:
            os.close(ready_r)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            _run_child(request, fds, ready_w)
        os.close(ready_w)
        # Answer once the child leads its own session: the backend signals the task's process
        # group as soon as it has the pid (as after Popen's start_new_session).
        os.read(ready_r, 1)
        ticks = supervisor.process_start_ticks(pid)
        if ticks is None:
            os.kill(pid, signal.SIGKILL)  # never leave a task the backend cannot name
            raise OSError(f"the task's supervisor {pid} vanished as it started")
        return pid, ticks
    finally:
        os.close(ready_r)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _serve(conn: socket.socket) -> None:
    while True:
        # One request: a length line sent with the descriptors attached, then the JSON body.
        try:
            head, fds, _, _ = socket.recv_fds(conn, 16, 2)
        except OSError:
            return
        if not head:
            return
        try:
            request = _read_request(conn, head, fds)
            if request is None:
                return
            pid, ticks = _fork_task(request, fds)
            answer = f"pid {pid} {ticks}\n"
        except (OSError, ValueError) as e:
            answer = "error " + str(e).replace("\n", " ") + "\n"
        finally:
            for fd in fds:
                os.close(fd)
        conn.sendall(answer.encode())
        _reap()


def _run_child(request: dict[str, object], fds: list[int], ready: int) -> None:
    """The forked child: run the supervisor and exit with its status, never return."""
    import atexit

    code = 1
    try:
        _child(request, fds, ready)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        # As an interpreter's exit would (a script run inline may have registered some).
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(args: list[str]) -> int:
    if len(args) != 1 or not args[0].isdigit():
        print("usage: spawner.py FD", file=sys.stderr)
        return 2
    # Children are reaped after each request and on SIGCHLD, so none stays a zombie for long.
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    # The daemon's SIGINT (a terminal's ^C) is the daemon's to handle; we end when it closes us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = socket.socket(fileno=int(args[0]))
    _serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
