"""The backends that run allocated jobs: one sub-package per engine.

``local`` (process groups on this machine), ``slurm`` (sbatch or steps of a pilot allocation),
``pjm`` (Fujitsu's pjsub, direct or pilot) and ``ray`` (placement groups of actors). Each holds
its backend class (``backend.py``), the pure text formats of its engine (``text.py``, tested on
captured output) and its node-side supervisor (``supervisor.py``, standard library only).

The contract they implement, the job-folder template they share and the daemon's registry of
them are in :mod:`orchestrator.backends`; the node-side helpers in :mod:`orchestrator.nodeside`.
Nothing in ``orchestrator/`` imports this package: the daemon finds a backend by name.
"""
