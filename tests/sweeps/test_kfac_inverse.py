"""Cholesky against eigendecomposition for K-FAC's damped inverses (``sweeps.kfac.damped_inverse``).

``(M + d I)^-1`` is one matrix whichever way it is computed, so the default inverse (Cholesky,
3.5-6x cheaper than ``torch.linalg.eigh``; benchmarks/README.md, issue 18) may replace the
eigendecomposition only if the two agree to the round-off of the solve: a backward-stable inverse
is within about ``cond(M + d I) x u`` of the exact one (``u`` the unit round-off of the dtype).

The factors are the conf MLP's and CNN's (conf/model/*.yaml) after 10 training steps with the
conf K-FAC settings (conf/optimizer/kfac.yaml: sampled Fisher, moving average, pi-corrected
damping) on the conf digits data, in float32 (training) and float64, at the conf damping (1e-3)
and the conf damping_min (1e-6). Observed: at most 0.3 cond x u (float32: 5.8e-3 relative at a
condition number of 2.9e4 with damping 1e-6, 2.4e-4 at 1e-3; float64: 3.4e-13).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
import yaml

from sweeps.data import load_dataset
from sweeps.kfac import KFAC, KFACSettings, damped_inverse
from sweeps.models import build_model

ROOT = Path(__file__).resolve().parents[2]
BATCH = 128  # conf/config.yaml batch_size


def _yaml(path: str) -> dict[str, Any]:
    node: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    return node


@functools.cache
def trained_factors(model: str, dtype: torch.dtype) -> list[tuple[str, torch.Tensor, float]]:
    """``(name, factor, pi)`` of every K-FAC factor of the conf model after 10 conf steps."""
    ds = load_dataset(_yaml("conf/data/digits.yaml"))
    torch.manual_seed(0)
    net = build_model(_yaml(f"conf/model/{model}.yaml"), ds.shape, ds.num_classes).to(dtype)
    kfac = KFAC(net, KFACSettings.from_config(_yaml("conf/optimizer/kfac.yaml")["kfac"]))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for k in range(10):
        x = ds.x_train[k * BATCH : (k + 1) * BATCH].to(dtype)
        y = ds.y_train[k * BATCH : (k + 1) * BATCH]
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        kfac.step(0.1)
        opt.step()
    kfac.remove()
    out = []
    for lay in kfac.layers:
        assert lay.a is not None and lay.g is not None
        pi = math.sqrt((float(lay.a.trace()) / lay.dim_a) / (float(lay.g.trace()) / lay.dim_g))
        out += [(f"{lay.name}.A", lay.a, pi), (f"{lay.name}.G", lay.g, 1 / pi)]
    return out


def test_cholesky_is_the_default_inverse() -> None:
    assert KFACSettings().inverse == "cholesky"
    assert _yaml("conf/optimizer/kfac.yaml")["kfac"]["inverse"] == "cholesky"


@pytest.mark.parametrize("damping", [1e-3, 1e-6])  # conf damping and damping_min
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_cholesky_inverse_equals_eigen_inverse_on_conf_factors(
    model: str, dtype: torch.dtype, damping: float
) -> None:
    u = torch.finfo(dtype).eps / 2
    for name, m, pi in trained_factors(model, dtype):
        d = pi * math.sqrt(damping)
        damped = m.clone()
        damped.diagonal().add_(d)
        # Cholesky itself succeeds here (no jitter, no fallback to the eigendecomposition).
        assert int(torch.linalg.cholesky_ex(damped)[1]) == 0, name
        chol = damped_inverse(m, d, "cholesky")
        eig = damped_inverse(m, d, "eigen")
        evals = torch.linalg.eigvalsh(m.double()).clamp_min(0.0)
        cond = float((evals.max() + d) / (evals.min() + d))
        err = float(torch.linalg.norm(chol - eig) / torch.linalg.norm(eig))
        assert err <= 10 * cond * u, (name, err, cond)
        # And both invert the damped factor.
        eye = torch.eye(m.shape[0], dtype=torch.float64)
        residual = float(torch.linalg.norm(damped.double() @ chol.double() - eye))
        assert residual <= 10 * cond * u * math.sqrt(m.shape[0]), (name, residual, cond)
