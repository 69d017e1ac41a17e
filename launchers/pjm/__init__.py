"""The PJM backend (Fujitsu's job manager on Fugaku): direct or pilot (see :mod:`.backend`)."""

from launchers.pjm.backend import PjmBackend, pilot_cluster

__all__ = ["PjmBackend", "pilot_cluster"]
