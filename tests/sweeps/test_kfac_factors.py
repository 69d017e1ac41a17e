"""K-FAC factors and preconditioned gradients against independent dense computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from torch import nn

from sweeps.kfac import KFAC, KFACSettings, assign_inverses, damped_inverse

EXACT = KFACSettings(
    fisher="empirical", factor_decay=0.0, inverse_interval=1, kl_clip=None, damping=1e-2
)


def tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0)),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 4, 5),
        nn.Tanh(),
        nn.Linear(5, 4, bias=False),
    ).double()


def batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, 5, 5, generator=g, dtype=torch.float64), torch.randint(
        0, 4, (n,), generator=g
    )


def explicit_patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Patches by slicing, one output position at a time (no F.unfold): ``(positions, C*kh*kw)``."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    xp = F.pad(x, (pw, pw, ph, ph))
    rows = []
    for i in range(0, xp.shape[1] - kh + 1, sh):
        for j in range(0, xp.shape[2] - kw + 1, sw):
            rows.append(xp[:, i : i + kh, j : j + kw].reshape(-1))
    return torch.stack(rows)


def per_sample_factors(
    net: nn.Sequential, x: torch.Tensor, y: torch.Tensor | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The KFC/K-FAC factors, one sample at a time.

    ``y=None`` gives the exact expectation of the true Fisher: every class, weighted by the
    model's probability, instead of a sampled target.
    """
    layers = [m for m in net if isinstance(m, nn.Linear | nn.Conv2d)]
    sums = [[torch.zeros(1, dtype=x.dtype), torch.zeros(1, dtype=x.dtype)] for _ in layers]
    for n in range(x.shape[0]):
        acts: list[torch.Tensor] = []
        outs: list[torch.Tensor] = []
        h = x[n : n + 1]
        for m in net:
            if m in layers:
                acts.append(h[0])
                h = m(h)
                outs.append(h)
            else:
                h = m(h)
        logits = h[0]
        probs = torch.softmax(logits, 0).detach()
        targets = [(int(y[n]), 1.0)] if y is not None else [(c, float(probs[c])) for c in range(4)]
        for c, weight in targets:
            grads = torch.autograd.grad(
                F.cross_entropy(logits[None], torch.tensor([c])), outs, retain_graph=True
            )
            for k, (m, a, g) in enumerate(zip(layers, acts, grads, strict=True)):
                if isinstance(m, nn.Conv2d):
                    rows = explicit_patches(a, m)
                    gs = g[0].reshape(g.shape[1], -1).T  # (positions, out)
                else:
                    rows, gs = a[None], g
                if m.bias is not None:
                    rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], 1)
                # A does not depend on the target: count it once per sample.
                if c == targets[0][0]:
                    sums[k][0] = sums[k][0] + rows.T @ rows / rows.shape[0]
                sums[k][1] = sums[k][1] + weight * gs.T @ gs
    return [(a / x.shape[0], g / x.shape[0]) for a, g in sums]


def kfac_factors(kfac: KFAC) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for lay in kfac.layers:
        assert lay.a is not None and lay.g is not None
        out.append((lay.a, lay.g))
    return out


def one_step(net: nn.Module, kfac: KFAC, x: torch.Tensor, y: torch.Tensor, lr: float = 0.1) -> None:
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    kfac.step(lr)


