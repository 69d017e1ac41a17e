"""Two real gloo processes running K-FAC equal one process on the same global batch.

The workers are this file run as a script with ``RANK``/``WORLD_SIZE``/``MASTER_*`` set, the way
our backends start a job; the pytest process compares what they saved.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from torch import nn

from sweeps.distributed import all_reduce_gradients, init_distributed, shutdown
from sweeps.kfac import KFAC, KFACSettings

GLOBAL_BATCH = 16
STEPS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    ).double()


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(STEPS, GLOBAL_BATCH, 1, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (STEPS, GLOBAL_BATCH), generator=g)


def train(rank: int, world: int, distribute: bool, out: Path) -> None:
    """A few K-FAC steps on this rank's share of each global batch; save the final state."""
    torch.set_num_threads(1)
    model = net()
    kfac = KFAC(
        model,
        KFACSettings(
            fisher="empirical",
            factor_decay=0.9,
            inverse_interval=2,
            damping=1e-2,
            distribute_inverse=distribute,
        ),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xs, ys = data()
    local = GLOBAL_BATCH // world
    for s in range(STEPS):
        x, y = xs[s, rank * local : (rank + 1) * local], ys[s, rank * local : (rank + 1) * local]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if world > 1:
            all_reduce_gradients(model, world)
        kfac.step(0.05)
        opt.step()
    torch.save(
        {
            "params": [p.detach() for p in model.parameters()],
            "kfac": kfac.state_dict()["layers"],
            "owners": kfac.owners,
        },
        out,
    )


def run_pair(tmp: Path, distribute: bool) -> list[dict[str, object]]:
    port = free_port()
    procs = []
    for rank in range(2):
        env = os.environ | {
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        args = [sys.executable, __file__, json.dumps(distribute), str(tmp / f"rank{rank}.pt")]
        procs.append(subprocess.Popen(args, env=env))
    for p in procs:
        assert p.wait(timeout=120) == 0
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_ranks_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    train(0, 1, True, tmp_path / "single.pt")
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    ranks = run_pair(tmp_path, distribute=True)
    # Inverse work was spread: both ranks own some factors.
    assert set(ranks[0]["owners"]) == {0, 1}
    for r in ranks:
        for p, q in zip(r["params"], single["params"], strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)
        for name, layer in single["kfac"].items():
            for key in ("a", "g", "a_inv", "g_inv"):
                torch.testing.assert_close(r["kfac"][name][key], layer[key], rtol=1e-9, atol=1e-11)


def test_replicated_inverses_give_the_same_result(tmp_path: Path) -> None:
    spread = run_pair(tmp_path, distribute=True)
    (tmp_path / "again").mkdir()
    replicated = run_pair(tmp_path / "again", distribute=False)
    assert replicated[0]["owners"] == [0] * len(replicated[0]["owners"])
    for p, q in zip(spread[1]["params"], replicated[1]["params"], strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


if __name__ == "__main__":
    world_info = init_distributed("cpu")
    try:
        train(world_info.rank, world_info.size, json.loads(sys.argv[1]), Path(sys.argv[2]))
    finally:
        shutdown()
