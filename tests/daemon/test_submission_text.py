"""Text no job can run is refused at submission, naming the field; CR and LF in argv and env
values are kept and reach the program intact (issue 12, bug 4).

Refused: NUL and lone surrogates in any string field, control characters (CR, LF, ...) in names.
Accepted and passed through: newlines in ``argv`` items, ``env`` values and the ``script``.
The rules are tested through :meth:`JobSpec.from_mapping`, through the daemon's HTTP API with raw
bodies (as any client could send them), through the CLI, and on the local backend.
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import DaemonProcess, orch

from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.spec import JobSpec
from orchestrator.daemon.text_rules import check_text, text_problem
from orchestrator.exceptions import InvalidRequestError

PY = sys.executable
BASE: dict[str, Any] = {"argv": ["true"], "nodes": 1}

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("NUL in an env value", {"env": {"PEM": "a\0b"}}, "env.PEM"),
    ("NUL in argv", {"argv": ["echo", "a\0b"]}, "argv"),
    ("lone surrogate in argv", {"argv": ["echo", "\ud800"]}, "argv"),
    ("lone low surrogate in argv", {"argv": ["echo", "x\udcffy"]}, "argv"),
    ("lone surrogate in an env value", {"env": {"K": "\udc80"}}, "env.K"),
    ("lone surrogate in name", {"name": "train\ud800"}, "name"),
    ("lone surrogate in user", {"user": "\udce9lise"}, "user"),
    ("lone surrogate in account", {"account": "p\ud83d"}, "account"),
    ("LF in name", {"name": "a\nb"}, "name"),
    ("CR in name", {"name": "a\rb"}, "name"),
    ("CRLF in name", {"name": "train\r\n"}, "name"),
    ("ESC in name", {"name": "\x1b[31mred"}, "name"),
    ("LF in user", {"user": "al\nice"}, "user"),
    ("CR in account", {"account": "proj\r1"}, "account"),
    ("NUL in script", {"argv": None, "script": "#!/bin/sh\necho \0"}, "script"),
    ("lone surrogate in script", {"argv": None, "script": "#!/bin/sh\necho \udc80"}, "script"),
    ("LF in workdir", {"workdir": "/tmp/a\nb"}, "workdir"),
    ("NUL in workdir", {"workdir": "/tmp/a\0b"}, "workdir"),
    ("lone surrogate in time", {"time": "10:00\ud800"}, "time"),
    ("lone surrogate in estimate", {"estimate": "\ud8005:00"}, "estimate"),
    ("NUL in shape", {"nodes": None, "shape": "2x2x2\0"}, "shape"),
    ("LF in array", {"array": "0-3\n"}, "array"),
    ("lone surrogate in dependency", {"dependency": "afterok:1\udc80"}, "dependency"),
]


@pytest.mark.parametrize(("fields", "field"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_unrunnable_text_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        JobSpec.from_mapping({**BASE, **fields})
    assert info.value.field == field
    assert info.value.example  # every refusal shows a value that would do
    # The message is safe to log and send as UTF-8: a surrogate shows as its escape.
    str(info.value).encode("utf-8")


def test_a_batch_item_is_named_with_its_index() -> None:
    with pytest.raises(InvalidRequestError) as info:
        JobSpec.from_mapping({**BASE, "env": {"KEY": "x\0"}}, prefix="jobs[3].")
    assert info.value.field == "jobs[3].env.KEY"


def test_newlines_and_other_text_are_kept_where_they_are_legitimate() -> None:
    program = "import sys\r\nprint(sys.argv)\n"
    pem = "-----BEGIN KEY-----\nabc\r\n-----END KEY-----\n"
    spec = JobSpec.from_mapping(
        {
            "argv": [PY, "-c", program, "a\nb\r\nc", "tab\there", "\x1b[0m", ""],
            "nodes": 1,
            "env": {"PEM": pem, "JSON": '{\n  "a": 1\n}'},
            "name": "kfac é 学習 🚀",  # a surrogate pair (the rocket) is a character
            "user": "élise",
        }
    )
    assert spec.argv == (PY, "-c", program, "a\nb\r\nc", "tab\there", "\x1b[0m", "")
    assert spec.env == {"PEM": pem, "JSON": '{\n  "a": 1\n}'}
    assert spec.request.name == "kfac é 学習 🚀"
    script = JobSpec.from_mapping({"script": "#!/bin/sh\r\necho 'a\nb'\r\n", "nodes": 1})
    assert script.script == "#!/bin/sh\r\necho 'a\nb'\r\n"


def test_the_rules_are_a_function_of_field_and_value() -> None:
    # What a typed request model will call from its validators.
    assert text_problem("a\nb") is None
    assert "control character U+000A at index 1" in (text_problem("a\nb", single_line=True) or "")
    assert "NUL" in (text_problem("ab\0") or "")
    assert "U+D800" in (text_problem("\ud800") or "")
    with pytest.raises(InvalidRequestError) as info:
        check_text("jobs[0].user", "bob\r\n", single_line=True, example="alice")
    assert (info.value.field, info.value.example) == ("jobs[0].user", "alice")


# -- through the daemon's HTTP API ---------------------------------------------------------------


def post(daemon: DaemonProcess, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as is: JSON text may carry ``\\ud800`` escapes that json.dumps never writes
    for a valid string, and that an attacker or a buggy client sends all the same."""
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {daemon.token}", "Content-Length": str(len(body))}
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload)


