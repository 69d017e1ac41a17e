"""What a task of a submitit job runs: ``python -u -m orchestrator.submitit_plugin._job FOLDER``.

It puts the submitter's ``sys.path`` (``ORCH_SUBMITIT_SYS_PATH``) after its own first entry, so a
function pickled by reference (a test module's, a script folder's) imports as it did there; sends
its output to submitit's per-task files (``FOLDER/<job id>_<rank>_log.out`` and ``.err``, where
``job.stdout()`` reads them); then runs submitit's own job body, which unpickles the call, runs
it, and writes ``<job id>_<rank>_result.pkl``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def main(args: list[str]) -> None:
    if len(args) != 1:
        print("usage: python -m orchestrator.submitit_plugin._job FOLDER", file=sys.stderr)
        sys.exit(2)
    folder = args[0]
    extra = [p for p in os.environ.get("ORCH_SUBMITIT_SYS_PATH", "").split(os.pathsep) if p]
    # After ours: the installed packages' metadata (submitit's entry points) comes first.
    sys.path += [p for p in extra if p not in sys.path]
    from submitit.core import plugins
    from submitit.core.submission import process_job
    from submitit.core.utils import JobPaths

    from orchestrator.submitit_plugin._environment import OrchJobEnvironment

    environments = plugins.get_job_environments()  # submitit's cached registry
    if OrchJobEnvironment.name() not in environments:
        # An installation whose entry points predate the plugin (pip install -e . again
        # registers them): the job still knows where it runs.
        environments[OrchJobEnvironment.name()] = OrchJobEnvironment()  # type: ignore[index]

    paths = JobPaths(folder, job_id=os.environ["ORCH_JOB_ID"], task_id=int(os.environ["RANK"]))
    paths.folder.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    out = os.open(paths.stdout, flags, 0o644)
    err = (
        out if os.environ.get("SUBMITIT_STDERR_TO_STDOUT") else os.open(paths.stderr, flags, 0o644)
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out, 1)
    os.dup2(err, 2)
    process_job(folder)


if __name__ == "__main__":
    main(sys.argv[1:])
