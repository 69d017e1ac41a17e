"""The asynchronous Optuna sweeper ``hydra/sweeper=orch_optuna``: a new trial starts the moment
a slot frees, trials are pruned across cluster jobs through the shared study storage. See
``docs/sweeps.md``."""

__version__ = "0.1.0"
