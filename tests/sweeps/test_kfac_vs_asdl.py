"""Our K-FAC (sweeps/kfac.py) against ASDL's (``asdfghjkl==0.1a5``, Osawa et al.), issue 18.

The conf MLP and CNN (conf/model/mlp.yaml, cnn.yaml) on the first 128 training images of the
conf digits data (conf/data/digits.yaml, the conf batch size), float64 on both sides, the
empirical Fisher on both sides (``fisher="empirical"`` / ``fisher_type="fisher_emp"``: sampled
targets would draw different random numbers), one batch, no EMA, inverses at that step.

Conventions, read in ASDL's source (``asdl/operations/{operation,linear,conv}.py``,
``asdl/symmatrix.py``, ``asdl/fisher.py``):

* ``A``: ASDL multiplies the summed outer products by ``1 / data_size``; for a convolution it
  unfolds patches (``im2col_2d``, the same patches as ``F.unfold``) and also divides by the
  number of output positions: the mean over samples and positions, as ours.
* ``G`` (ASDL's ``B``): the loss is re-evaluated with ``reduction="sum"``, so the output gradients
  are per-sample; summed over samples and positions, times ``1 / data_size``: the sum over
  positions and mean over samples, as ours.
* Bias: ASDL keeps **no** ones column in ``A``. It preconditions the weight by
  ``(B + dB I)^-1 V_w (A + dA I)^-1`` and the bias by ``(B + dB I)^-1 v_b`` alone, with ``pi``
  computed from the bias-free ``A``; ours appends the bias as a last column of ``V`` and a ones
  column to the inputs (homogeneous coordinates, Martens and Grosse 2015), so ``A``, ``pi`` and
  every preconditioned gradient of a layer with a bias differ.
* Damping, when ASDL inverts inside the curvature pass (``ema_decay=-1``): factored Tikhonov
  with the same ``pi = sqrt((tr A / dim A) / (tr B / dim B))``, ``dA = pi sqrt(d)``,
  ``dB = sqrt(d) / pi`` (``Operation.cov_kron_damping``) as ours, plus a floor of 1e-7 on
  ``dA`` and ``dB`` (never reached here), and a Cholesky inverse.
* EMA: ASDL's ``ema_decay`` weighs the new factors (ours weighs the old: ``factor_decay = 1 -
  ema_decay``) and starts from zero (ours starts from the first batch's factors).

So: the factors are compared directly (the bias row of our ``A``, the mean input / mean patch,
against ASDL's ``mean_inputs`` operation); inverses and preconditioned gradients directly on the
same models without biases (where the conventions coincide) and, on the conf models with biases,
against our convention rebuilt around ASDL's factors and ASDL's convention rebuilt around ours.

Tolerances (relative Frobenius norm, float64, unit round-off u = 1.1e-16): factors 1e-12 (the
same sums in another order; at most 6e-16 observed). Inverses and preconditioned gradients 1e-10:
a solve with a damped factor loses about cond(F + dI) x u, and the worst condition numbers here
are about 2e2 at the conf damping (1e-3) and 5e3 at the conf damping_min (1e-6, also tested), so
about 1e-12 for the two solves; at most 1.3e-14 (1e-3) and 2.1e-13 (1e-6) observed. The
convention differences this has to tell apart are 1e-3 and more (ASDL's bias convention moves our
weight updates by 0.6-11 % and bias updates by 57-590 % on this batch). The EMA check is on
factors only (1e-12).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
import yaml
from torch import nn

from sweeps.data import load_dataset
from sweeps.kfac import KFAC, KFACSettings
from sweeps.models import build_model

with warnings.catch_warnings():
    # asdl.precondition.psgd decorates functions with torch.jit.script, deprecated in this torch.
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    import asdl.precondition.natural_gradient as asdl_ng
    from asdl import (
        FISHER_EMP,
        OP_MEAN_INPUTS,
        SHAPE_KRON,
        FisherConfig,
        KfacGradientMaker,
        PreconditioningConfig,
        extend,
        get_fisher_maker,
    )

# ASDL registers the deprecated module backward hooks; harmless for Linear and Conv2d.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using a non-full backward hook:FutureWarning",
)

ROOT = Path(__file__).resolve().parents[2]
BATCH = 128  # conf/config.yaml batch_size
DAMPING = 1e-3  # conf/optimizer/kfac.yaml damping
FACTOR_TOL = 1e-12
SOLVE_TOL = 1e-10
MODELS = ("mlp", "cnn")


def _yaml(path: str) -> dict[str, Any]:
    node: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    return node


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int], int]:
    ds = load_dataset(_yaml("conf/data/digits.yaml"))
    return ds.x_train.double(), ds.y_train, ds.shape, ds.num_classes


def batch(k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k``-th batch of ``BATCH`` training images, float64."""
    x, y, _, _ = _digits()
    return x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]


def conf_model(name: str, *, bias: bool = True) -> nn.Module:
    """The conf model, float64, seeded; ``bias=False`` drops every Linear and Conv2d bias."""
    _, _, shape, classes = _digits()
    torch.manual_seed(0)
    net = build_model(_yaml(f"conf/model/{name}.yaml"), shape, classes).double()
    if not bias:
        for m in net.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                m.bias = None
    return net


