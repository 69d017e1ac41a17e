"""The PJM emulator end to end: its commands on PATH, real jobs, the documented formats.

The backend's parsers (``launchers/pjm/text.py``) read everything the emulator prints here, so
these tests check the emulator and the parsers against each other on live output.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from launchers.pjm.text import (
    PjmError,
    PjmLimitError,
    PjmNoSuchJobError,
    PjmScript,
    final_state,
    parse_pjdel,
    parse_pjstat,
    parse_pjsub,
    pjsub_argv,
    render_pjm_script,
)
from orchestrator.resources.request import parse_shape
from orchestrator.scheduling.job import JobState


def run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout + done.stderr


def submit(cwd: Path, script: str, *options: str, name: str = "job.sh") -> str:
    path = cwd / name
    path.write_text(script)
    return parse_pjsub(run(["pjsub", *options, str(path)], cwd))


def finished(cwd: Path, job_id: str, timeout_s: float = 20.0) -> dict[str, str]:
    """Wait until ``pjstat -H`` lists the job; its row (-v columns)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = {r.job_id: r for r in parse_pjstat(run(["pjstat", "-H", "-v", job_id], cwd))}
        if job_id in rows:
            return dict(rows[job_id].columns)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {run(['pjstat', '-v'], cwd)}")


def test_directives_environment_and_formats(pjm_emulator: Path, tmp_path: Path) -> None:
    script = render_pjm_script(
        PjmScript(
            name="envjob",
            argv=[
                "sh",
                "-c",
                'echo "$PJM_JOBID $PJM_NODE $PJM_NODE_X $TAG"; echo oops >&2; exit 3',
            ],
            shape=parse_shape("2x2x1:torus"),
            rscgrp="small",
            elapse_s=60,
            env={"TAG": "tagged"},
            stdout="out.txt",
            stderr="err.txt",
            stats=True,
        )
    )
    job_id = submit(tmp_path, script)
    row = finished(tmp_path, job_id)
    # A torus request takes whole 2x3x2 units: 12 nodes for 2x2x1.
    assert row["ST"] == "EXT" and row["EC"] == "3" and row["PC"] == "0"
    assert row["NODE_REQUIRE"] == "12:2x3x2"
    assert row["ELAPSE_LIM"] == "0000:01:00"
    assert final_state(row["ST"], int(row["PC"])) is JobState.COMPLETED  # PJM's view: it ran
    assert (tmp_path / "out.txt").read_text() == f"{job_id} 12 2 tagged\n"
    assert (tmp_path / "err.txt").read_text() == "oops\n"
    stats = (tmp_path / f"envjob.{job_id}.stats").read_text()
    assert "EXIT CODE : 3" in stats
    # The default columns of pjstat, as in the user guide.
    header = run(["pjstat", "-H"], tmp_path).splitlines()[0].split()
    assert header == [
        "JOB_ID", "JOB_NAME", "MD", "ST", "USER", "START_DATE", "ELAPSE_LIM", "NODE_REQUIRE",
        "VNODE", "CORE", "V_MEM",
    ]  # fmt: skip


def test_bulk_job_sets_each_bulk_number(pjm_emulator: Path, tmp_path: Path) -> None:
    path = tmp_path / "bulk.sh"
    path.write_text('#!/bin/sh\n#PJM -L node=1\nsleep 0.3\necho "n=$PJM_BULKNUM"\n')
    job_id = parse_pjsub(run(pjsub_argv(str(path), bulk=(0, 2)), tmp_path))
    expanded = [r.job_id for r in parse_pjstat(run(["pjstat", "-E", job_id], tmp_path))]
    assert expanded == [f"{job_id}[0]", f"{job_id}[1]", f"{job_id}[2]"]
    row = finished(tmp_path, job_id)
    assert row["MD"] == "BU" and row["ST"] == "EXT"
    outs = sorted((tmp_path / f"bulk.sh.{job_id}.{k}.out").read_text() for k in range(3))
    assert outs == ["n=0\n", "n=1\n", "n=2\n"]


