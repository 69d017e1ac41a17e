"""The PJM emulator for pytest: a session's state folder, its commands first on PATH."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pjm_emu
import pytest

__all__ = ["emulator_session"]


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
