"""orchestrator: experiment orchestrator and topology-aware HPC job scheduler."""

from __future__ import annotations

__version__ = "0.1.0"
