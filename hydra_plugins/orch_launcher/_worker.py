"""A job of an ``orch`` multirun: ``python -m hydra_plugins.orch_launcher._worker FOLDER``.

Runs the Hydra task on the allocated nodes (every rank runs it: a data-parallel app joins its
process group from the rank variables the backend exports) and, on rank 0, writes the
:class:`~hydra.core.utils.JobReturn` to ``FOLDER/result.pkl``. Exits 1 when the task raised, so
the scheduler records the job FAILED (and retries it by its policy) as well.

The sweep's fork server (``_forkserver``) calls :func:`load_shared` and :func:`prime` once and
:func:`run` in each forked trial; this module's ``main`` does all in a fresh interpreter.

Imports stay inside functions: Hydra imports every module under ``hydra_plugins`` at start-up.
"""

from __future__ import annotations

import sys
from typing import Any


def load_shared(shared_dir_text: str) -> dict[str, Any]:
    """The sweep's shared state (Hydra context, task function, singletons), with this
    process's import path extended as the launcher's was, so the task function unpickles."""
    import json
    import pickle
    from pathlib import Path

    shared_dir = Path(shared_dir_text)
    for entry in json.loads((shared_dir / "sys_path.json").read_text()):
        if entry not in sys.path:
            sys.path.append(entry)
    import cloudpickle  # type: ignore[import-untyped]  # noqa: F401 - pickles refer to it
    import hydra.core.utils  # noqa: F401 - imported once here, not in each forked trial

    with open(shared_dir / "shared.pkl", "rb") as f:
        shared: dict[str, Any] = pickle.load(f)
    return shared


def prime(shared: dict[str, Any]) -> None:
    """Set Hydra's singletons to the launcher's (which scans every plugin) and its resolvers:
    once per process; trials forked from a primed server skip it."""
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    Singleton.set_state(shared["singletons"])
    setup_globals()
    shared["primed"] = True


def run(folder_text: str, shared: dict[str, Any]) -> int:
    """Run the job in ``folder_text``; its exit status (0 when the task completed)."""
    import os
    import pickle
    from pathlib import Path

    import cloudpickle
    from hydra.core.utils import JobReturn, JobStatus, run_job
    from omegaconf import open_dict

    folder = Path(folder_text)
    with open(folder / "config.pkl", "rb") as f:
        job = pickle.load(f)
    if not shared.get("primed"):
        prime(shared)
    config = job["config"]
    rank = int(os.environ.get("RANK", "0"))
    with open_dict(config.hydra.job):
        config.hydra.job.id = os.environ.get("ORCH_JOB_ID", f"orch-{job['idx']}")
        config.hydra.job.num = job["idx"]
        if rank != 0:
            # One rank writes the job's .hydra/ record; the others would race it.
            config.hydra.output_subdir = None
    ret: JobReturn = run_job(
        hydra_context=shared["hydra_context"],
        task_function=shared["task_function"],
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    if rank == 0:
        try:
            data = cloudpickle.dumps(ret)
        except Exception as e:  # an unpicklable return value or exception: keep its text
            failed = JobReturn(
                overrides=ret.overrides,
                cfg=ret.cfg,
                hydra_cfg=ret.hydra_cfg,
                working_dir=ret.working_dir,
                task_name=ret.task_name,
                status=JobStatus.FAILED,
            )
            failed.return_value = RuntimeError(
                f"the job's result cannot be pickled ({e}): {ret._return_value!r}"
            )
            data = cloudpickle.dumps(failed)
        tmp = folder / f".result.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / "result.pkl")
    return 0 if ret.status is JobStatus.COMPLETED else 1


def main(folder_text: str) -> int:
    from pathlib import Path

    return run(folder_text, load_shared(str(Path(folder_text).parent)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
