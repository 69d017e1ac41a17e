"""The PJM emulator for pytest: the ``pjm_emulator`` fixture (a fixture module registered by
``tests/conftest.py``), a state folder of its own with the commands first on PATH."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pjm_emulator import pjm_emu

__all__ = ["emulator_session", "pjm_emulator"]


def emulator_session(base: Path, config: dict[str, Any] | None = None) -> Iterator[Path]:
    """Install the emulator under ``base`` and put it on PATH until the generator is closed.

    Yields the emulator's state folder (``PJM_EMU_ROOT``).
    """
    state = base / "state"
    state.mkdir(parents=True, exist_ok=True)
    bin_dir = base / "bin"
    pjm_emu.install(bin_dir, sys.executable)
    if config:
        (state / "config.json").write_text(json.dumps(config))
    patch = pytest.MonkeyPatch()
    patch.setenv("PJM_EMU_ROOT", str(state))
    patch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        yield state
    finally:
        pjm_emu.stop_all(state)
        patch.undo()


# Module scope, not session: installing is only writing four scripts, and each test module gets an
# empty emulated machine (no job of another module still queued or running on its nodes); every
# job a module leaves is pjdel'ed, and its runner killed by its PID, when the module ends.
@pytest.fixture(scope="module")
def pjm_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The emulator on PATH for the test module; yields its state folder (``PJM_EMU_ROOT``)."""
    yield from emulator_session(tmp_path_factory.mktemp("pjm-emu"))
