"""The emulator's ``mpiexec``: Fujitsu MPI's, as far as the PJM backend needs it.

Ranks are local processes; ``-vcoordfile`` places them at node coordinates of the job's shape.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

_COORD = re.compile(r"^\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?(?:,\s*(\d+)\s*)?\)$")


def mpiexec(argv: list[str]) -> int:
    if "PJM_JOBID" not in os.environ:
        print("[ERR.] PLE 0001 mpiexec must run inside a PJM job.", file=sys.stderr)
        return 1
    shape = [int(s) for s in os.environ["PJM_EMU_SHAPE"].split("x")]
    n: int | None = None
    vcoord: str | None = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        w = argv[i]
        if w in ("-n", "-np"):
            n = int(argv[i + 1])
            i += 2
        elif w in ("-vcoordfile", "--vcoordfile"):
            vcoord = argv[i + 1]
            i += 2
        elif w == "--":
            i += 1
            break
        else:
            print(f"[ERR.] PLE 0002 mpiexec: option {w} is not emulated.", file=sys.stderr)
            return 1
    command = argv[i:]
    if not command:
        print("[ERR.] PLE 0003 mpiexec: no program to run.", file=sys.stderr)
        return 1
    coords: list[tuple[int, int, int]] = []
    if vcoord is not None:
        for number, line in enumerate(Path(vcoord).read_text().splitlines(), 1):
            if not line.strip():
                continue
            match = _COORD.match(line.strip())
            if not match:
                print(f"[ERR.] PLE 0010 mpiexec: {vcoord}:{number}: bad coordinate {line!r}.",
                      file=sys.stderr)  # fmt: skip
                return 1
            xyz = tuple(int(g) if g else 0 for g in match.groups())
            if any(c >= d for c, d in zip(xyz, shape, strict=False)):
                print(f"[ERR.] PLE 0011 mpiexec: {vcoord}:{number}: {line.strip()} is outside "
                      f"the job's shape {'x'.join(map(str, shape))}.", file=sys.stderr)  # fmt: skip
                return 1
            coords.append((xyz[0], xyz[1], xyz[2]))
        n = len(coords) if n is None else n
        if n > len(coords):
            print(f"[ERR.] PLE 0012 mpiexec: -n {n} but {vcoord} places {len(coords)} ranks.",
                  file=sys.stderr)  # fmt: skip
            return 1
    else:
        n = n or int(os.environ.get("PJM_MPI_PROC", "1"))
        nodes = math.prod(shape)
        per = math.ceil(n / nodes)
        for r in range(n):
            k = r // per
            coords.append((k // (shape[1] * shape[2]), k // shape[2] % shape[1], k % shape[2]))
    local: dict[tuple[int, int, int], int] = {}
    procs = []
    for rank in range(n):
        xyz = coords[rank]
        local_rank = local.get(xyz, 0)
        local[xyz] = local_rank + 1
        env = dict(os.environ)
        env.update(
            {
                "OMPI_COMM_WORLD_RANK": str(rank),
                "OMPI_COMM_WORLD_SIZE": str(n),
                "OMPI_COMM_WORLD_LOCAL_RANK": str(local_rank),
                "PMIX_RANK": str(rank),
                "PJM_EMU_RANK_COORD": ",".join(map(str, xyz)),
            }
        )
        procs.append(subprocess.Popen(command, env=env))
    codes = []
    for p in procs:
        while True:
            try:
                codes.append(p.wait())
                break
            except KeyboardInterrupt:  # SIGINT reaches the ranks too: keep waiting for them
                continue
    bad = [c for c in codes if c != 0]
    if not bad:
        return 0
    return bad[0] if bad[0] > 0 else 128 - bad[0]
