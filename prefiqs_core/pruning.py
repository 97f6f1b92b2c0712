"""Pruning a copy of a face-recognition network, once per configuration.

Only conv and linear *weights* are ever pruned; biases and normalisation parameters stay dense.
Pruning is applied permanently (weights multiplied by a 0/1 mask, no forward hooks), so the pruned
copy runs exactly as fast as the dense one and the difference ``pruned - dense`` is the parameter
perturbation Δθ used by the JVP sensitivity.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .backbones.base import prunable_modules

METHODS = ("global_l1", "layerwise_l1", "random", "ln_structured")


@dataclass(frozen=True)
class PruneSpec:
    """One pruned copy: how (``method``), how much (``sparsity`` in (0, 1)) and which seed.

    ``keep_first`` leaves the first conv dense, ``keep_last`` the final embedding layer.
    For ``ln_structured`` the sparsity is the fraction of output filters (rows) removed per layer.
    """

    method: str = "global_l1"
    sparsity: float = 0.3
    seed: int = 0
    keep_first: bool = False
    keep_last: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {', '.join(METHODS)}")
        s = self.sparsity
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or not 0 < s < 1:
            raise ValueError(f"sparsity must be a number strictly between 0 and 1, got {s!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        extra = "".join(["+keepfirst" if self.keep_first else "", "+keeplast" if self.keep_last else ""])
        seed = f"/s{self.seed}" if self.method == "random" else ""
        return f"{self.method}@{self.sparsity:g}{seed}{extra}"


@dataclass
class PruneReport:
    spec: PruneSpec
    requested: float
    achieved: float  # fraction of the prunable weights this pruning removed
    zeros: float  # fraction of prunable weights that are exactly zero afterwards (incl. ones already zero)
    pruned: int
    total: int
    per_layer: dict = field(default_factory=dict)  # module name -> fraction removed

    def as_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.as_dict()
        return d


def _targets(net: nn.Module, spec: PruneSpec) -> list[tuple[str, nn.Module]]:
    mods = prunable_modules(net)
    if not mods:
        raise ValueError("the network has no conv or linear layers to prune")
    lo = 1 if spec.keep_first else 0
    hi = len(mods) - 1 if spec.keep_last else len(mods)
    mods = mods[lo:hi]
    if not mods:
        raise ValueError("keep_first/keep_last leave no layer to prune")
    return mods


def _smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest entries (exactly k, ties broken by position)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        idx = torch.argsort(scores.reshape(-1), stable=True)[:k]
        mask[idx] = True
    return mask.view_as(scores)


def compute_masks(net: nn.Module, spec: PruneSpec) -> dict[str, torch.Tensor]:
    """Boolean *keep* masks, one per pruned module's weight, for ``spec`` on ``net``."""
    targets = _targets(net, spec)
    weights = [m.weight.detach() for _, m in targets]
    if spec.method in ("global_l1", "random"):
        if spec.method == "global_l1":
            scores = [w.abs().reshape(-1).float() for w in weights]
        else:
            g = torch.Generator().manual_seed(spec.seed)
            scores = [torch.rand(w.numel(), generator=g).to(w.device) for w in weights]
        flat = torch.cat(scores)
        removed = _smallest(flat, round(spec.sparsity * flat.numel()))
        masks, start = {}, 0
        for (name, _), w in zip(targets, weights):
            masks[name] = ~removed[start:start + w.numel()].view_as(w)
            start += w.numel()
        return masks
    masks = {}
    for (name, _), w in zip(targets, weights):
        if spec.method == "layerwise_l1":
            masks[name] = ~_smallest(w.abs().float(), round(spec.sparsity * w.numel()))
        else:  # ln_structured: whole output filters (rows for linear layers) by L2 norm
            norms = w.float().reshape(w.shape[0], -1).norm(dim=1)
            rows = _smallest(norms, round(spec.sparsity * w.shape[0]))
            masks[name] = (~rows).view(-1, *([1] * (w.ndim - 1))).expand_as(w).clone()
    return masks


def prune_copy(net: nn.Module, spec: PruneSpec) -> tuple[nn.Module, PruneReport]:
    """A pruned deep copy of ``net`` (``net`` itself is untouched) and what was removed."""
    pruned = copy.deepcopy(net).eval()
    masks = compute_masks(pruned, spec)
    modules = dict(pruned.named_modules())
    per_layer, removed, total, zeros = {}, 0, 0, 0
    with torch.no_grad():
        for name, keep in masks.items():
            w = modules[name].weight
            w.mul_(keep.to(w.dtype))
            n_removed = int((~keep).sum())
            per_layer[name] = n_removed / keep.numel()
            removed += n_removed
    for _, m in prunable_modules(pruned):
        total += m.weight.numel()
        zeros += int((m.weight == 0).sum())
    report = PruneReport(spec, spec.sparsity, removed / total, zeros / total, removed, total, per_layer)
    return pruned, report


def weight_delta(dense: nn.Module, pruned: nn.Module) -> dict[str, torch.Tensor]:
    """Δθ = pruned − dense for every parameter (zero where pruning changed nothing)."""
    pd = dict(pruned.named_parameters())
    return {n: (pd[n] - p).detach() for n, p in dense.named_parameters()}
