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
