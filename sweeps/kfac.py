"""K-FAC: a Kronecker-factored natural-gradient preconditioner for Linear and Conv2d layers.

Used between ``loss.backward()`` and ``optimizer.step()``, so switching SGD to K-FAC is one line::

    kfac = KFAC(model, KFACSettings(...))
    loss = F.cross_entropy(model(x), y)     # mean over the (local) batch
    loss.backward()
    kfac.step(lr)                           # factors, inverses, then preconditions .grad in place
    optimizer.step()

Each layer's Fisher block is approximated by ``A (x) G``: ``A`` is the second moment of the
layer's inputs (with a ones column for the bias; for convolutions the patches ``F.unfold``
gives, the KFC approximation of Grosse and Martens 2016), ``G`` that of the per-sample gradients
with respect to its outputs. The gradient ``V`` (``out x in``, bias as the last column) becomes
``(G + dG I)^-1 V (A + dA I)^-1`` with factored Tikhonov damping ``dA = pi sqrt(d)``,
``dG = sqrt(d) / pi``, ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` (Martens and Grosse 2015).

The true Fisher (``fisher="sampled"``) draws targets from the model's own predictive distribution
and back-propagates them to the layer outputs (an extra partial backward at the end of the
forward, on factor-update steps only); the empirical Fisher reuses the gradients of the real loss.
Both assume a cross-entropy loss on the model's output logits, averaged over the batch.

Data-parallel: the batch factors are averaged over ranks in one all-reduce, so every rank holds the
factors of the global batch; each inverse is computed on one rank, chosen by a greedy assignment
of factors by cost (Osawa et al. 2019's layer-wise distribution, generalised per factor as in
KAISA, Pauloski et al. 2021), and broadcast. Gradients must already be averaged over ranks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from torch import nn

__all__ = ["KFAC", "KFACSettings", "assign_inverses", "damped_inverse"]

# Jitter for a Cholesky factorisation that fails: relative to the mean diagonal, times ten per try.
_JITTER = 1e-6
_JITTER_TRIES = 4


@dataclass(frozen=True)
class KFACSettings:
    """K-FAC hyper-parameters (the ``optimizer.kfac`` config node).

    Attributes:
        fisher: ``"sampled"`` (true Fisher, targets drawn from the model) or ``"empirical"``.
        factor_decay: Exponential moving average weight of the old factors.
        factor_interval: Steps between factor updates.
        inverse_interval: Steps between inverse updates (a multiple of ``factor_interval``).
        damping: Tikhonov damping ``d``.
        damping_decay: ``d`` is multiplied by this every ``damping_decay_steps`` steps...
        damping_decay_steps: ...
        damping_min: ...and never falls below this.
        kl_clip: Scale the update so ``lr^2 * sum(v . g) <= kl_clip``; ``None`` disables it.
        inverse: ``"cholesky"`` (with jitter retries, then eigen) or ``"eigen"``
            (eigendecomposition): the same damped inverse to round-off, Cholesky 3.5-6x cheaper.
        distribute_inverse: Compute each inverse on one rank and broadcast it.
        factor_samples: Estimate the factors on at most this many samples of each rank's batch
            (the batch is already shuffled); ``None`` uses all. Martens and Grosse (2015) use a
            subset too: at large batch the ``A`` of a wide layer costs more than its forward.
        seed: Seed of the sampler of Fisher targets (offset by the rank).
    """

    fisher: str = "sampled"
    factor_decay: float = 0.95
    factor_interval: int = 1
    inverse_interval: int = 10
    damping: float = 1e-3
    damping_decay: float = 1.0
    damping_decay_steps: int = 1000
    damping_min: float = 1e-6
    kl_clip: float | None = 1e-3
    inverse: str = "cholesky"
    distribute_inverse: bool = True
    factor_samples: int | None = None
    seed: int = 0

    @classmethod
    def from_config(cls, node: dict[str, Any], seed: int = 0) -> KFACSettings:
        """Build from a validated ``optimizer.kfac`` config node."""
        return cls(
            **{k: node[k] for k in cls.__dataclass_fields__ if k in node and k != "seed"}, seed=seed
        )


def damped_inverse(m: torch.Tensor, damping: float, method: str) -> torch.Tensor:
    """Invert ``m + damping * I`` for a symmetric positive semi-definite ``m``, never failing.

    Rank-deficient factors are the rule (a layer with more inputs than samples in the batch), so
    an eigendecomposition clamps round-off negative eigenvalues to zero before adding the damping,
    and a Cholesky factorisation that fails is retried with growing jitter and finally replaced by
    the eigendecomposition. Work is done in float64 when float32 does not converge.

    The Cholesky branch adds the damping to ``m``'s own diagonal for the factorisation and puts
    the saved diagonal back afterwards (``m`` is unchanged, bit for bit, when this returns or
    raises): no copy of ``m`` (0.35 ms of 7 on a 785-wide float32 factor, ASDL does the same
    without the restore). So ``m`` must be writable and not be read by another thread meanwhile.

    Args:
        m: Symmetric matrix ``(d, d)``.
        damping: Added to the diagonal, > 0.
        method: ``"eigen"`` or ``"cholesky"``.

    Returns:
        The inverse, in ``m``'s dtype.
    """
    if method == "cholesky":
        # The damping (and any jitter) written onto m's diagonal, restored in the end: no identity
        # matrix built and added (a quarter of the inverse's time on a 1,569-wide factor), no
        # copy of m, the same numbers.
        diag = m.diagonal()
        saved = diag.clone()
        try:
            jitter = 0.0
            scale = abs(float(saved.mean()) + damping) or 1.0
            for _ in range(_JITTER_TRIES + 1):
                torch.add(saved, damping + jitter, out=diag)
                chol, info = torch.linalg.cholesky_ex(m)
                if int(info) == 0:
                    return torch.cholesky_inverse(chol)
                jitter = scale * _JITTER if jitter == 0.0 else jitter * 10.0
        finally:
            diag.copy_(saved)
    try:
        evals, evecs = torch.linalg.eigh(m)
    except RuntimeError:  # torch.linalg.LinAlgError derives from it
        evals64, evecs64 = torch.linalg.eigh(m.double())
        evals, evecs = evals64.to(m.dtype), evecs64.to(m.dtype)
    inv_vals = 1.0 / (evals.clamp_min(0.0) + damping)
    inverse: torch.Tensor = (evecs * inv_vals) @ evecs.T
    return inverse


def assign_inverses(costs: list[float], world: int) -> list[int]:
    """Greedy longest-processing-time assignment of inverse work to ranks.

    Args:
        costs: Cost of each item (``d**3`` for a ``d x d`` factor).
        world: Number of ranks.

    Returns:
        The owning rank of each item.

    Example:
        >>> assign_inverses([8.0, 1.0, 27.0, 1.0], 2)
        [1, 1, 0, 0]
    """
    load = [0.0] * world
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += costs[i]
    return owner


def _gram(cols: torch.Tensor, scale: float, extra: int = 0) -> torch.Tensor:
    """``scale * cols @ cols.T`` in the top left of a new ``(d + extra)``-square matrix (the rest
    left for the caller to fill).

    One GEMM writing straight into the result, scaled inside it: no product, quotient and copy as
    separate tensors (12.6 against 4.2 ms for the 1,569-wide ``A`` of the conf CNN's Linear at
    batch 128, 1.6 against 1.1 ms for the MLP's 785-wide one).
    """
    d = cols.shape[0]
    out = cols.new_empty(d + extra, d + extra)
    block = out[:d, :d]
    torch.addmm(block, cols, cols.T, beta=0, alpha=scale, out=block)
    return out


class _Layer:
    """What K-FAC keeps for one Linear or Conv2d module."""

    def __init__(self, name: str, module: nn.Linear | nn.Conv2d) -> None:
        self.name = name
        self.module = module
        self.has_bias = module.bias is not None
        w = module.weight
        self.dim_a = int(w[0].numel()) + int(self.has_bias)
        self.dim_g = int(w.shape[0])
        self.inputs: torch.Tensor | None = None
        self.outputs: torch.Tensor | None = None
        self.out_grad: torch.Tensor | None = None  # per-sample gradients w.r.t. the outputs
        self.batch: int = 0
        self.a: torch.Tensor | None = None
        self.g: torch.Tensor | None = None
        self.a_inv: torch.Tensor | None = None
        self.g_inv: torch.Tensor | None = None

    def input_columns(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as columns, ``(in, samples)`` (patches for a convolution: ``(C*kh*kw,
        samples*positions)``, rows in ``F.unfold``'s order), without the bias's ones row.

        A convolution's patches are built channel-first: two ``Tensor.unfold`` views of the padded
        input and one permuting copy, 4x cheaper than ``F.unfold`` and the transpose its
        ``(samples*positions, C*kh*kw)`` rows need (4.2 against 16.7 ms on the conf CNN's second
        convolution at batch 128, 28x28 inputs, float32, one thread), the same numbers. A
        Linear's are a transposed view, no copy.
        """
        m = self.module
        if not isinstance(m, nn.Conv2d):
            return x.reshape(-1, x.shape[-1]).T
        (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
        # The padding the convolution itself applies (Conv2d's own forward pads by this attribute
        # for non-zero modes): also "same" (uneven sides when the kernel span is even) and
        # reflect / replicate / circular, which F.unfold's zero padding cannot express.
        pad = m._reversed_padding_repeated_twice
        if any(pad):
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x = F.pad(x, pad, mode=mode)
        patches = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
        if dh > 1 or dw > 1:
            patches = patches[..., ::dh, ::dw]
        # (N, C, OH, OW, kh, kw) -> (C, kh, kw, N, OH, OW): F.unfold's row order (c, i, j).
        return patches.permute(1, 4, 5, 0, 2, 3).reshape(x.shape[1] * kh * kw, -1)

    def batch_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``A`` (mean over samples and positions) and ``G`` (sum over positions, mean over
        samples) of the captured batch."""
        assert self.inputs is not None and self.out_grad is not None
        cols = self.input_columns(self.inputs)
        d, n = cols.shape
        a = _gram(cols, 1.0 / n, extra=int(self.has_bias))
        if self.has_bias:
            # The ones row's products, without concatenating it: the mean input as the last row
            # and column, 1 in the corner.
            mean = cols.mean(1)
            a[:d, d] = mean
            a[d, :d] = mean
            a[d, d] = 1.0
        g = self.out_grad
        # (N, C, H, W) -> (C, N*H*W): contiguous runs of H*W in the copy, unlike channels-last.
        g = g.transpose(0, 1).reshape(g.shape[1], -1) if g.dim() > 2 else g.T
        return a, _gram(g, 1.0 / self.batch)

    def grad_matrix(self) -> torch.Tensor:
        w = self.module.weight
        assert w.grad is not None
        v = w.grad.reshape(w.shape[0], -1)
        if self.has_bias:
            b = self.module.bias
            assert b is not None and b.grad is not None
            v = torch.cat([v, b.grad.reshape(-1, 1)], dim=1)
        return v

    def set_grad(self, v: torch.Tensor) -> None:
        w = self.module.weight
        assert w.grad is not None
        if self.has_bias:
            b = self.module.bias
            assert b is not None and b.grad is not None
            b.grad.copy_(v[:, -1])
            v = v[:, :-1]
        w.grad.copy_(v.reshape(w.shape))


class KFAC:
    """K-FAC preconditioner over every Linear and Conv2d (ungrouped) module of ``model``.

    Not thread-safe; one per model. All ranks of a data-parallel job must call :meth:`step` at
    the same steps (it runs collectives when ``torch.distributed`` is initialised).

    Args:
        model: The model; hooks are registered on its Linear and Conv2d modules.
        settings: Hyper-parameters.
        skip: Names of modules to leave unpreconditioned.

    Attributes:
        steps: Completed calls of :meth:`step`.
        timings: Seconds spent, accumulated until :meth:`pop_timings`: ``curvature`` (sampled
            backward, batch factors, moving averages), ``inverse``, ``communication`` (factor
            all-reduce, inverse broadcast), ``precondition``.
    """

    def __init__(
        self, model: nn.Module, settings: KFACSettings, skip: tuple[str, ...] = ()
    ) -> None:
        self.model = model
        self.s = settings
        self.steps = 0
        self.damping = settings.damping
        self.layers: list[_Layer] = []
        for name, m in model.named_modules():
            if name in skip:
                continue
            if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
                self.layers.append(_Layer(name, m))
        if not self.layers:
            raise ValueError("K-FAC found no Linear or Conv2d layer to precondition")
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        costs = [float(d) ** 3 for lay in self.layers for d in (lay.dim_a, lay.dim_g)]
        self.owners = (
            assign_inverses(costs, self.world)
            if settings.distribute_inverse and self.world > 1
            else [self.rank] * len(costs)
        )
        self.generator = torch.Generator(device=next(model.parameters()).device)
        self.generator.manual_seed(settings.seed * 1009 + self.rank)
        self.timings: dict[str, float] = dict.fromkeys(
            ("curvature", "inverse", "communication", "precondition"), 0.0
        )
        self._handles = [
            lay.module.register_forward_hook(self._make_hook(lay)) for lay in self.layers
        ]
        self._handles.append(model.register_forward_hook(self._on_model_output))

    # -- capture ------------------------------------------------------------------------------

    def _capturing(self) -> bool:
        return (
            self.model.training
            and torch.is_grad_enabled()
            and self.steps % self.s.factor_interval == 0
        )

    def _make_hook(self, lay: _Layer) -> Any:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not self._capturing():
                return
            full = int(output.shape[0])
            lay.batch = min(full, self.s.factor_samples or full)
            lay.inputs = inputs[0].detach()[: lay.batch]
            if self.s.fisher == "sampled":
                lay.outputs = output
            elif output.requires_grad:
                output.register_hook(  # type: ignore[no-untyped-call]  # untyped in torch
                    lambda g: self._store_grad(lay, g, full)
                )

        return hook

    def _store_grad(self, lay: _Layer, grad: torch.Tensor, full: int) -> None:
        # The loss is a batch mean, so each sample's own gradient is batch times larger.
        lay.out_grad = grad.detach()[: lay.batch] * full

    def _on_model_output(
        self, module: nn.Module, inputs: tuple[torch.Tensor, ...], logits: torch.Tensor
    ) -> None:
        if self.s.fisher != "sampled" or not self._capturing():
            return
        start = time.perf_counter()
        outs = [lay.outputs for lay in self.layers]
        if any(o is None or not o.requires_grad for o in outs):
            raise RuntimeError("K-FAC: a preconditioned layer did not run in this forward pass")
        k = self.layers[0].batch
        flat = logits.reshape(-1, logits.shape[-1])[:k]
        with torch.no_grad():
            probs = torch.softmax(flat.detach().float(), dim=-1)
            targets = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)
        # Sum, not mean: the gradients are then per-sample already.
        sampled = F.cross_entropy(flat, targets, reduction="sum")
        grads = torch.autograd.grad(sampled, outs, retain_graph=True)  # type: ignore[arg-type]
        for lay, g in zip(self.layers, grads, strict=True):
            lay.out_grad = g.detach()[:k]
            lay.outputs = None
        self.timings["curvature"] += time.perf_counter() - start

    # -- the step -----------------------------------------------------------------------------

    def current_damping(self) -> float:
        """Damping at the current step, after the decay schedule."""
        decays = self.steps // self.s.damping_decay_steps
        return max(self.s.damping_min, self.s.damping * self.s.damping_decay**decays)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """Update factors and inverses when due, then precondition every ``.grad`` in place.

        Args:
            lr: The learning rate of the coming optimizer step (for KL clipping).
        """
        if self.steps % self.s.factor_interval == 0:
            self._update_factors()
        if self.steps % self.s.inverse_interval == 0:
            self._update_inverses()
        start = time.perf_counter()
        self._precondition(lr)
        self.timings["precondition"] += time.perf_counter() - start
        self.steps += 1

    def _update_factors(self) -> None:
        start = time.perf_counter()
        batch: list[torch.Tensor] = []
        for lay in self.layers:
            if lay.inputs is None or lay.out_grad is None:
                raise RuntimeError(
                    f"K-FAC: no activations or output gradients captured for layer {lay.name!r}; "
                    "call model(x) in train mode and loss.backward() before kfac.step()"
                )
            batch.extend(lay.batch_factors())
            lay.inputs = lay.out_grad = None
        self.timings["curvature"] += time.perf_counter() - start
        if self.distributed and self.world > 1:
            start = time.perf_counter()
            flat = torch.cat([b.reshape(-1) for b in batch])
            dist.all_reduce(flat)
            flat /= self.world
            batch = [
                t.view_as(b)
                for t, b in zip(torch.split(flat, [b.numel() for b in batch]), batch, strict=True)
            ]
            self.timings["communication"] += time.perf_counter() - start
        start = time.perf_counter()
        decay = self.s.factor_decay
        for i, lay in enumerate(self.layers):
            a, g = batch[2 * i], batch[2 * i + 1]
            if lay.a is None or lay.g is None or decay == 0.0:
                # The batch factors are new tensors (views of a new buffer when all-reduced).
                lay.a, lay.g = a, g
            else:
                lay.a.mul_(decay).add_(a, alpha=1 - decay)
                lay.g.mul_(decay).add_(g, alpha=1 - decay)
        self.timings["curvature"] += time.perf_counter() - start

    def _update_inverses(self) -> None:
        start = time.perf_counter()
        self.damping = self.current_damping()
        root = math.sqrt(self.damping)
        results: list[torch.Tensor | None] = []
        for i, lay in enumerate(self.layers):
            assert lay.a is not None and lay.g is not None
            mean_a = float(lay.a.trace()) / lay.dim_a
            mean_g = float(lay.g.trace()) / lay.dim_g
            pi = math.sqrt(mean_a / mean_g) if mean_a > 0 and mean_g > 0 else 1.0
            for j, (m, d) in enumerate(((lay.a, pi * root), (lay.g, root / pi))):
                mine = self.owners[2 * i + j] == self.rank
                results.append(damped_inverse(m, d, self.s.inverse) if mine else None)
        self.timings["inverse"] += time.perf_counter() - start
        if self.distributed and self.world > 1 and self.s.distribute_inverse:
            start = time.perf_counter()
            self._broadcast_inverses(results)
            self.timings["communication"] += time.perf_counter() - start
        for i, lay in enumerate(self.layers):
            lay.a_inv, lay.g_inv = results[2 * i], results[2 * i + 1]

    def _broadcast_inverses(self, results: list[torch.Tensor | None]) -> None:
        # One broadcast per owning rank of all its inverses packed together: W calls, not 2L.
        dims = [d for lay in self.layers for d in (lay.dim_a, lay.dim_g)]
        ref = self.layers[0].module.weight
        for r in range(self.world):
            items = [k for k, o in enumerate(self.owners) if o == r]
            if not items:
                continue
            if r == self.rank:
                flat = torch.cat([results[k].reshape(-1) for k in items])  # type: ignore[union-attr]
            else:
                flat = torch.empty(
                    sum(dims[k] ** 2 for k in items), dtype=ref.dtype, device=ref.device
                )
            dist.broadcast(flat, src=r)
            for k, t in zip(items, torch.split(flat, [dims[k] ** 2 for k in items]), strict=True):
                results[k] = t.view(dims[k], dims[k])

    def _precondition(self, lr: float) -> None:
        updates: list[torch.Tensor] = []
        vg = 0.0
        for lay in self.layers:
            assert lay.a_inv is not None and lay.g_inv is not None
            grad = lay.grad_matrix()
            v = lay.g_inv @ grad @ lay.a_inv
            vg += float(torch.dot(v.reshape(-1), grad.reshape(-1))) * lr * lr
            updates.append(v)
        nu = 1.0
        if self.s.kl_clip is not None and vg > 0:
            nu = min(1.0, math.sqrt(self.s.kl_clip / vg))
        for lay, v in zip(self.layers, updates, strict=True):
            lay.set_grad(v.mul_(nu) if nu != 1.0 else v)

    def pop_timings(self) -> dict[str, float]:
        """Return the accumulated timings and reset them."""
        out = dict(self.timings)
        for k in self.timings:
            self.timings[k] = 0.0
        return out

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Factors, inverses, step count, damping and this rank's sampler state."""
        return {
            "steps": self.steps,
            "damping": self.damping,
            "generator": self.generator.get_state(),
            "layers": {
                lay.name: {"a": lay.a, "g": lay.g, "a_inv": lay.a_inv, "g_inv": lay.g_inv}
                for lay in self.layers
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            KeyError: When the checkpoint's layers are not this model's.
        """
        names = {lay.name for lay in self.layers}
        if set(state["layers"]) != names:
            raise KeyError(
                f"K-FAC checkpoint layers {sorted(state['layers'])} differ from the model's "
                f"{sorted(names)}: was it saved for another model config?"
            )
        self.steps = int(state["steps"])
        self.damping = float(state["damping"])
        self.generator.set_state(state["generator"])
        for lay in self.layers:
            saved = state["layers"][lay.name]
            lay.a, lay.g = saved["a"], saved["g"]
            lay.a_inv, lay.g_inv = saved["a_inv"], saved["g_inv"]

    def remove(self) -> None:
        """Remove the hooks (the model then trains as without K-FAC)."""
        for h in self._handles:
            h.remove()
