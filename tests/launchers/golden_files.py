"""Golden-file comparison for generated job scripts."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare with tests/launchers/golden/NAME; ORCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("ORCH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with ORCH_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (
        f"{name} changed; if intended, refresh with ORCH_UPDATE_GOLDEN=1 pytest tests/launchers"
    )