def layers(net: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    return {n: m for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}


def rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(torch.linalg.norm(actual - expected) / torch.linalg.norm(expected))


def weight_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def run_ours(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    inverse: str = "eigen",
    damping: float = DAMPING,
) -> tuple[KFAC, dict[str, torch.Tensor]]:
    """One step of ours: factors, inverses, ``.grad`` preconditioned; and the raw gradients."""
    settings = KFACSettings(
        fisher="empirical", inverse_interval=1, damping=damping, kl_clip=None, inverse=inverse
    )
    kfac = KFAC(net, settings)
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    raw = {lay.name: lay.grad_matrix().clone() for lay in kfac.layers}
    kfac.step(0.1)
    return kfac, raw


def asdl_factors(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """ASDL's ``A``, ``B`` and mean input per layer (empirical Fisher, no inversion); leaves the
    mean-loss gradient in ``.grad``."""
    fm = get_fisher_maker(
        net, FisherConfig(fisher_type=FISHER_EMP, fisher_shapes=[SHAPE_KRON], data_size=len(x))
    )
    dummy = fm.setup_model_call(net, x)
    fm.setup_loss_call(F.cross_entropy, dummy, y)
    fm.forward_and_backward(calc_loss_grad=True)
    out: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
    with torch.no_grad(), extend(net, OP_MEAN_INPUTS) as cxt:
        net(x)
        for name, m in layers(net).items():
            kron = m.fisher.kron
            mean = cxt.get_result(m, OP_MEAN_INPUTS) if m.bias is not None else None
            out[name] = (kron.A, kron.B, mean)
    return out


def run_asdl_kfac(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, damping: float = DAMPING
) -> None:
    """One step of ASDL's K-FAC without EMA: inverses in the curvature pass, ``.grad``
    preconditioned."""
    gm = KfacGradientMaker(
        net, PreconditioningConfig(data_size=len(x), damping=damping), fisher_type=FISHER_EMP
    )
    dummy = gm.setup_model_call(net, x)
    gm.setup_loss_call(F.cross_entropy, dummy, y)
    gm.forward_and_backward()


def damped_solve(
    a: torch.Tensor, g: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """``(G + dG I)^-1 V (A + dA I)^-1`` with the pi-corrected factored damping, by solves; the
    two damped inverses, and ``dA``, ``dG``."""
    pi = math.sqrt((float(a.trace()) / a.shape[0]) / (float(g.trace()) / g.shape[0]))
    da, dg = pi * math.sqrt(DAMPING), math.sqrt(DAMPING) / pi
    a_d = a + da * torch.eye(a.shape[0], dtype=a.dtype)
    g_d = g + dg * torch.eye(g.shape[0], dtype=g.dtype)
    pre = torch.linalg.solve(a_d, torch.linalg.solve(g_d, v).T).T  # A is symmetric
    return pre, torch.linalg.inv(a_d), torch.linalg.inv(g_d), da, dg


@pytest.mark.parametrize("model", MODELS)
def test_factors_equal_asdl(model: str) -> None:
    x, y = batch()
    net = conf_model(model)
    reference = asdl_factors(copy.deepcopy(net), x, y)
    kfac, _ = run_ours(net, x, y)
    for lay in kfac.layers:
        a_ref, g_ref, mean_ref = reference[lay.name]
        assert lay.a is not None and lay.g is not None and mean_ref is not None
        assert rel(lay.a[:-1, :-1], a_ref) < FACTOR_TOL, lay.name
        # The bias row and column of our A: the mean input (mean patch of a convolution).
        assert rel(lay.a[:-1, -1], mean_ref) < FACTOR_TOL, lay.name
        assert rel(lay.a[-1, :-1], mean_ref) < FACTOR_TOL, lay.name
        assert float(lay.a[-1, -1]) == pytest.approx(1.0, abs=1e-15)
        assert rel(lay.g, g_ref) < FACTOR_TOL, lay.name


@pytest.mark.parametrize(
    ("inverse", "damping"), [("eigen", DAMPING), ("cholesky", DAMPING), ("eigen", 1e-6)]
)
@pytest.mark.parametrize("model", MODELS)
def test_inverses_and_preconditioned_gradient_equal_asdl_without_bias(
    model: str, inverse: str, damping: float
) -> None:
    # Without biases both sides use the same A, the same pi and the same damping.
    x, y = batch()
    net = conf_model(model, bias=False)
    ref = copy.deepcopy(net)
    run_asdl_kfac(ref, x, y, damping)
    kfac, _ = run_ours(net, x, y, inverse, damping)
    ref_layers = layers(ref)
    for lay in kfac.layers:
        m = ref_layers[lay.name]
        kron = m.fisher.kron
        assert lay.a_inv is not None and lay.g_inv is not None
        assert rel(lay.a_inv, kron.A_inv) < SOLVE_TOL, lay.name
        assert rel(lay.g_inv, kron.B_inv) < SOLVE_TOL, lay.name
        assert m.weight.grad is not None and lay.module.weight.grad is not None
        assert rel(lay.module.weight.grad, m.weight.grad) < SOLVE_TOL, lay.name


@pytest.mark.parametrize("model", MODELS)
def test_preconditioned_gradient_is_ours_rebuilt_around_asdl_factors(model: str) -> None:
    x, y = batch()
    net = conf_model(model)
    ref = copy.deepcopy(net)
    reference = asdl_factors(ref, x, y)
    kfac, raw = run_ours(net, x, y)
    ref_layers = layers(ref)
    for lay in kfac.layers:
        a_w, g, mean = reference[lay.name]
        assert mean is not None
        one = torch.ones(1, 1, dtype=a_w.dtype)
        a = torch.cat([torch.cat([a_w, mean[:, None]], 1), torch.cat([mean[None], one], 1)], 0)
        m = ref_layers[lay.name]
        assert m.weight.grad is not None and m.bias is not None and m.bias.grad is not None
        v = torch.cat([weight_matrix(m.weight.grad), m.bias.grad[:, None]], 1)
        assert rel(raw[lay.name], v) < FACTOR_TOL, lay.name  # the same mean-loss gradient
        expected, a_inv, g_inv, _, _ = damped_solve(a, g, v)
        assert lay.a_inv is not None and lay.g_inv is not None
        assert rel(lay.a_inv, a_inv) < SOLVE_TOL, lay.name
        assert rel(lay.g_inv, g_inv) < SOLVE_TOL, lay.name
        assert rel(lay.grad_matrix(), expected) < SOLVE_TOL, lay.name


@pytest.mark.parametrize("model", MODELS)
def test_asdl_bias_convention_rebuilt_around_our_factors(model: str) -> None:
    # ASDL's own output on the conf models with biases: what our factors give under its bias
    # convention. Ours and ASDL's then differ by the convention alone (checked to be material).
    x, y = batch()
    net = conf_model(model)
    ref = copy.deepcopy(net)
    run_asdl_kfac(ref, x, y)
    kfac, raw = run_ours(net, x, y)
    ref_layers = layers(ref)
    for lay in kfac.layers:
        assert lay.a is not None and lay.g is not None
        a_w = lay.a[:-1, :-1]
        v = raw[lay.name]
        pre_w, _, _, _, dg = damped_solve(a_w, lay.g, v[:, :-1])
        eye = torch.eye(lay.g.shape[0], dtype=lay.g.dtype)
        pre_b = torch.linalg.solve(lay.g + dg * eye, v[:, -1])
        m = ref_layers[lay.name]
        assert m.weight.grad is not None and m.bias is not None and m.bias.grad is not None
        assert rel(weight_matrix(m.weight.grad), pre_w) < SOLVE_TOL, lay.name
        assert rel(m.bias.grad, pre_b) < SOLVE_TOL, lay.name
        assert rel(lay.grad_matrix()[:, -1], m.bias.grad) > 1e-2, lay.name


def test_ema_factors_equal_asdl_with_its_zero_start_rebuilt() -> None:
    # ASDL's interval / EMA path calls torch.cuda.nvtx.range, which raises on a CPU build:
    # replaced by a null context for this test only. ASDL: F_k = (1 - e) F_(k-1) + e B_k from
    # F_0 = 0; ours: F_1 = B_1, then F_k = d F_(k-1) + (1 - d) B_k. With d = 1 - e the two
    # differ by exactly d^k B_1 after k steps.
    decay = 0.95
    net = conf_model("cnn")
    ref = copy.deepcopy(net)
    settings = KFACSettings(
        fisher="empirical", factor_decay=decay, inverse_interval=1, damping=DAMPING, kl_clip=None
    )
    kfac = KFAC(net, settings)
    config = PreconditioningConfig(
        data_size=BATCH, damping=DAMPING, ema_decay=1 - decay, curvature_upd_interval=1
    )
    stub = types.SimpleNamespace(range=lambda *_a, **_k: contextlib.nullcontext())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(asdl_ng, "nvtx", stub)
        gm = KfacGradientMaker(ref, config, fisher_type=FISHER_EMP)
        first: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for k in range(1, 4):
            x, y = batch(k - 1)
            net.zero_grad()
            F.cross_entropy(net(x), y).backward()
            kfac.step(0.1)
            dummy = gm.setup_model_call(ref, x)
            gm.setup_loss_call(F.cross_entropy, dummy, y)
            gm.forward_and_backward()
            for lay in kfac.layers:
                kron = layers(ref)[lay.name].fisher.kron
                assert lay.a is not None and lay.g is not None
                if k == 1:
                    first[lay.name] = (lay.a[:-1, :-1].clone(), lay.g.clone())
                a1, g1 = first[lay.name]
                assert rel(lay.a[:-1, :-1], kron.A + decay**k * a1) < FACTOR_TOL, lay.name
                assert rel(lay.g, kron.B + decay**k * g1) < FACTOR_TOL, lay.name
