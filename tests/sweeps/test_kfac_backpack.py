"""K-FAC factors against BackPACK's KFLR (installed with --no-deps, see requirements-nodeps.txt).

BackPACK is an independent implementation: for Linear layers its KFLR factors are exactly ours
(``A`` the mean input outer product, ``G`` the exact expectation of the true Fisher's output
factor). For Conv2d it sums ``A`` over patch positions (ours averages: a factor of ``|T|``) and
builds ``G`` from the gradient summed over positions, not from per-position outer products as in
KFC, so there only ``A`` is compared.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from backpack import backpack, extend
from backpack.extensions import KFLR
from test_kfac_factors import batch, per_sample_factors, tiny_net
from torch import nn

from sweeps.kfac import KFAC, KFACSettings

# BackPACK's hooks fire on module outputs when the input does not require gradients: harmless.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def backpack_kflr(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[list[torch.Tensor]]:
    model = extend(net)
    loss = extend(nn.CrossEntropyLoss())(model(x), y)
    with backpack(KFLR()):
        loss.backward()
    return [m.weight.kflr for m in model if isinstance(m, nn.Linear | nn.Conv2d)]


def test_linear_and_conv_factors_match_backpack() -> None:
    x, y = batch(6)
    reference = backpack_kflr(tiny_net(), x, y)
    net = tiny_net()
    kfac = KFAC(net, KFACSettings(fisher="empirical", factor_decay=0.0, kl_clip=None))
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    kfac.step(0.1)
    conv_out = net[0](x)
    positions = conv_out.shape[2] * conv_out.shape[3]
    for lay, (g_bp, a_bp) in zip(kfac.layers, reference, strict=True):
        assert lay.a is not None
        a = lay.a[:-1, :-1] if lay.has_bias else lay.a  # BackPACK keeps the bias apart
        scale = positions if isinstance(lay.module, nn.Conv2d) else 1
        torch.testing.assert_close(a * scale, a_bp, rtol=1e-10, atol=1e-12)
        assert g_bp.shape == (lay.dim_g, lay.dim_g)


def test_exact_fisher_oracle_matches_backpack_kflr_on_linear_layers() -> None:
    # This validates the reference the sampled-Fisher convergence test compares against.
    x, y = batch(5)
    reference = backpack_kflr(tiny_net(), x, y)
    ours = per_sample_factors(tiny_net(), x, None)
    for k in (1, 2):  # the two Linear layers
        g_bp = reference[k][0]
        torch.testing.assert_close(ours[k][1], g_bp, rtol=1e-9, atol=1e-12)


def test_sampled_fisher_converges_to_backpack_kflr() -> None:
    x, y = batch(3)
    reference = backpack_kflr(tiny_net(), x, y)
    net = tiny_net()
    xs = x.repeat(4000, 1, 1, 1)
    kfac = KFAC(net, KFACSettings(fisher="sampled", factor_decay=0.0, kl_clip=None, seed=11))
    net.zero_grad()
    F.cross_entropy(net(xs), y.repeat(4000)).backward()
    kfac.step(0.1)
    for k in (1, 2):
        g = kfac.layers[k].g
        assert g is not None
        g_bp = reference[k][0]
        assert float(torch.linalg.norm(g - g_bp) / torch.linalg.norm(g_bp)) < 0.06
