"""Pruning a copy of a face-recognition network, once per configuration.

Only conv and linear *weights* are ever pruned; biases and normalisation parameters stay dense.
Pruning is applied permanently (weights multiplied by a 0/1 mask, no forward hooks), so the pruned
copy runs exactly as fast as the dense one and the difference ``pruned - dense`` is the parameter
perturbation Δθ used by the JVP sensitivity.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from .backbones.base import prunable_modules
from .trunk import stages_of, start_index

METHODS = ("global_l1", "layerwise_l1", "random", "ln_structured")


@dataclass(frozen=True)
class PruneSpec:
    """One pruned copy: how (``method``), how much (``sparsity`` in (0, 1)) and which seed.

    ``keep_first`` leaves the network's first conv dense, ``keep_last`` its final embedding layer.
    For ``ln_structured`` the sparsity is the fraction of output filters (rows) removed per layer.
    ``start`` names the stage where pruning starts (a split point, see
    :func:`prefiqs_core.trunk.split_points`): every layer before it stays dense, global ranking is
    over the layers from it on, and the dense trunk before it is computed once for both networks.
    ``None`` prunes the whole network.
    """

    method: str = "global_l1"
    sparsity: float = 0.3
    seed: int = 0
    keep_first: bool = False
    keep_last: bool = False
    start: str | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {', '.join(METHODS)}")
        s = self.sparsity
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or not 0 < s < 1:
            raise ValueError(f"sparsity must be a number strictly between 0 and 1, got {s!r}")
        if self.start is not None and (not isinstance(self.start, str) or not self.start
                                       or any(c in self.start for c in "+,@ ")):
            raise ValueError(f"start must be a split point's name, got {self.start!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """The spec string for this copy, e.g. ``global_l1@0.5+keeplast+from:blocks.10``
        (:func:`parse_prune` reads it back)."""
        extra = "".join(["+keepfirst" if self.keep_first else "", "+keeplast" if self.keep_last else "",
                         f"+from:{self.start}" if self.start else ""])
        seed = f"/s{self.seed}" if self.method == "random" or self.seed else ""
        return f"{self.method}@{self.sparsity:g}{seed}{extra}"


_HEAD = re.compile(r"^(?P<method>[a-z_0-9]+)@(?P<sparsity>[^/+]+)(?:/s(?P<seed>-?\d+))?$")
SPEC_HELP = ("METHOD@SPARSITY[/sSEED][+keepfirst][+keeplast][+from:SPLIT], several copies joined by ','; "
             f"METHOD is one of {', '.join(METHODS)}")


def parse_prune(text: str) -> list[PruneSpec]:
    """Read a pruning spec string: one copy, or several (an ensemble) separated by commas.

    ``"global_l1@0.5"`` is global L1 at 50 % over every conv and linear layer, nothing kept;
    ``"global_l1@0.4+keepfirst,layerwise_l1@0.1"`` two copies; ``"random@0.03/s2"`` seed 2;
    ``"global_l1@0.5+from:blocks.10"`` prunes only from the split point ``blocks.10`` on.
    The labels :meth:`PruneSpec.label` prints are valid spec strings.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty pruning spec; expected {SPEC_HELP}")
    specs = []
    for part in text.split(","):
        part = part.strip()
        head, *mods = part.split("+")
        m = _HEAD.match(head.strip())
        if not m:
            raise ValueError(f"cannot read pruning spec {part!r}; expected {SPEC_HELP}")
        try:
            sparsity = float(m["sparsity"])
        except ValueError:
            raise ValueError(f"pruning spec {part!r}: sparsity {m['sparsity']!r} is not a number") from None
        kw = dict(method=m["method"], sparsity=sparsity, seed=int(m["seed"] or 0))
        for mod in (x.strip() for x in mods):
            if mod == "keepfirst":
                kw["keep_first"] = True
            elif mod == "keeplast":
                kw["keep_last"] = True
            elif mod.startswith("from:") and len(mod) > 5:
                kw["start"] = mod[5:]
            else:
                raise ValueError(f"pruning spec {part!r}: unknown option {mod!r} "
                                 "(use keepfirst, keeplast or from:SPLIT)")
        try:
            specs.append(PruneSpec(**kw))
        except ValueError as e:
            raise ValueError(f"pruning spec {part!r}: {e}") from None
    return specs


