"""The job commands start quickly: resolving them loads none of the heavy libraries (issue 17:
``orch submit`` took 222 ms against sbatch's 4-18 ms, most of it numpy through the simulator's
modules, which every command imported), and running them neither: ``orch queue`` prints its table
without rich, a request loads no IDNA codec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("numpy", "pandas", "torch", "pydantic", "fastapi", "submitit", "optuna", "rich", "yaml")

PROBE = """
import json, sys, click
from orchestrator.cli import main
ctx = click.Context(main)
for name in sys.argv[1:]:
    command = main.get_command(ctx, name)
    assert command is not None, name
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def _loaded(*commands: str) -> set[str]:
    # A fresh interpreter: this test process has imported everything already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *commands], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_submit_queue_and_cancel_load_no_heavy_library() -> None:
    loaded = _loaded("submit", "queue", "cancel", "show", "hold", "release")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_probe_sees_a_heavy_import() -> None:
    # The simulator's command does load numpy: the probe above can fail.
    assert "numpy" in _loaded("simulate")


def test_help_still_lists_every_command() -> None:
    from click.testing import CliRunner

    from orchestrator.cli import main
    from orchestrator.cli.root import COMMANDS

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line}
    assert listed == set(COMMANDS)


RUN_PROBE = """
import json, sys
from orchestrator.daemon.client import DaemonClient

JOB = {
    "id": 7, "display_id": "7", "name": "train", "user": "ada", "state": "RUNNING",
    "start_time": 1.0, "end_time": None, "nodes": 2, "shape": None,
    "nodelist": "n[01-02]", "reason": "",
}

class Fake:
    def jobs(self, **filters):
        return [JOB]

    def submit(self, job):
        return [8]

    def resolve(self, text):
        return int(text)

    def action(self, job_id, action):
        return "CANCELLED"

DaemonClient.from_state_dir = classmethod(lambda cls, root, **kwargs: Fake())
from orchestrator.cli import main
main(sys.argv[1:], standalone_mode=False)
print(json.dumps(sorted(sys.modules)))
"""


def _ran(*argv: str) -> tuple[str, set[str]]:
    """What ``orch ARGV`` printed (its client a stand-in) and the modules it loaded."""
    out = subprocess.run(
        [sys.executable, "-c", RUN_PROBE, *argv], capture_output=True, text=True, check=True
    ).stdout
    printed, _, modules = out.rstrip("\n").rpartition("\n")
    return printed, set(json.loads(modules))


@pytest.mark.parametrize(
    "argv",
    [
        ("queue",),
        ("queue", "-a"),
        ("submit", "--hold", "--", "true"),
        ("cancel", "7"),
    ],
)
def test_running_a_job_command_loads_no_heavy_library(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    printed, loaded = _ran(argv[0], "--state-dir", str(tmp_path), *argv[1:])
    assert printed  # it ran: a table, "Submitted job 8" or "7: CANCELLED"
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY), sorted(loaded)


def test_queue_prints_its_table_without_rich(tmp_path: Path) -> None:
    printed, loaded = _ran("queue", "--state-dir", str(tmp_path))
    assert printed.splitlines()[0].split() == [
        "JOBID",
        "NAME",
        "USER",
        "STATE",
        "TIME",
        "NODES",
        "NODELIST(REASON)",
    ]
    assert printed.splitlines()[1].split()[:4] == ["7", "train", "ada", "RUNNING"]
    assert "rich" not in {m.split(".")[0] for m in loaded}


IDNA_PROBE = """
import socket, sys, threading
from orchestrator.daemon.wire import Connection

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()

def answer():
    for _ in sys.argv[1:]:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\n{}")
        conn.close()

threading.Thread(target=answer, daemon=True).start()
for host in sys.argv[1:]:
    reply = Connection(host, server.getsockname()[1], timeout=10).request("GET", "/", None, {})
    assert reply.body == b"{}", reply
print("encodings.idna" in sys.modules)
"""


def test_a_request_to_an_ascii_host_loads_no_idna_codec() -> None:
    # getaddrinfo encodes a str host with the IDNA codec (unicodedata, stringprep: about 3 ms of
    # a command's start); the connection hands it an ASCII name as bytes.
    done = subprocess.run(
        [sys.executable, "-c", IDNA_PROBE, "127.0.0.1", "localhost"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
