"""Networks in the form they run fastest in, for scoring only.

Pruning works on the network as loaded: the masks rank its conv and linear weights as they are.
Once the dense trunk and the pruned tails exist, each is copied and

* every per-channel normalisation that directly follows a conv or linear layer (an inference-mode
  batch norm, dlib's ``affine_``) is folded into that layer's weights and bias. Folding scales each
  output channel, so a pruned (zero) weight stays zero: the folded pruned copy is the pruned copy of
  the folded network, and the drift is the same up to float rounding (tests: 1e-5);
* on the CPU, the copies and their inputs are put in channels-last memory layout, which the CPU's
  convolution kernels run faster than the default layout (measured in ``benchmarks/speed.py``;
  left as it is on other devices, where it has not been measured).

Where a network says which of its normalisations follow which layer: a ``torch.fx.GraphModule``
(ONNX models such as SFace) is read from its graph, an ``nn.Sequential`` from its order; any
other module can list
``norm_pairs = (("conv1", "affine1"), ...)``, attribute names of a layer and of the normalisation
applied to that layer's output and to nothing else (the project's dlib ResNet and iResNet do).
Anything else runs unfolded. :func:`mismatch` compares both forms on a probe batch, and the scorer
keeps the networks as loaded where they differ.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn


def _channel_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scale, shift)`` per channel when ``norm`` computes ``x * scale + shift`` at inference."""
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.training or norm.running_mean is None or norm.running_var is None:
            return None
        scale = torch.rsqrt(norm.running_var.double() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        return scale, shift
    if type(norm).__name__ == "Affine" and hasattr(norm, "weight") and hasattr(norm, "bias"):
        return norm.weight.double(), norm.bias.double()
    return None


@torch.no_grad()
def _fold_into(layer: nn.Module, norm: nn.Module) -> bool:
    """Folds ``norm`` into ``layer`` (in place); False when the pair cannot be folded."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        return False
    affine = _channel_affine(norm)
    if affine is None or affine[0].numel() != layer.weight.shape[0]:
        return False
    scale, shift = affine
    w = layer.weight
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(shift)
    w.copy_((w.double() * scale.view(-1, *([1] * (w.ndim - 1)))).to(w.dtype))
    new_bias = (bias * scale + shift).to(w.dtype)
    if layer.bias is not None:
        layer.bias.copy_(new_bias)
    else:
        layer.bias = nn.Parameter(new_bias)
    return True


def _fold_graph(gm: fx.GraphModule) -> int:
    folded = 0
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        prev = node.args[0]
        # a layer called from two places, or whose output is read elsewhere, keeps its own weights
        if (not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1
                or calls[prev.target] != 1 or calls[node.target] != 1):
            continue
        if _fold_into(gm.get_submodule(prev.target), gm.get_submodule(node.target)):
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
            folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded


def fold_norms(module: nn.Module) -> int:
    """Folds, in place, every normalisation of ``module`` that can be folded into the layer it
    follows; returns how many were."""
    folded = 0
    for m in list(module.modules()):
        if isinstance(m, fx.GraphModule):
            folded += _fold_graph(m)
        pairs = list(getattr(m, "norm_pairs", ()))
        if isinstance(m, nn.Sequential):  # a child that runs right after a layer normalises its output
            names = [n for n, _ in m.named_children()]
            pairs += list(zip(names, names[1:]))
        for layer_name, norm_name in pairs:
            norm = getattr(m, norm_name, None)
            if norm is not None and not isinstance(norm, nn.Identity) and _fold_into(getattr(m, layer_name), norm):
                setattr(m, norm_name, nn.Identity())
                folded += 1
    return folded


def channels_last(device: torch.device) -> bool:
    return torch.device(device).type == "cpu"


def execution_copy(module: nn.Module, device) -> nn.Module:
    """A copy of ``module`` with its normalisations folded (and, on the CPU, in channels-last
    layout), in eval mode; ``module`` itself is left as it is."""
    fast = copy.deepcopy(module).eval()
    fold_norms(fast)
    if channels_last(device):
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def as_input(x: torch.Tensor, device) -> torch.Tensor:
    """An image batch in the layout :func:`execution_copy` runs on ``device``."""
    if x.ndim == 4 and channels_last(device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.inference_mode()
def mismatch(stages, tails, fast_stages, fast_tails, probe: torch.Tensor, device, tol: float = 1e-3) -> str | None:
    """Why the execution form would not compute what the networks as loaded do, on ``probe`` (a
    prepared batch), or ``None``. A fold the network's declarations got wrong (a linear layer on a
    3-D input, say, whose "channels" are not its outputs) shows here, before any face is scored."""
    from .trunk import run_stages, run_with_taps

    def unit(t):
        return F.normalize(t.float().reshape(len(t), -1), dim=1)

    dense, acts = run_with_taps(stages, probe, [k for k, _ in tails])
    want = {"dense": unit(dense)}
    got = {"dense": unit(run_stages(fast_stages, as_input(probe, device)))}
    for i, ((k, tail), (_, fast)) in enumerate(zip(tails, fast_tails)):
        x = probe if k == 0 else acts[k]
        want[f"pruned copy {i + 1}"] = unit(tail(x))
        got[f"pruned copy {i + 1}"] = unit(fast(as_input(x, device)))
    for name, w in want.items():
        gap = float((w - got[name]).abs().max())
        if not gap <= tol:  # NaN too
            return f"the {name} differs by {gap:.2g} once its norms are folded"
    return None