def format_prune(specs) -> str:
    """The spec string of one or several copies (inverse of :func:`parse_prune`)."""
    return ",".join(s.label() for s in ([specs] if isinstance(specs, PruneSpec) else specs))


def short_prune(specs) -> str:
    """A display label: copies that differ only in their random seed are written once, with the seed
    range and the number of copies (``random@0.3/s0…s7+from:pre_fc1 ×8``); anything else is
    :func:`format_prune`. Not a spec string: parse the full one."""
    specs = [specs] if isinstance(specs, PruneSpec) else list(specs)
    seeds = sorted(s.seed for s in specs)
    if (len(specs) > 1 and len({replace(s, seed=0) for s in specs}) == 1
            and seeds == list(range(seeds[0], seeds[0] + len(specs)))):
        first = specs[0].label()
        head, _, tail = first.partition("+")
        head = head.split("/s")[0] + f"/s{seeds[0]}…s{seeds[-1]}"
        return head + ("+" + tail if tail else "") + f" ×{len(specs)}"
    return format_prune(specs)


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
    part = _part_layers(net, spec)
    mods = [(n, m) for n, m in mods[lo:hi] if n in part]
    if not mods:
        where = f"pruning from {spec.start!r}" if spec.start else "the network"
        keeps = " with keep_first/keep_last" if spec.keep_first or spec.keep_last else ""
        raise ValueError(f"{where}{keeps} leaves no layer to prune")
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


def _apply(masks: dict, modules: dict, spec: PruneSpec) -> PruneReport:
    """Multiply each masked weight by its mask, in place; ``modules`` maps names to the modules
    to change (a copy's), and holds every prunable layer of the pruned part."""
    per_layer, removed, total, zeros = {}, 0, 0, 0
    with torch.no_grad():
        for name, keep in masks.items():
            w = modules[name].weight
            w.mul_(keep.to(w.dtype))
            n_removed = int((~keep).sum())
            per_layer[name] = n_removed / keep.numel()
            removed += n_removed
    for m in modules.values():
        total += m.weight.numel()
        zeros += int((m.weight == 0).sum())
    return PruneReport(spec, spec.sparsity, removed / total, zeros / total, removed, total, per_layer)


def prune_copy(net: nn.Module, spec: PruneSpec) -> tuple[nn.Module, PruneReport]:
    """A pruned deep copy of the whole ``net`` (``net`` itself is untouched) and what was removed.

    With ``spec.start`` the achieved fraction is over the layers of the pruned part."""
    pruned = copy.deepcopy(net).eval()
    masks = compute_masks(pruned, spec)
    part = _part_layers(pruned, spec)
    return pruned, _apply(masks, part, spec)


def _part_layers(net: nn.Module, spec: PruneSpec) -> dict[str, nn.Module]:
    """The prunable layers of the part ``spec`` may prune (all of them without ``start``)."""
    mods = prunable_modules(net)
    if spec.start is None:
        return dict(mods)
    stages = stages_of(net)
    tail = {id(m) for _, st in stages[start_index(stages, spec.start):] for m in st.modules()}
    return {n: m for n, m in mods if id(m) in tail}


def prune_tail(net: nn.Module, spec: PruneSpec) -> tuple[int, nn.Sequential, PruneReport]:
    """Prune a copy of only the part of ``net`` from ``spec.start`` on.

    Returns the index of the first pruned stage in :func:`prefiqs_core.trunk.stages_of` ``(net)``,
    the pruned copy of the stages from there on (run it on the dense activation at that stage), and
    the report. Memory: one copy of the tail, not of the network.
    """
    stages = stages_of(net)
    k = start_index(stages, spec.start)
    masks = compute_masks(net, spec)
    memo: dict = {}
    tail = copy.deepcopy(nn.Sequential(*(st for _, st in stages[k:])), memo).eval()
    # the copy of each original layer, under the layer's name in the whole network
    part = {n: memo[id(m)] for n, m in _part_layers(net, spec).items()}
    return k, tail, _apply(masks, part, spec)


def weight_delta(dense: nn.Module, pruned: nn.Module) -> dict[str, torch.Tensor]:
    """Δθ = pruned − dense for every parameter (zero where pruning changed nothing)."""
    pd = dict(pruned.named_parameters())
    return {n: (pd[n] - p).detach() for n, p in dense.named_parameters()}
