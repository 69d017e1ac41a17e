"""PJM text formats: generated scripts (golden files) and parsers on the documented formats."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from launchers.pjm.text import (
    PJM_STATES,
    PjmError,
    PjmLimitError,
    PjmNoSuchJobError,
    PjmScript,
    final_state,
    format_elapse,
    parse_pjdel,
    parse_pjstat,
    parse_pjsub,
    pjsub_argv,
    render_pjm_script,
    vcoord_file,
)
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.request import parse_shape
from orchestrator.scheduling.job import JobState

# The formats of RIKEN's Fugaku user guide (../shared/pjm/README.md).
PJSTAT = """\
JOB_ID  JOB_NAME  MD  ST   USER   START_DATE      ELAPSE_LIM  NODE_REQUIRE  VNODE  CORE  V_MEM
238     job.sh    NM  RUN  user1  11/17 09:01:41  0001:00:00  12:2x3x2      -      -     -
239     bulk.sh   BU  RUN  user1  11/17 09:01:42  0001:00:00  12:2x3x2      -      -     -
240     step.sh   ST  RUN  user1  11/17 09:01:42  -           -             -      -     -
241     job2.sh   NM  QUE  user1  (11/17 10:00:00) 0001:00:00 2             -      -     -
"""


def test_pjm_script_golden(check_golden: Callable[[str, str], None]) -> None:
    spec = PjmScript(
        name="kfac-4x6x16",
        argv=["./train", "--note", "it's; $(rm -rf /)"],
        shape=parse_shape("4x6x16:torus:strict"),
        rscgrp="small",
        elapse_s=5400,
        mpi_proc=384,
        max_proc_per_node=1,
        group="hp200000",
        env={"OMP_NUM_THREADS": "48", "TAG": "a,b c"},
        stdout="out.txt",
        stderr="err.txt",
        stats=True,
        mpiexec=True,
        vcoordfile="ranks.vcoord",
    )
    check_golden("pjm_script.sh", render_pjm_script(spec))


def test_pjm_script_nodes_only() -> None:
    text = render_pjm_script(PjmScript(name="n", argv=["hostname"], nodes=4))
    assert '#PJM -L "node=4"' in text.splitlines()
    assert text.rstrip().endswith("hostname")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (PjmScript(name='a"b', argv=["x"], nodes=1), "name"),
        (PjmScript(name="n", argv=["x"], nodes=1, rscgrp="$(id)"), "rscgrp"),
        (PjmScript(name="n", argv=[], nodes=1), "argv"),
        (PjmScript(name="n", argv=["x"]), "nodes"),
        (PjmScript(name="n", argv=["x"], nodes=1, env={"A-B": "1"}), "env"),
    ],
)
def test_pjm_script_rejects(spec: PjmScript, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        render_pjm_script(spec)
    assert info.value.field == field


def test_pjsub_argv_bulk_and_step() -> None:
    assert pjsub_argv("run.sh", bulk=(0, 99)) == ["pjsub", "--bulk", "--sparam", "0-99", "run.sh"]
    assert pjsub_argv("s1.sh", step_after="64856", step_condition="ec!=0:one:1") == [
        "pjsub", "--step", "--sparam", "jid=64856,sd=ec!=0:one:1", "s1.sh",
    ]  # fmt: skip
    with pytest.raises(InvalidRequestError, match="array"):
        pjsub_argv("run.sh", bulk=(5, 2))


@pytest.mark.parametrize(
    ("text", "job_id"),
    [
        ("[INFO] PJM 0000 pjsub Job 9714 submitted.\n", "9714"),
        ("[INFO] PJM 0000 pjsub Job 64856_0 submitted.\n", "64856_0"),
        ("[INFO] PJM 0000 pjsub Job 12345 submitted.\n", "12345"),
    ],
)
def test_parse_pjsub(text: str, job_id: str) -> None:
    assert parse_pjsub(text) == job_id


def test_pjm_errors_are_raised_with_their_code() -> None:
    with pytest.raises(PjmError) as info:
        parse_pjsub("[ERR.] PJM 0054 pjsub node=1 is less than the lower limit (385).\n")
    assert info.value.code == "0054" and "lower limit" in str(info.value)
    with pytest.raises(PjmError) as info:
        parse_pjdel("[ERR.] PJM 0112 pjdel Job 1 does not exist.\n")
    assert info.value.code == "0112"
    with pytest.raises(PjmError, match="no job id"):
        parse_pjsub("something else\n")


def test_parse_pjdel() -> None:
    assert parse_pjdel("[INFO] PJM 0100 pjdel Accepted job 12345678.\n") == ["12345678"]


def test_parse_pjstat_default_columns() -> None:
    rows = parse_pjstat(PJSTAT)
    assert [r.job_id for r in rows] == ["238", "239", "240", "241"]
    assert rows[0].state == "RUN" and rows[0].our_state is JobState.RUNNING
    assert rows[0].columns["NODE_REQUIRE"] == "12:2x3x2"
    assert rows[0].start == "11/17 09:01:41" and not rows[0].planned_start
    assert rows[3].our_state is JobState.PENDING and rows[3].planned_start
    assert rows[3].start == "11/17 10:00:00"
    assert rows[2].columns["ELAPSE_LIM"] == "-"
    assert parse_pjstat("") == []


def test_parse_pjstat_rejects_ragged_rows() -> None:
    with pytest.raises(PjmError, match="longer than the header"):
        parse_pjstat("JOB_ID ST\n1 RUN extra\n")


@pytest.mark.parametrize(
    ("state", "code", "ours"),
    [
        ("EXT", 0, JobState.COMPLETED),
        ("EXT", 11, JobState.TIMEOUT),
        ("CCL", 1, JobState.CANCELLED),
        ("EXT", 20, JobState.NODE_FAIL),
        ("ERR", None, JobState.FAILED),
        ("RJT", 2, JobState.FAILED),
        ("HLD", None, JobState.HELD),
        ("RNA", None, JobState.STARTING),
    ],
)
def test_state_and_end_codes(state: str, code: int | None, ours: JobState) -> None:
    assert final_state(state, code) is ours


def test_elapse_and_vcoord() -> None:
    assert format_elapse(59.2) == "00:01:00"
    assert format_elapse(100 * 3600) == "100:00:00"
    assert vcoord_file([(0, 0, 0), (1, 0, 2)]) == "(0,0,0)\n(1,0,2)\n"


def test_pjm_errors_map_to_their_own_types() -> None:
    with pytest.raises(PjmLimitError) as info:
        parse_pjsub("[ERR.] PJM 0054 pjsub elapse=02:00:00 is more than the upper limit.\n")
    assert isinstance(info.value, PjmError) and info.value.command == "pjsub"
    with pytest.raises(PjmNoSuchJobError):
        parse_pjdel("[ERR.] PJM 0112 pjdel Job 7 does not exist.\n")
    # A message number with no type of its own is still a PjmError with its code.
    with pytest.raises(PjmError) as other:
        parse_pjsub("[ERR.] PJM 0007 pjsub rscgrp=x is not a resource group.\n")
    assert type(other.value) is PjmError and other.value.code == "0007"


def test_pjm_script_export_all_and_count_only() -> None:
    text = render_pjm_script(PjmScript(name="n", argv=["true"], nodes=2, export_all=True))
    assert "#PJM -X" in text.splitlines()
    assert "#PJM -X" not in render_pjm_script(PjmScript(name="n", argv=["true"], nodes=2))
    lines = render_pjm_script(PjmScript(name="n", argv=["a"], nodes=1, trap_term=True)).splitlines()
    assert lines[-3:] == ["set -eu", "trap : TERM", "a"]


# pjstat -v as the emulator prints it (tests/pjm_emulator): the default columns plus GROUP,
# ELAPSE_TIM, LST, EC, PC, SN, ACCEPT (a two-token date), RSC_UNIT and REASON.
PJSTAT_V = """\
JOB_ID  JOB_NAME  MD  ST   USER   GROUP  START_DATE      ELAPSE_TIM  ELAPSE_LIM  NODE_REQUIRE  VNODE  CORE  V_MEM  LST  EC  PC  SN  ACCEPT          RSC_UNIT      REASON
17      envjob    NM  EXT  user1  -      11/30 05:50:23  0000:00:01  0000:01:00  12:2x3x2      -      -     -      EXT  3   0   -   11/30 05:50:22  rscunit_ft01  -
18      s.sh      NM  EXT  user1  -      11/30 05:50:24  0000:00:02  0000:00:01  1             -      -     -      EXT  -   11  15  11/30 05:50:23  rscunit_ft01  -
"""  # noqa: E501


def test_parse_pjstat_verbose_columns() -> None:
    rows = {r.job_id: r for r in parse_pjstat(PJSTAT_V)}
    assert rows["17"].columns["ACCEPT"] == "11/30 05:50:22"
    assert rows["17"].columns["EC"] == "3" and rows["17"].columns["RSC_UNIT"] == "rscunit_ft01"
    assert (rows["18"].columns["PC"], rows["18"].columns["SN"]) == ("11", "15")
    assert final_state(rows["18"].state, int(rows["18"].columns["PC"])) is JobState.TIMEOUT


def test_every_documented_pjm_state_is_mapped() -> None:
    documented = [
        "ACC",
        "QUE",
        "RNA",
        "RNP",
        "RUN",
        "RNE",
        "RNO",
        "EXT",
        "CCL",
        "ERR",
        "RJT",
        "HLD",
        "SPP",
        "SPD",
        "RSM",
    ]
    assert sorted(PJM_STATES) == sorted(documented)
    with pytest.raises(PjmError, match="unknown job state"):
        final_state("XYZ", None)


def test_the_backend_reads_pjstat_through_the_state_table() -> None:
    # The PJM backend decides which jobs still run, and how one that left the queue ended,
    # from PJM_STATES and the end codes (it kept every listed job live before).
    from launchers.pjm.backend import _ended_as, _live

    listed = [dict(r.columns) for r in parse_pjstat(PJSTAT)]
    assert [row["ST"] for row in listed if _live(row)] == [row["ST"] for row in listed]
    history = {r.job_id: dict(r.columns) for r in parse_pjstat(PJSTAT_V)}
    assert not _live(history["17"]) and _ended_as(history["17"]) is JobState.COMPLETED
    assert _ended_as(history["18"]) is JobState.TIMEOUT
    assert _ended_as({"ST": "EXT", "PC": "20"}) is JobState.NODE_FAIL  # a node went down
    assert _ended_as(None) is None and _ended_as({"ST": "NEW"}) is None
    assert _live({"ST": "NEW"})  # a state newer than the table: wait and see
