"""A network as a chain of stages, so that pruning can start late and the dense trunk runs once.

If only the layers from stage ``k`` on are pruned, the dense and the pruned network compute the same
activation up to stage ``k``: that trunk runs once per batch and only the tails run twice. A split
point is a place where exactly one tensor flows from the earlier part to the later one.

Where the stages come from:

* a network with a ``stages()`` method (the project's dlib ResNet-29 and iResNets) names them itself;
* a ``torch.fx.GraphModule`` (ONNX models such as SFace) is cut automatically at every node after
  which exactly one activation is still needed;
* an ``nn.Sequential`` is split at its children;
* any other module is one stage: pruning then always covers the whole network, nothing is shared.
"""
from __future__ import annotations

import torch
from torch import fx, nn

from .backbones.base import prunable_modules


class Stage(nn.Module):
    """A piece of a network: ``fn(self, x)`` over submodules that are shared with it, not copied."""

    def __init__(self, fn, **modules: nn.Module):
        super().__init__()
        self.fn = fn
        for name, m in modules.items():
            self.add_module(name, m)

    def forward(self, x):
        return self.fn(self, x)


def stages_of(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network as ``[(name, stage), ...]``: running the stages in order equals ``net(x)``."""
    if hasattr(net, "stages"):
        return list(net.stages())
    if isinstance(net, fx.GraphModule):
        return graph_stages(net)
    if isinstance(net, nn.Sequential) and len(net) > 1:
        return [(name, m) for name, m in net.named_children()]
    return [("network", net)]


def split_points(net: nn.Module) -> list[str]:
    """Names a pruning may start from (``PruneSpec.start``), earliest first; the first stage is the
    whole network, so it is not listed."""
    return [name for name, _ in stages_of(net)[1:]]


def start_index(stages: list[tuple[str, nn.Module]], start: str | None) -> int:
    """Index of the stage named ``start`` (``None``: 0, the whole network), with a clear error."""
    if start is None:
        return 0
    names = [n for n, _ in stages]
    if start not in names[1:]:
        listed = ", ".join(names[1:]) if len(names) > 1 else "none: this network has a single stage"
        raise ValueError(f"unknown split point {start!r}; this network's split points are: {listed}")
    return names.index(start)


def run_stages(stages, x, lo: int = 0, hi: int | None = None):
    for _, stage in stages[lo:hi]:
        x = stage(x)
    return x


def run_with_taps(stages, x, taps):
    """The whole chain's output and ``{k: the activation entering stage k}`` for each ``k`` in
    ``taps`` (where pruned tails start), in one pass."""
    acts, at = {}, 0
    for k in sorted(set(taps)):
        x = run_stages(stages, x, at, k)
        acts[k], at = x, k
    return run_stages(stages, x, at), acts


@torch.no_grad()
def stage_macs(stages, example: torch.Tensor) -> list[int]:
    """Multiply-accumulates of the conv and linear layers in each stage, for one ``example`` input.

    The cost of a tail is its share of these; batch norms, activations and additions are left out
    (a few per cent of a CNN's arithmetic), so the shares are slightly conservative for late tails.
    """
    counts, current = [], [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Linear):
            current[0] += out.numel() * m.in_features
        else:
            k = m.weight[0].numel()  # in_channels / groups x kernel size
            current[0] += out.numel() * k

    handles = []
    for _, stage in stages:
        for _, m in prunable_modules(stage):
            handles.append(m.register_forward_hook(hook))
    try:
        x = example
        for _, stage in stages:
            current[0] = 0
            x = stage(x)
            counts.append(current[0])
    finally:
        for h in handles:
            h.remove()
    return counts


# --------------------------------------------------------------------------------------------
# fx graphs: cut where one activation is live
# --------------------------------------------------------------------------------------------

def _single_live_nodes(graph: fx.Graph) -> list[fx.Node]:
    """Nodes after which the only value still needed later is the node's own output.

    ``get_attr`` nodes (weights and constants) are not activations: a later segment re-reads them.
    """
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    last_use = {}
    for n in nodes:
        if n.op == "get_attr":
            continue
        last_use[n] = max((pos[u] for u in n.users), default=pos[n])
    cuts = []
    live: set = set()
    for i, n in enumerate(nodes):
        if n.op in ("placeholder", "get_attr", "output"):
            if n.op == "placeholder":
                live.add(n)
            continue
        live.add(n)
        live = {m for m in live if last_use[m] > i}
        if live == {n} and i < len(nodes) - 2:
            cuts.append(n)
    return cuts


def _segment(gm: fx.GraphModule, body: list[fx.Node], source: fx.Node | None, result: fx.Node) -> fx.GraphModule:
    """A GraphModule computing ``result`` from ``source``'s value (or the original input)."""
    g = fx.Graph()
    env: dict = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder" and source is None:
            env[n] = g.placeholder(n.name)
    if source is not None:
        env[source] = g.placeholder(source.name)

    def arg(a):
        if a not in env:  # a constant read by this segment
            env[a] = g.node_copy(a, arg)
        return env[a]

    for n in body:
        env[n] = g.node_copy(n, arg)
    g.output(env[result])
    # GraphModule(root=gm) takes the referenced submodules from gm by reference, so a segment and the
    # original network share their parameters.
    return fx.GraphModule(gm, g)


def graph_stages(gm: fx.GraphModule) -> list[tuple[str, nn.Module]]:
    """Cut ``gm`` before each conv/linear layer that only one activation reaches; each segment is
    named after its first node (the layer it starts with, after the first)."""
    nodes = list(gm.graph.nodes)
    outputs = [n for n in nodes if n.op == "output"]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(outputs) != 1 or len(placeholders) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return [("network", gm)]
    cuts = set(_single_live_nodes(gm.graph))
    compute = [n for n in nodes if n.op in ("call_module", "call_function", "call_method")]
    layers = {id(m) for _, m in prunable_modules(gm)}
    starts_layer = [n.op == "call_module" and id(gm.get_submodule(n.target)) in layers for n in compute]
    # cut only where the next stage starts with a conv or linear layer: every split point is then
    # named after the first layer it prunes, and a norm or activation is never a stage of its own
    bounds = {c for c, nxt in zip(compute, starts_layer[1:]) if c in cuts and nxt}
    stages, source, body = [], None, []
    for n in compute:
        body.append(n)
        if n in bounds:
            stages.append((body[0].name, _segment(gm, body, source, n)))
            source, body = n, []
    if body:
        stages.append((body[0].name, _segment(gm, body, source, outputs[0].args[0])))
    return stages
