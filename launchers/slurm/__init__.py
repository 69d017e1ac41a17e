"""The Slurm backend: direct batch jobs or steps of a pilot allocation (see :mod:`.backend`)."""

from launchers.slurm.backend import SlurmBackend

__all__ = ["SlurmBackend"]
