"""The ``orch`` command: parses options, calls the library, prints. No logic of its own.

:mod:`.root` holds the group ``orch`` and names, for import on first use, the commands of
:mod:`.simulate` (``simulate``, ``clusters``, ``demo``), :mod:`.jobs` (``daemon ...`` and the
job commands: ``submit``, ``queue``, ``show``, ``cancel``, ``hold``, ``release``, ``logs``,
``nodes``),
:mod:`.report` (``report``, ``predict``) and :mod:`.sweep` (``sweep ...``). Those modules import
nothing of this package; the console script ``orch`` is :func:`main`.
"""

from __future__ import annotations

from orchestrator.cli.root import main

__all__ = ["main"]
