"""``python -m orchestrator.daemon``: the process ``orch daemon start`` launches."""

from __future__ import annotations

import sys

import orchestrator.cli  # noqa: F401 - registers the commands
from orchestrator.cli_jobs import daemon_process

if __name__ == "__main__":
    sys.exit(daemon_process())
