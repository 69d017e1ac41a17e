"""``orch demo``: what the README's first command runs on a fresh machine.

For now (scheduling core): RLScheduler's protocol on the shipped Lublin trace, with the published
figures beside ours, and a synthetic shaped workload on the Fugaku torus preset. It grows into the
full demo (sweeps of SGD versus K-FAC, MLflow report) as those parts land.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator.resources.cluster import Cluster, load_cluster
from orchestrator.resources.topology import FlatTopology
from orchestrator.scheduling.policies import Backfill
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.plots import plot_protocol, plot_schedule
from orchestrator.simulate.protocol import rlscheduler_protocol
from orchestrator.simulate.swf import read_swf
from orchestrator.simulate.workload import synthetic_torus_workload

SHIPPED_TRACE = Path(__file__).resolve().parent / "data" / "lublin_256.swf.gz"


def run_demo(out: Path, console: Console) -> None:
    """Run the demo, print its tables to ``console`` and write figures and JSON under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    trace = read_swf(SHIPPED_TRACE)
    cluster = Cluster("lublin256", FlatTopology(256))
    console.print("[bold]1/2[/bold] RLScheduler protocol on the shipped Lublin-256 trace ...")
    # Conservative backfilling is in benchmarks/README.md; it takes minutes, the rest seconds.
    rows = rlscheduler_protocol(
        trace, cluster, backfills=(Backfill.NONE, Backfill.STRICT, Backfill.EASY)
    )
    table = Table(title="mean bounded slowdown, 10 windows x 1,024 jobs (lower is better)")
    for column in ("order", "backfill", "ours", "published", "utilization"):
        table.add_column(column, justify="left" if column in ("order", "backfill") else "right")
    for r in rows:
        published = "-" if r.published_bsld is None else f"{r.published_bsld:.2f}"
        table.add_row(r.order, r.backfill, f"{r.mean_bsld:.2f}", published, f"{r.utilization:.3f}")
    console.print(table)
    protocol_png = plot_protocol(rows, out / "rlscheduler_lublin256.png")

    console.print("[bold]2/2[/bold] 500 shaped jobs on the Fugaku torus (FCFS + EASY) ...")
    fugaku = load_cluster("fugaku")
    jobs = synthetic_torus_workload(fugaku, 500, seed=0, load=0.9)
    result = simulate(fugaku, jobs, order="fcfs", backfill="easy")
    schedule_png = plot_schedule(
        result, fugaku.size, out / "fugaku_synthetic.png", title="Fugaku, 500 synthetic jobs"
    )
    summary = result.summary()
    table = Table(title=f"Fugaku ({fugaku.topology.describe()}), FCFS + EASY")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    (out / "demo.json").write_text(
        json.dumps(
            {
                "rlscheduler_protocol": [r.__dict__ for r in rows],
                "fugaku_synthetic": summary,
            },
            indent=2,
        )
    )
    console.print(f"figures: {protocol_png}, {schedule_png}; numbers: {out / 'demo.json'}")
