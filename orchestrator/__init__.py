"""orchestrator: experiment orchestrator and topology-aware HPC job scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from orchestrator import trial as trial
    from orchestrator.submitit_plugin import Executor as Executor
else:

    def __getattr__(name: str) -> Any:
        # ``orchestrator.trial`` (the public trial API) imported on first use: ``import
        # orchestrator`` stays as light as before.
        if name == "trial":
            import importlib

            return importlib.import_module("orchestrator.trial")
        if name == "Executor":
            # submitit's executor for this scheduler (docs/submitit.md): imports submitit.
            import importlib

            return importlib.import_module("orchestrator.submitit_plugin").Executor
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
