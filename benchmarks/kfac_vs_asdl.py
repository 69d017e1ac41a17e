"""Per-step time of our K-FAC (sweeps/kfac.py) against ASDL's (asdfghjkl 0.1a5), side by side.

The conf MLP and CNN (conf/model/*.yaml) on random images of the conf data's shape, the same
batch, float32, one thread, both preconditioners followed by the same SGD step (momentum 0.9)
with a learning rate of 0, so that every variant times the same weights and none diverges:
ASDL's EMA starts from zero without bias correction, so its first preconditioned steps are up to
1 / 0.05^2 = 400 times those of the batch's own factors; with no KL clipping the MLP's factors
reached NaN within 10 steps at lr 0.01 and ASDL's Cholesky failed. Ours gets ``lr=0.01`` for
its KL clipping. Two schedules with the same intervals on both sides:

* ``every``: factors, inverses and preconditioning at every step, no moving average (ASDL's
  ``ema_decay=-1`` path, which inverts inside its curvature pass; ours with
  ``inverse_interval=1``, ``factor_decay=0``);
* ``inv10``: factors every step into a moving average (ours ``factor_decay=0.95``, ASDL
  ``ema_decay=0.05``), inverses every 10 steps. ASDL's EMA path calls ``torch.cuda.nvtx.range``,
  which raises on a CPU build: it is replaced here by a null context (ASDL's module only).

Fisher: ``empirical`` (the loss gradients) or ``sampled`` (ours: targets drawn from the model and
one extra partial backward; ASDL: ``fisher_mc`` with one sample). Damping 1e-3 with the pi
correction on both; ours also KL-clips (conf default; ASDL has no KL clipping; one dot product
per layer). Ours runs with Cholesky inverses (the conf default since issue 18, and ASDL's) and,
unless ``--inverses`` leaves it out, with the eigendecomposition (the conf default before).

Whole step: zero_grad, forward, backward, preconditioning, SGD step, in CPU time of this
process (one thread: steadier than wall time on a shared machine; the wall time is printed too).
After ``--warmup`` steps each, the variants run in turn for ``--rounds`` rounds of ``--steps``
steps (whole inverse intervals). Columns: the median step; the median over rounds of each round's
mean step (``step (round mean)``: keeps the inverse's cost spread over its interval, the figure
the ratios use) and of each round's mean phases, timed by the same wrappers on both sides (see
``instrument``; ASDL's extra backward for the sampled Fisher is in its step only, ours in
``curvature``).

Usage::

    .venv/bin/python benchmarks/kfac_vs_asdl.py [--data mnist5k] [--batch-size 128]
        [--models mlp,cnn] [--schedules every,inv10] [--fisher empirical,sampled]
        [--inverses cholesky,eigen]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics
import time
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
import yaml
from torch import nn

from sweeps.kfac import KFAC, KFACSettings
from sweeps.models import build_model

with warnings.catch_warnings():
    # asdl.precondition.psgd decorates functions with torch.jit.script, deprecated in this torch.
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    import asdl
    import asdl.operations.operation as asdl_op
    import asdl.precondition.natural_gradient as asdl_ng
    import asdl.symmatrix as asdl_sym
    from asdl import KfacGradientMaker, PreconditioningConfig

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "mnist1d": (1, 1, 40)}
DAMPING = 1e-3
LR = 0.01  # for our KL clipping; the SGD steps use 0 (see above)
PHASES = ("curvature", "inverse", "precondition")

# CPU seconds of this process (one thread): steadier than wall time on a shared machine.
CLOCK = time.process_time
# Phase timers, seconds since the last pop: ours and ASDL's, filled by the wrappers below.
# ``in_hooks``: ASDL's inverses computed inside its hooks (the ``every`` path), counted once.
_t: dict[str, dict[str, float]] = {
    "ours": dict.fromkeys(PHASES, 0.0),
    "asdl": dict.fromkeys((*PHASES, "hooks", "in_hooks"), 0.0),
}
_depth = [0]  # ASDL hook calls under way


def _timed(side: str, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = CLOCK()
        inside = _depth[0] > 0
        _depth[0] += key == "hooks"
        try:
            return fn(*args, **kwargs)
        finally:
            _depth[0] -= key == "hooks"
            elapsed = CLOCK() - start
            _t[side][key] += elapsed
            if key == "inverse" and inside:
                _t[side]["in_hooks"] += elapsed

    return wrapper


def instrument() -> None:
    """Wrap both sides' phases in the same timer; stub ASDL's NVTX ranges (they raise on a CPU
    build). Ours: ``curvature`` = the sampled backward and the factors, ``inverse`` = the
    inverses, ``precondition`` = preconditioning and KL clipping. ASDL: ``curvature`` = time in
    its module hooks less the inverses computed there, ``inverse`` = ``cholesky_inv``,
    ``precondition`` = ``NaturalGradientMaker.precondition``."""
    KFAC._on_model_output = _timed("ours", "curvature", KFAC._on_model_output)  # type: ignore[method-assign]
    KFAC._update_factors = _timed("ours", "curvature", KFAC._update_factors)  # type: ignore[method-assign]
    KFAC._update_inverses = _timed("ours", "inverse", KFAC._update_inverses)  # type: ignore[method-assign]
    KFAC._precondition = _timed("ours", "precondition", KFAC._precondition)  # type: ignore[method-assign]
    ctx = asdl.OperationContext
    for name in ("call_operations_in_forward", "call_operations_in_backward"):
        setattr(ctx, name, _timed("asdl", "hooks", getattr(ctx, name)))
    inverse = _timed("asdl", "inverse", asdl_op.cholesky_inv)
    asdl_op.cholesky_inv = inverse  # type: ignore[attr-defined]
    asdl_sym.cholesky_inv = inverse  # type: ignore[attr-defined]
    maker = asdl_ng.NaturalGradientMaker
    maker.precondition = _timed("asdl", "precondition", maker.precondition)  # type: ignore[method-assign]
    asdl_ng.nvtx = types.SimpleNamespace(range=lambda *_a, **_k: contextlib.nullcontext())  # type: ignore[attr-defined]


def pop(side: str) -> dict[str, float]:
    t = _t[side]
    out = {p: t[p] for p in PHASES}
    if side == "asdl":
        out["curvature"] = t["hooks"] - t["in_hooks"]
    for k in t:
        t[k] = 0.0
    return out


def conf_model(name: str, shape: tuple[int, int, int]) -> nn.Module:
    cfg = yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    torch.manual_seed(0)
    return build_model(cfg, shape, 10)


class Variant:
    """One preconditioner on its own copy of the model, stepped on the shared batch."""

    def __init__(self, label: str, net: nn.Module, step: Callable[[], dict[str, float]]) -> None:
        self.label = label
        self.net = net
        self.step = step
        self.times: list[float] = []  # every timed step, CPU seconds
        self.rounds: list[dict[str, float]] = []  # per round: mean wall, CPU step and phases

    def summary(self) -> dict[str, float]:
        """Median CPU step, and the medians over rounds of the per-round means (ms)."""
        out = {"median": 1000 * statistics.median(self.times)}
        for key in ("wall", "step", *PHASES):
            out[key] = 1000 * statistics.median(r[key] for r in self.rounds)
        return out


def make_variants(
    model: str,
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: str,
    fisher: str,
    inverses: tuple[str, ...] = ("cholesky", "eigen"),
) -> list[Variant]:
    base = conf_model(model, tuple(x.shape[1:]))  # type: ignore[arg-type]
    inv_every = 1 if schedule == "every" else 10
    variants = []

    net = copy.deepcopy(base)
    sgd = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)

    def sgd_step(net: nn.Module = net, opt: torch.optim.Optimizer = sgd) -> dict[str, float]:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        return dict.fromkeys(PHASES, 0.0)

    variants.append(Variant("SGD", net, sgd_step))

    for inverse in inverses:
        net = copy.deepcopy(base)
        opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
        settings = KFACSettings(
            fisher=fisher,
            factor_decay=0.0 if schedule == "every" else 0.95,
            inverse_interval=inv_every,
            damping=DAMPING,
            inverse=inverse,
        )
        kfac = KFAC(net, settings)

        def ours_step(
            net: nn.Module = net, opt: torch.optim.Optimizer = opt, kfac: KFAC = kfac
        ) -> dict[str, float]:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            kfac.step(LR)
            opt.step()
            return pop("ours")

        variants.append(Variant(f"ours ({inverse})", net, ours_step))

    net = copy.deepcopy(base)
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9)
    config = PreconditioningConfig(
        data_size=len(x),
        damping=DAMPING,
        ema_decay=-1 if schedule == "every" else 0.05,
        curvature_upd_interval=None if schedule == "every" else 1,
        preconditioner_upd_interval=inv_every,
    )
    gm = KfacGradientMaker(
        net, config, fisher_type="fisher_emp" if fisher == "empirical" else "fisher_mc"
    )

    def asdl_step(
        net: nn.Module = net, opt: torch.optim.Optimizer = opt, gm: KfacGradientMaker = gm
    ) -> dict[str, float]:
        opt.zero_grad()
        dummy = gm.setup_model_call(net, x)
        gm.setup_loss_call(F.cross_entropy, dummy, y)
        gm.forward_and_backward()
        opt.step()
        return pop("asdl")

    variants.append(Variant("ASDL (cholesky)", net, asdl_step))
    return variants


def measure(variants: list[Variant], steps: int, warmup: int, rounds: int) -> None:
    """Warm up, then ``rounds`` rounds of ``steps`` steps, the variants in turn each round."""
    for v in variants:
        for _ in range(warmup):
            v.step()
    for _ in range(rounds):
        for v in variants:
            total = dict.fromkeys(("wall", "step", *PHASES), 0.0)
            wall = time.perf_counter()
            for _ in range(steps):
                start = CLOCK()
                phases = v.step()
                elapsed = CLOCK() - start
                v.times.append(elapsed)
                total["step"] += elapsed
                for q in PHASES:
                    total[q] += phases[q]
            total["wall"] = time.perf_counter() - wall
            v.rounds.append({k: t / steps for k, t in total.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=sorted(SHAPES), default="mnist5k", help="input shape of")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--schedules", default="every,inv10")
    p.add_argument("--fisher", default="empirical,sampled")
    p.add_argument("--inverses", default="cholesky,eigen", help="ours: cholesky, eigen or both")
    p.add_argument("--steps", type=int, default=10, help="steps per round (a multiple of 10)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.steps % 10:
        p.error("--steps must be a multiple of 10 (whole inverse intervals in every round)")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", "Using a non-full backward hook", FutureWarning)
    instrument()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, *SHAPES[args.data], generator=g)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    print(
        f"# {args.data} shape {SHAPES[args.data]}, batch {args.batch_size}, float32, "
        f"{args.threads} thread(s), torch {torch.__version__}; {args.rounds} rounds x "
        f"{args.steps} steps after {args.warmup}; CPU ms unless marked wall"
    )
    print(
        "| model | schedule | Fisher | variant | median step | step (round mean) | wall "
        "(round mean) | x SGD | ours / ASDL | curvature | inverse | precondition |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        for schedule in args.schedules.split(","):
            for fisher in args.fisher.split(","):
                inverses = tuple(args.inverses.split(","))
                variants = make_variants(model, x, y, schedule, fisher, inverses)
                measure(variants, args.steps, args.warmup, args.rounds)
                res = {v.label: v.summary() for v in variants}
                asdl_step, sgd_step = res["ASDL (cholesky)"]["step"], res["SGD"]["step"]
                for label, r in res.items():
                    ratio = f"{r['step'] / asdl_step:.2f}" if label.startswith("ours") else ""
                    ph = " | ".join(f"{r[q]:.2f}" for q in PHASES)
                    print(
                        f"| {model} | {schedule} | {fisher} | {label} | {r['median']:.2f} | "
                        f"{r['step']:.2f} | {r['wall']:.2f} | {r['step'] / sgd_step:.2f} | "
                        f"{ratio} | {ph} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
