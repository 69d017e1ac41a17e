"""How far a tuned policy can go: the score family searched on the protocol's evaluation windows
themselves (held in). This is a ceiling for what `orch tune` (which never trains on them) can
reach, not a result to report as one.

    .venv/bin/python benchmarks/tune_policy.py --backfill strict --timeout 300

Prints the starting point's and the best point's mean bounded slowdown on the evaluation windows,
the trials run and the CPU time.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import optuna

from orchestrator.resources.cluster import Cluster
from orchestrator.resources.topology import FlatTopology
from orchestrator.scheduling.policies import Backfill
from orchestrator.scheduling.tuned import TunedPolicy
from orchestrator.simulate.protocol import protocol_workloads, replay_windows
from orchestrator.simulate.swf import read_swf
from orchestrator.simulate.tune import _suggest, starting_weights

SHIPPED = Path(__file__).resolve().parents[1] / "orchestrator" / "data" / "lublin_256.swf.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trace", type=Path, default=SHIPPED)
    parser.add_argument("--backfill", default="strict", choices=["strict", "easy", "conservative"])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    trace = read_swf(args.trace)
    size = trace.max_procs or 256
    cluster = Cluster(name=f"flat{size}", topology=FlatTopology(size))
    _, workloads = protocol_workloads(trace, cluster, variant="schedgym")
    backfill = Backfill(args.backfill)

    def score(weights: dict[str, float]) -> float:
        policy = TunedPolicy(family="score", weights=weights, backfill=backfill)
        bslds, _ = replay_windows(
            cluster, workloads, lambda: policy.ordering(size), backfill, variant="schedgym"
        )
        return float(np.mean(bslds))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.enqueue_trial(starting_weights("score", "sjf"))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    wall0 = time.perf_counter()
    study.optimize(lambda t: score(_suggest(t, "score")), timeout=args.timeout)
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    print(f"trace {args.trace.name}, backfill {backfill.value}, held-in (a ceiling)")
    print(f"start (sjf) {study.trials[0].value:.2f}; best {study.best_value:.2f}")
    print(f"{len(study.trials)} trials, {time.perf_counter() - wall0:.0f} s wall, {cpu:.0f} s CPU")
    print(f"best weights {study.best_params}")


if __name__ == "__main__":
    main()
