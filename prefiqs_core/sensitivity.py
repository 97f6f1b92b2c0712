"""Exact first-order sensitivity: the JVP of the normalised embedding along what pruning removed.

For pruning Δθ = θ_pruned − θ, the drift ‖n(θ+Δθ) − n(θ)‖ (n = L2-normalised embedding) is, to first
order, ‖J_θ n(x; θ) · Δθ‖. ``jvp_norm`` computes the right-hand side exactly with forward-mode AD,
one JVP per batch, so the empirical drift can be checked against it (it should agree as Δθ → 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from .pruning import weight_delta


def jvp_norm(dense: nn.Module, pruned: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """‖J_θ n(x)·Δθ‖ per row of ``x`` (a prepared batch), with Δθ = pruned − dense parameters."""
    dense = dense.eval()
    params = {n: p.detach() for n, p in dense.named_parameters()}
    buffers = {n: b.detach() for n, b in dense.named_buffers()}
    delta = weight_delta(dense, pruned)

    def embed(p):
        return F.normalize(functional_call(dense, (p, buffers), (x,)), dim=1)

    with torch.no_grad():
        _, tangent = jvp(embed, (params,), (delta,))
    return tangent.norm(dim=1)


def tail_jvp(net: nn.Module, spec):
    """``jvp_norm`` for the pruning ``spec`` through the pruned part of ``net`` only.

    Δθ is zero before ``spec.start``, so the tangent is zero up to there and the JVP can start from
    the dense activation entering that stage (the trunk runs once, without forward-mode AD). Returns
    ``(k, f)``: ``k`` the index of the first pruned stage in :func:`prefiqs_core.trunk.stages_of`
    ``(net)``, and ``f(h)`` = ‖J_θ n·Δθ‖ per row of ``h``, the dense activation entering stage ``k``
    (the prepared batch when ``k`` is 0). Equals ``jvp_norm(net, prune_copy(net, spec)[0], x)``.
    """
    from .pruning import prune_tail
    from .trunk import stages_of

    k, pruned, _ = prune_tail(net, spec)
    dense = nn.Sequential(*(stage for _, stage in stages_of(net)[k:]))  # the same parameter names
    return k, lambda h: jvp_norm(dense, pruned, h)


@torch.no_grad()
def drift_along(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    """Empirical drift of the normalised embedding at θ + t·Δθ (t = 1 is the pruned network)."""
    dense = dense.eval()
    params = {n: p.detach() for n, p in dense.named_parameters()}
    buffers = {n: b.detach() for n, b in dense.named_buffers()}
    delta = weight_delta(dense, pruned)
    moved = {n: params[n] + t * delta[n] for n in params}
    d = F.normalize(functional_call(dense, (params, buffers), (x,)), dim=1)
    p = F.normalize(functional_call(dense, (moved, buffers), (x,)), dim=1)
    return (d - p).norm(dim=1)