def test_step_jobs_run_in_order_and_a_condition_deletes_a_step(
    pjm_emulator: Path, tmp_path: Path
) -> None:
    first = submit(tmp_path, "#!/bin/sh\nsleep 0.3\necho $PJM_STEPNUM > s0\nexit 1\n", "--step")
    assert first.endswith("_0")
    seq = first.split("_")[0]
    second = submit(
        tmp_path, "#!/bin/sh\necho $PJM_STEPNUM > s1\n", "--step", "--sparam", f"jid={seq}"
    )
    third = submit(
        tmp_path, "#!/bin/sh\ntouch s2\n", "--step", "--sparam", f"jid={seq},sd=ec!=0:all"
    )
    assert (second, third) == (f"{seq}_1", f"{seq}_2")
    assert finished(tmp_path, second)["EC"] == "0"
    # Step 1 ran after step 0 had ended (its exit code 1 does not stop an unconditioned step).
    assert (tmp_path / "s0").read_text() == "0\n" and (tmp_path / "s1").read_text() == "1\n"
    assert (tmp_path / "s0").stat().st_mtime <= (tmp_path / "s1").stat().st_mtime
    # Step 2's condition is on step 1 (exit 0): it runs.
    assert finished(tmp_path, third)["ST"] == "EXT" and (tmp_path / "s2").exists()
    chain = submit(tmp_path, "#!/bin/sh\nexit 4\n", "--step")
    skipped = submit(
        tmp_path,
        "#!/bin/sh\ntouch never\n",
        "--step",
        "--sparam",
        f"jid={chain.split('_')[0]},sd=ec!=0:all",
    )
    assert finished(tmp_path, skipped)["ST"] == "CCL"
    assert not (tmp_path / "never").exists()


def test_elapse_limit_ends_the_job_with_end_code_11(pjm_emulator: Path, tmp_path: Path) -> None:
    job_id = submit(tmp_path, '#!/bin/sh\n#PJM -L "elapse=1"\nsleep 60\n')
    row = finished(tmp_path, job_id, timeout_s=15)
    assert (row["ST"], row["PC"], row["SN"]) == ("EXT", "11", "15")
    assert final_state(row["ST"], int(row["PC"])) is JobState.TIMEOUT


def test_pjdel_cancels_queued_and_running_jobs(pjm_emulator: Path, tmp_path: Path) -> None:
    job_id = submit(tmp_path, "#!/bin/sh\necho $$ > pid\nsleep 60\n")
    deadline = time.monotonic() + 10
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int((tmp_path / "pid").read_text())
    assert parse_pjdel(run(["pjdel", job_id], tmp_path)) == [job_id]
    row = finished(tmp_path, job_id)
    assert (row["ST"], row["PC"]) == ("CCL", "1")
    assert final_state(row["ST"], 1) is JobState.CANCELLED
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(PjmNoSuchJobError):
        parse_pjdel(run(["pjdel", job_id], tmp_path))


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        (["-L", "node=200"], PjmLimitError, "upper limit (96)"),
        (["-L", "rscgrp=large,node=2"], PjmLimitError, "lower limit (25)"),
        (["-L", "elapse=02:00:00"], PjmLimitError, "elapse"),
        (["-L", "node=5x5x5:strict"], PjmLimitError, "does not fit"),
        (["-L", "rscgrp=nosuch"], PjmError, "not a resource group"),
        (["--frobnicate"], PjmError, "unknown option"),
    ],
)
def test_requests_over_the_limits_are_refused(
    pjm_emulator: Path, tmp_path: Path, options: list[str], error: type[PjmError], words: str
) -> None:
    with pytest.raises(error, match=r"PJM \d{4} pjsub") as info:
        submit(tmp_path, "#!/bin/sh\ntrue\n", *options)
    assert words in str(info.value)


def test_mpiexec_places_ranks_by_vcoordfile(pjm_emulator: Path, tmp_path: Path) -> None:
    (tmp_path / "ranks").write_text("(1,2,1)\n(1,2,1)\n(0,0,0)\n")
    (tmp_path / "bad").write_text("(2,0,0)\n")
    report = 'echo "$OMPI_COMM_WORLD_RANK $OMPI_COMM_WORLD_LOCAL_RANK $PJM_EMU_RANK_COORD"'
    body = (
        f"mpiexec -n 3 -vcoordfile ranks sh -c '{report}' | sort > placed\n"
        "mpiexec -vcoordfile bad true 2> refused; echo $? >> refused\n"
    )
    job_id = submit(tmp_path, '#!/bin/bash\n#PJM -L "node=2x3x2"\n' + body)
    finished(tmp_path, job_id)
    assert (tmp_path / "placed").read_text() == "0 0 1,2,1\n1 1 1,2,1\n2 0 0,0,0\n"
    refused = (tmp_path / "refused").read_text()
    assert "outside the job's shape 2x3x2" in refused and refused.endswith("1\n")


def test_jobs_queue_until_the_machine_has_their_nodes(pjm_emulator: Path, tmp_path: Path) -> None:
    whole = '#!/bin/sh\n#PJM -L "node=4x6x4"\nsleep 1\n'
    first = submit(tmp_path, whole, name="a.sh")
    second = submit(tmp_path, whole, name="b.sh")
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = {r.job_id: r.state for r in parse_pjstat(run(["pjstat"], tmp_path))}
        if first not in rows and second not in rows:
            break
        seen.add((rows.get(first, "-"), rows.get(second, "-")))
        time.sleep(0.05)
    assert ("RUN", "QUE") in seen  # the second waited while the first held every node
    assert finished(tmp_path, second)["ST"] == "EXT"
