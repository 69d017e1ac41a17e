"""``python -m orchestrator.daemon``: the process ``orch daemon start`` launches, which is
``orch daemon start --foreground ARGS``."""

from __future__ import annotations

import sys

from orchestrator.cli import main


def daemon_process() -> int:
    """``orch daemon start --foreground`` with this process's arguments."""
    main(["daemon", "start", "--foreground", *sys.argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(daemon_process())
