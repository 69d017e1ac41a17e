"""``python -m orchestrator.cli``: the ``orch`` command."""

from __future__ import annotations

import sys

from orchestrator.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