RAW_REFUSED: list[tuple[bytes, str]] = [
    (rb'{"argv": ["echo", "\ud800"], "nodes": 1}', "argv"),
    (rb'{"argv": ["echo", "\udc80\u0041"], "nodes": 1}', "argv"),
    (rb'{"argv": ["true"], "nodes": 1, "name": "x\udfff"}', "name"),
    (rb'{"argv": ["true"], "nodes": 1, "user": "\ud800"}', "user"),
    (rb'{"argv": ["true"], "nodes": 1, "env": {"PEM": "a\u0000b"}}', "env.PEM"),
    (rb'{"argv": ["true"], "nodes": 1, "name": "a\nb"}', "name"),
    (rb'{"argv": ["true"], "nodes": 1, "name": "a\r\nb"}', "name"),
    (rb'{"argv": ["true"], "nodes": 1, "account": "\r"}', "account"),
]


@pytest.mark.parametrize(("body", "field"), RAW_REFUSED)
def test_api_refuses_with_422_naming_the_field_and_stores_nothing(
    shared_daemon: DaemonProcess, client: DaemonClient, body: bytes, field: str
) -> None:
    before = len(client.jobs())
    status, doc = post(shared_daemon, "/api/v1/jobs", body)
    assert status == 422, doc
    assert doc["error"]["code"] == "invalid_field"
    assert doc["error"]["field"] == field
    assert field in doc["error"]["message"] and doc["error"]["example"]
    assert len(client.jobs()) == before


def test_api_batch_names_the_item(shared_daemon: DaemonProcess, client: DaemonClient) -> None:
    before = len(client.jobs())
    body = rb'{"jobs": [{"argv": ["true"], "nodes": 1}, {"argv": ["\ud800"], "nodes": 1}]}'
    status, doc = post(shared_daemon, "/api/v1/jobs/batch", body)
    assert status == 422 and doc["error"]["field"] == "jobs[1].argv", doc
    assert len(client.jobs()) == before  # all or nothing: the good first job is not stored


def test_crlf_in_argv_and_env_reach_the_program_intact(
    client: DaemonClient, tmp_path: Path
) -> None:
    out = tmp_path / "seen"
    arg = "a\nb\r\nc"
    pem = "-----BEGIN-----\nabc\n-----END-----\n"
    code = (
        "import os, sys\n"
        "with open(os.environ['OUT'], 'w', newline='') as f:\n"
        "    f.write(repr(sys.argv[1:]) + repr(os.environ['PEM']))\n"
    )
    (job,) = client.submit(
        {"argv": [PY, "-c", code, arg, "\r\n"], "nodes": 1, "env": {"OUT": str(out), "PEM": pem}}
    )
    doc = client.wait(job, timeout_s=30)
    assert doc["state"] == "COMPLETED", doc
    with open(out, newline="") as f:  # no newline translation: the bytes as written
        assert f.read() == repr([arg, "\r\n"]) + repr(pem)


# -- through the CLI -----------------------------------------------------------------------------


def test_cli_prints_the_refusal_naming_the_field(shared_daemon: DaemonProcess) -> None:
    done = orch(shared_daemon, "submit", "-J", "two\nlines", "--", "true")
    assert done.returncode != 0
    assert "[field: name]" in done.stderr and "control character U+000A" in done.stderr
    # Bytes that are not UTF-8 reach Python as lone surrogates (PEP 383).
    done = orch(shared_daemon, "submit", "--", "echo", b"caf\xe9")
    assert done.returncode != 0
    assert "[field: argv]" in done.stderr and "lone surrogate U+DCE9" in done.stderr
