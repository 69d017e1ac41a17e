"""Each test runs in a folder of its own (submitit's examples name relative folders), with no
daemon to find (``$ORCH_STATE_DIR`` empty): jobs go to an embedded scheduler, ended after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("submitit")


@pytest.fixture(autouse=True)
def _in_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from orchestrator.submitit_plugin import shutdown

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_STATE_DIR", str(tmp_path / "no-daemon"))
    yield
    shutdown(wait=True)
