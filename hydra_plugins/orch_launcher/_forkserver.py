"""A sweep's fork server: trials forked from an interpreter that has already imported them.

``python -m hydra_plugins.orch_launcher._forkserver SOCKET SHARED_DIR``

A fresh interpreter per trial spends about 0.2 s of CPU importing Hydra and the app and
unpickling Hydra's state before the task runs. The launcher starts this server once per sweep:
it imports all that once, listens on a Unix socket in a private (0700) folder, and for each
trial forks a child that runs the job (:func:`_worker.run`). The scheduler still starts and
tracks every trial as its own job: the job's command is the thin client ``_fsclient.py``, which
hands the server its stdout/stderr, environment and working folder, relays signals to the
trial's process group, and exits with the trial's status. A client that cannot reach the server
(another host, the server gone) runs the worker in a fresh interpreter instead.

Protocol (one connection per trial; the client's uid must be ours, ``SO_PEERCRED``):
client -> server: one JSON request ``{"folder", "env", "cwd"}`` (4-byte length first) with the
client's fds 0, 1, 2 attached (``SCM_RIGHTS``), then ``sig N`` lines; server -> client:
``pid N`` once the trial is forked, ``exit STATUS`` (a ``waitpid`` status) when it ends.
A client that disconnects (killed) takes its trial with it: the server SIGKILLs the trial's
process group. On SIGTERM the server stops accepting and exits once its trials have ended.

Hydra imports every module under ``hydra_plugins`` at start-up: heavy imports stay in functions.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

LENGTH_BYTES = 4
MAX_REQUEST = 16 << 20
PR_SET_PDEATHSIG = 1


def _die_with_parent(signum: int) -> None:
    """Ask the kernel to send ``signum`` when our parent exits (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    # The symbols already loaded into this process include libc's (no library search: that
    # runs ldconfig and would cost each forked trial about 20 ms).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def _reseed() -> None:
    """A forked child inherits its parent's random state; give the global generators of
    NumPy and torch fresh seeds, as a new interpreter would have (``random`` reseeds itself
    after a fork). Apps that seed explicitly are unaffected."""
    import os

    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.seed()


def _child(request: dict[str, Any], fds: list[int], shared: dict[str, Any]) -> int:
    """In the forked child: become the trial (own session, the client's fds, environment and
    folder) and run it; returns the exit status."""
    import os
    import signal

    from hydra_plugins.orch_launcher import _worker

    os.setsid()  # its own process group: signals reach the trial's subprocesses too
    _die_with_parent(signal.SIGKILL)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.closerange(3, 1 << 16)
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    os.chdir(request["cwd"])
    _reseed()
    sys.argv = [_worker.__file__, request["folder"]]
    return _worker.run(request["folder"], shared)


class Server:
    """The select loop: accept trials, fork them, relay signals, report their ends."""

    def __init__(self, path: str, shared_dir: str) -> None:
        import os
        import selectors
        import signal
        import socket

        from hydra_plugins.orch_launcher import _worker

        self.shared = _worker.load_shared(shared_dir)
        _worker.prime(self.shared)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.path = path
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        # SIGCHLD and SIGTERM wake the loop through a pipe (handlers only write a byte).
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.stopping = False
        self.trials: dict[int, socket.socket] = {}  # pid -> its client's connection
        self.buffers: dict[int, bytes] = {}  # connection fd -> unread bytes

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def serve(self) -> None:
        import os

        # The launcher waits for this file: the server listens once it exists.
        with open(self.path + ".ready", "w") as f:
            f.write(f"{os.getpid()}\n")
        print(f"orch fork server: pid {os.getpid()} serving on {self.path}", flush=True)
        accepting = True
        while True:
            if self.stopping and accepting:
                self.selector.unregister(self.listener)
                self.listener.close()
                os.unlink(self.path)
                accepting = False
            if self.stopping and not self.trials:
                return
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    os.read(self.wake_r, 4096)
                else:
                    self._from_client(key.fileobj)
            self._reap()

    def _accept(self) -> None:
        import os
        import selectors
        import socket
        import struct

        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            conn.close()  # never run anything for another user
            return
        conn.settimeout(10.0)
        try:
            head, fds, _, _ = socket.recv_fds(conn, LENGTH_BYTES, 3)
            size = int.from_bytes(head, "big") if len(head) == LENGTH_BYTES else -1
            if not 0 < size <= MAX_REQUEST or len(fds) != 3:
                raise ValueError(f"bad request header ({len(head)} bytes, {len(fds)} fds)")
            data = b""
            while len(data) < size:
                chunk = conn.recv(size - len(data))
                if not chunk:
                    raise ValueError("connection closed mid-request")
                data += chunk
            import json

            request = json.loads(data)
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    status = _child(request, fds, self.shared)
                except BaseException:
                    import traceback

                    traceback.print_exc()
                finally:
                    for stream in (sys.stdout, sys.stderr):
                        with contextlib.suppress(Exception):
                            stream.flush()
                    os._exit(status)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"pid {pid}\n".encode())
        except (OSError, ValueError) as e:
            print(f"orch fork server: refused a request: {e}", file=sys.stderr, flush=True)
            conn.close()
            return
        conn.setblocking(False)
        self.trials[pid] = conn
        self.buffers[conn.fileno()] = b""
        self.selector.register(conn, selectors.EVENT_READ, pid)

    def _from_client(self, conn: Any) -> None:
        import os
        import signal

        pid = self.selector.get_key(conn).data
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The client is gone (killed with its job): the trial goes too.
            self._forget(conn)
            self.trials.pop(pid, None)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return
        buffer = self.buffers[conn.fileno()] + data
        *lines, self.buffers[conn.fileno()] = buffer.split(b"\n")
        for line in lines:
            word, _, number = line.decode(errors="replace").partition(" ")
            if word == "sig" and number.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, int(number))

    def _forget(self, conn: Any) -> None:
        self.buffers.pop(conn.fileno(), None)
        self.selector.unregister(conn)
        conn.close()

    def _reap(self) -> None:
        import os

        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.trials.pop(pid, None)
            if conn is None:
                continue
            try:
                conn.setblocking(True)
                conn.sendall(f"exit {status}\n".encode())
            except OSError:
                pass
            self._forget(conn)


def main(args: list[str]) -> int:
    import signal

    if len(args) != 2:
        print("usage: python -m hydra_plugins.orch_launcher._forkserver SOCKET SHARED_DIR")
        return 2
    import gc

    # The launcher owns this server: when it goes, stop taking trials (running ones finish).
    _die_with_parent(signal.SIGTERM)
    server = Server(args[0], args[1])
    # What is loaded now is shared with every trial: keep the children's garbage collector
    # off it, or its passes write to every object and copy the pages the fork shared.
    gc.freeze()
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
