"""One embedded scheduler per state folder (the Hydra launcher's and the submitit plugin's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.daemon.state_folder import lock_embedded_folder
from orchestrator.exceptions import DaemonError


def test_a_second_embedded_scheduler_on_a_folder_is_refused_until_the_first_lets_go(
    tmp_path: Path,
) -> None:
    root = tmp_path / "new" / "folder"
    first = lock_embedded_folder(root, "busy")
    assert root.is_dir()
    with pytest.raises(DaemonError, match=r"^busy$"):
        lock_embedded_folder(root, "busy")
    os.close(first)
    os.close(lock_embedded_folder(root, "busy"))
