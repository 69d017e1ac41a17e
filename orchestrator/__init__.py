"""orchestrator: experiment orchestrator and topology-aware HPC job scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from orchestrator import trial as trial
else:

    def __getattr__(name: str) -> Any:
        # ``orchestrator.trial`` (the public trial API) imported on first use: ``import
        # orchestrator`` stays as light as before.
        if name == "trial":
            import importlib

            return importlib.import_module("orchestrator.trial")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
