"""The ``orch`` Hydra launcher: every job of a multirun becomes a job of the orchestrator's
scheduler (an in-process one by default, or a running daemon). See ``docs/sweeps.md``."""

__version__ = "0.1.0"