def test_empirical_factors_equal_per_sample_computation() -> None:
    net = tiny_net()
    x, y = batch()
    kfac = KFAC(net, EXACT)
    one_step(net, kfac, x, y)
    for (a, g), (a_ref, g_ref) in zip(
        kfac_factors(kfac), per_sample_factors(net, x, y), strict=True
    ):
        torch.testing.assert_close(a, a_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_sampled_fisher_converges_to_the_exact_expectation() -> None:
    net = tiny_net()
    x, _ = batch(3)
    copies = 4000
    xs = x.repeat(copies, 1, 1, 1)
    kfac = KFAC(net, KFACSettings(fisher="sampled", factor_decay=0.0, kl_clip=None, seed=3))
    one_step(net, kfac, xs, torch.zeros(len(xs), dtype=torch.int64))
    for (a, g), (a_ref, g_ref) in zip(
        kfac_factors(kfac), per_sample_factors(net, x, None), strict=True
    ):
        torch.testing.assert_close(a, a_ref, rtol=1e-10, atol=1e-12)
        # Monte Carlo: the error shrinks like 1/sqrt(copies); 4,000 copies give about 2 %.
        rel = float(torch.linalg.norm(g - g_ref) / torch.linalg.norm(g_ref))
        assert rel < 0.06, rel


def test_moving_average_of_factors() -> None:
    net = tiny_net()
    x, y = batch()
    x2 = x.flip(0) * 0.5
    kfac = KFAC(net, KFACSettings(fisher="empirical", factor_decay=0.8, kl_clip=None))
    one_step(net, kfac, x, y)
    first = [(a.clone(), g.clone()) for a, g in kfac_factors(kfac)]
    one_step(net, kfac, x2, y)
    second = per_sample_factors(net, x2, y)
    for (a, g), (a1, g1), (a2, g2) in zip(kfac_factors(kfac), first, second, strict=True):
        torch.testing.assert_close(a, 0.8 * a1 + 0.2 * a2, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, 0.8 * g1 + 0.2 * g2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["eigen", "cholesky"])
def test_preconditioned_gradient_equals_dense_kronecker_solve(method: str) -> None:
    net = tiny_net()
    x, y = batch()
    settings = KFACSettings(
        fisher="empirical", factor_decay=0.0, kl_clip=None, damping=3e-2, inverse=method
    )
    kfac = KFAC(net, settings)
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    raw = [lay.grad_matrix().clone() for lay in kfac.layers]
    kfac.step(0.1)
    d = settings.damping
    for lay, grad in zip(kfac.layers, raw, strict=True):
        assert lay.a is not None and lay.g is not None
        a, g = lay.a, lay.g
        pi = math.sqrt((a.trace() / a.shape[0]) / (g.trace() / g.shape[0]))
        a_d = a + pi * math.sqrt(d) * torch.eye(a.shape[0], dtype=a.dtype)
        g_d = g + math.sqrt(d) / pi * torch.eye(g.shape[0], dtype=g.dtype)
        fisher = torch.kron(a_d, g_d)  # acts on vec(V), columns stacked
        vec = torch.linalg.solve(fisher, grad.T.reshape(-1))
        expected = vec.reshape(grad.shape[1], grad.shape[0]).T
        torch.testing.assert_close(lay.grad_matrix(), expected, rtol=1e-7, atol=1e-10)


def test_kl_clipping_bounds_the_update() -> None:
    x, y = batch()
    lr, clip = 0.5, 1e-6
    plain = {}
    for kl in (None, clip):
        net = tiny_net()
        kfac = KFAC(net, KFACSettings(fisher="empirical", kl_clip=kl))
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        raw = [lay.grad_matrix().clone() for lay in kfac.layers]
        kfac.step(lr)
        plain[kl] = [lay.grad_matrix().clone() for lay in kfac.layers]
    nu = float(plain[clip][0].norm() / plain[None][0].norm())
    assert 0 < nu < 1
    for clipped, full in zip(plain[clip], plain[None], strict=True):
        torch.testing.assert_close(clipped, nu * full)
    vg = sum(float((v * g).sum()) for v, g in zip(plain[None], raw, strict=True)) * lr**2
    assert nu**2 * vg == pytest.approx(clip, rel=1e-6)


@pytest.mark.parametrize("method", ["eigen", "cholesky"])
def test_rank_deficient_factors_never_crash(method: str) -> None:
    v = torch.randn(50, 1)
    for m in (v @ v.T, v @ v.T - 1e-4 * torch.eye(50), torch.zeros(50, 50)):
        inv = damped_inverse(m, 1e-8, method)
        assert torch.isfinite(inv).all()
    inv = damped_inverse(v @ v.T, 1e-3, method)
    eye = (v @ v.T + 1e-3 * torch.eye(50)) @ inv
    torch.testing.assert_close(eye, torch.eye(50), atol=2e-3, rtol=0)


def test_training_with_rank_deficient_factors_stays_finite() -> None:
    # 2 samples, 64 inputs: A has rank 3 at most; small damping, Cholesky with float32.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))
    kfac = KFAC(net, KFACSettings(damping=1e-9, damping_min=1e-9, inverse="cholesky"))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.randn(2, 64), torch.tensor([0, 2])
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        kfac.step(0.05)
        opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_greedy_assignment_balances_cost() -> None:
    costs = [float(d) ** 3 for d in (785, 257, 256, 129, 128, 10)]
    owners = assign_inverses(costs, 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in (0, 1)]
    assert owners[0] != owners[1]  # the two largest go to different ranks
    assert max(loads) == costs[0]  # the largest alone cannot be beaten
    assert assign_inverses(costs, 1) == [0] * 6


def test_state_dict_round_trip_continues_identically() -> None:
    x, y = batch()
    runs = []
    for split in (False, True):
        net = tiny_net()
        kfac = KFAC(net, KFACSettings(fisher="sampled", inverse_interval=2, seed=5))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for i in range(5):
            if split and i == 3:
                state, weights = kfac.state_dict(), net.state_dict()
                kfac.remove()
                net = tiny_net()
                net.load_state_dict(weights)
                kfac = KFAC(net, KFACSettings(fisher="sampled", inverse_interval=2, seed=99))
                kfac.load_state_dict(state)
                opt = torch.optim.SGD(net.parameters(), lr=0.1)
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            kfac.step(0.1)
            opt.step()
        runs.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_factor_subset_equals_per_sample_computation_on_that_subset() -> None:
    net = tiny_net()
    x, y = batch(6)
    kfac = KFAC(
        net,
        KFACSettings(fisher="empirical", factor_decay=0.0, kl_clip=None, factor_samples=4),
    )
    one_step(net, kfac, x, y)
    for (a, g), (a_ref, g_ref) in zip(
        kfac_factors(kfac), per_sample_factors(net, x[:4], y[:4]), strict=True
    ):
        torch.testing.assert_close(a, a_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    sampled = KFAC(tiny_net(), KFACSettings(fisher="sampled", factor_decay=0.0, factor_samples=2))
    one_step(sampled.model, sampled, x, y)
    assert all(lay.a is not None and torch.isfinite(lay.a).all() for lay in sampled.layers)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize(
    ("conv", "pad", "mode"),
    [
        # "same" with an even kernel span in width: PyTorch pads 0 left, 1 right.
        (nn.Conv2d(2, 3, (3, 2), padding="same", dilation=(2, 1)), (0, 1, 2, 2), "constant"),
        (nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="reflect"), (1, 1, 1, 1), "reflect"),
        (
            nn.Conv2d(
                2, 3, (2, 3), stride=(1, 2), padding=(2, 1), dilation=2, padding_mode="circular"
            ),
            (1, 1, 2, 2),
            "circular",
        ),
    ],
)
def test_conv_factor_uses_the_convolutions_own_padding(
    conv: nn.Conv2d, pad: tuple[int, int, int, int], mode: str
) -> None:
    # A is the second moment of the patches the convolution multiplies: also with "same"
    # padding and non-zero padding modes, which F.unfold's zero padding cannot express.
    torch.manual_seed(0)
    conv = conv.double()
    x, _ = batch()
    out = conv(x)
    net = nn.Sequential(conv, nn.Flatten(), nn.Linear(out[0].numel(), 4)).double()
    kfac = KFAC(net, EXACT)
    one_step(net, kfac, x, torch.tensor([0, 1, 2, 3, 0, 1]))
    patches = F.unfold(F.pad(x, pad, mode=mode), conv.kernel_size, conv.dilation, 0, conv.stride)
    # The reference's patches are the convolution's own: W @ patches + b is its output.
    w = conv.weight.reshape(conv.out_channels, -1)
    assert conv.bias is not None
    torch.testing.assert_close(
        (w @ patches + conv.bias[:, None]).reshape(out.shape), out, rtol=1e-12, atol=1e-12
    )
    rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], 1)
    a = kfac.layers[0].a
    assert a is not None
    torch.testing.assert_close(a, rows.T @ rows / rows.shape[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cholesky_inverse_leaves_the_factor_unchanged(dtype: torch.dtype) -> None:
    # The damping goes onto the factor's own diagonal during the factorisation (no copy): the
    # saved diagonal is put back bit for bit, whether the first try succeeds, a jitter retry does,
    # or every try fails and the eigendecomposition takes over.
    v = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    psd = v @ v.T
    cases = {
        "first try": (psd, 1e-3),
        "jitter": (psd - 1e-9 * torch.eye(50, dtype=dtype), 1e-12),
        "eigen fallback": (psd - 1e-2 * torch.eye(50, dtype=dtype), 1e-8),
    }
    for name, (m, damping) in cases.items():
        before = m.clone()
        inv = damped_inverse(m, damping, "cholesky")
        assert torch.equal(m, before), name
        assert torch.isfinite(inv).all(), name
    m, damping = cases["first try"]
    damped = m.clone()
    damped.diagonal().add_(damping)
    expected = torch.cholesky_inverse(torch.linalg.cholesky(damped))
    assert torch.equal(damped_inverse(m, damping, "cholesky"), expected)
