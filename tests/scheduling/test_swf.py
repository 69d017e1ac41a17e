"""SWF parsing: real traces, header keys, -1 handling and malformed lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from orchestrator.exceptions import TraceFormatError
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.topology import FlatTopology
from orchestrator.simulate.swf import SWF_FIELDS, read_swf
from orchestrator.simulate.workload import workload_from_swf

HEADER = "; Version: 2\n; MaxNodes: 8\n; MaxProcs: 16\n; UnixStartTime: 1000\n"


def line(
    job: int, submit: int = 0, run: int = 10, procs: int = 2, req_time: int = 60, **kw: int
) -> str:
    values = [-1] * 18
    values[0], values[1], values[3], values[4], values[8] = job, submit, run, procs, req_time
    values[7] = kw.get("req_procs", -1)
    values[11] = kw.get("user", 1)
    return " ".join(str(v) for v in values)


def write(tmp_path: Path, text: str, name: str = "t.swf") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def test_reads_header_and_jobs(tmp_path: Path) -> None:
    path = write(
        tmp_path, HEADER + line(1) + "\n\n" + line(2, submit=5, procs=4) + "\n", "a.swf.gz"
    )
    trace = read_swf(path)
    assert trace.header["MaxProcs"] == "16"
    assert trace.max_procs == 16
    assert list(trace.jobs.columns) == [*SWF_FIELDS, "line"]
    assert trace.jobs["job_id"].tolist() == [1.0, 2.0]
    assert trace.jobs["line"].tolist() == [5, 7]


@pytest.mark.parametrize(
    ("bad", "field", "fragment"),
    [
        ("1 0 -1 10 2", "line", "expected 18 fields, found 5"),
        (line(1).replace(" 10 ", " ten ", 1), "run", "'ten' is not a number"),
        (line(1, run=-5), "run", "negative"),
        (line(1) + " 7", "line", "found 19"),
    ],
)
def test_malformed_line_names_file_line_and_field(
    tmp_path: Path, bad: str, field: str, fragment: str
) -> None:
    path = write(tmp_path, HEADER + line(1) + "\n" + bad + "\n")
    with pytest.raises(TraceFormatError) as info:
        read_swf(path)
    assert info.value.line == 6
    assert info.value.field == field
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_empty_trace(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="trace file not found"):
        read_swf(tmp_path / "nope.swf")
    with pytest.raises(TraceFormatError, match="no job lines"):
        read_swf(write(tmp_path, HEADER))


def test_minus_one_values_and_unfit_jobs_are_reported(tmp_path: Path) -> None:
    text = HEADER + "\n".join(
        [
            line(1),
            line(2, run=-1),  # no run time: cannot be replayed
            line(3, procs=-1, req_procs=4),  # allocated missing: requested size used
            line(4, procs=64),  # bigger than the cluster
            line(5, req_time=-1, run=30),  # requested time missing: run time used
        ]
    )
    trace = read_swf(write(tmp_path, text))
    cluster = Cluster("c", FlatTopology(8))
    jobs, skipped = workload_from_swf(trace, cluster)
    assert [j.job_id for j in jobs] == [1, 3, 5]
    assert {s.job_id: s.reason for s in skipped} == {
        2: "run time missing (-1)",
        4: "needs 64 nodes, cluster 'c' has 8",
    }
    by_id = {j.job_id: j for j in jobs}
    assert by_id[3].request.node_count == 4
    assert by_id[5].request.walltime_s == 30.0
    # Processors per node divide sizes (rounded up).
    jobs2, _ = workload_from_swf(trace, cluster, procs_per_node=3)
    assert {j.job_id: j.request.node_count for j in jobs2} == {1: 1, 3: 2, 5: 1}


def test_real_traces_parse(shared_traces: Path) -> None:
    for name, count in [("KTH-SP2-1996-2.1-cln.swf.gz", 28476), ("lublin_256.swf", 10000)]:
        trace = read_swf(shared_traces / name)
        assert len(trace.jobs) == count
    assert trace.max_procs == 256
