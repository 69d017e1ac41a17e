"""submitit's plugin for this scheduler: ``submitit.AutoExecutor(folder, cluster="orch")``.

submitit finds it through its entry points (``[project.entry-points.submitit]`` in
``pyproject.toml``): :class:`OrchExecutor` (``orchestrator.Executor``) submits pickled callables as
jobs of a running ``orch daemon`` (found through ``$ORCH_STATE_DIR``, ``~/.orch`` or the
``state_dir`` parameter) or of a scheduler embedded in the submitting process, with the local
backend; :class:`OrchJobEnvironment` is ``submitit.JobEnvironment()`` inside such a job. See
``docs/submitit.md``.

Importing this package imports submitit (the ``clusters`` extra), nothing of the daemon: that
comes with the first submission.
"""

from __future__ import annotations

from orchestrator.submitit_plugin._environment import REQUEUE_CODE, OrchJobEnvironment
from orchestrator.submitit_plugin._executor import OrchExecutor, OrchInfoWatcher, OrchJob
from orchestrator.submitit_plugin._schedulers import shutdown

Executor = OrchExecutor

__all__ = [
    "REQUEUE_CODE",
    "Executor",
    "OrchExecutor",
    "OrchInfoWatcher",
    "OrchJob",
    "OrchJobEnvironment",
    "shutdown",
]
