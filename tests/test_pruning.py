"""Pruning: exact sparsity per method, only conv/linear weights touched, clear errors."""
import math

import pytest
import torch
from torch import nn

from prefiqs_core.backbones.base import prunable_modules
from prefiqs_core.pruning import METHODS, PruneSpec, compute_masks, prune_copy, weight_delta


@pytest.mark.parametrize("method", ["global_l1", "layerwise_l1", "random"])
@pytest.mark.parametrize("sparsity", [0.1, 0.37, 0.8])
def test_exact_sparsity_unstructured(dlib_backbone, method, sparsity):
    net = dlib_backbone.net
    pruned, rep = prune_copy(net, PruneSpec(method, sparsity, seed=3))
    total = sum(m.weight.numel() for _, m in prunable_modules(net))
    if method == "layerwise_l1":
        expected = sum(round(sparsity * m.weight.numel()) for _, m in prunable_modules(net))
        for name, m in prunable_modules(net):
            assert rep.per_layer[name] == pytest.approx(round(sparsity * m.weight.numel()) / m.weight.numel())
    else:
        expected = round(sparsity * total)
    assert rep.pruned == expected and rep.total == total
    assert rep.achieved == pytest.approx(expected / total)
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable_modules(pruned))
    assert zeros == expected  # the dlib net has no exact zeros of its own


def test_global_l1_removes_the_smallest_magnitudes(dlib_backbone):
    net = dlib_backbone.net
    masks = compute_masks(net, PruneSpec("global_l1", 0.4))
    w = dict(net.named_modules())
    kept = torch.cat([w[n].weight.abs()[m] for n, m in masks.items()])
    gone = torch.cat([w[n].weight.abs()[~m] for n, m in masks.items()])
    assert gone.max() <= kept.min()


def test_ln_structured_removes_whole_filters(dlib_backbone):
    pruned, rep = prune_copy(dlib_backbone.net, PruneSpec("ln_structured", 0.25))
    for name, m in prunable_modules(pruned):
        rows = m.weight.reshape(m.weight.shape[0], -1)
        dead = (rows == 0).all(dim=1)
        assert int(dead.sum()) == round(0.25 * m.weight.shape[0]), name
        assert ((rows == 0).any(dim=1) == dead).all()  # nothing partially pruned
    assert 0.2 < rep.achieved < 0.3


def test_only_weights_change_and_original_untouched(dlib_backbone):
    net = dlib_backbone.net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pruned, _ = prune_copy(net, PruneSpec("global_l1", 0.5))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"dense network changed: {k}"
    weights = {f"{n}.weight" for n, _ in prunable_modules(net)}
    delta = weight_delta(net, pruned)
    for k, d in delta.items():
        if k not in weights:
            assert torch.count_nonzero(d) == 0, f"{k} (bias/normalisation) was pruned"
    # permanent: no hooks, no _orig/_mask leftovers
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state_dict())
    assert all(not m._forward_pre_hooks for m in pruned.modules())


def test_keep_first_and_last(dlib_backbone):
    net = dlib_backbone.net
    mods = prunable_modules(net)
    _, rep = prune_copy(net, PruneSpec("layerwise_l1", 0.5, keep_first=True, keep_last=True))
    assert mods[0][0] not in rep.per_layer and mods[-1][0] not in rep.per_layer
    pruned, _ = prune_copy(net, PruneSpec("global_l1", 0.5, keep_first=True))
    assert torch.equal(dict(pruned.named_modules())[mods[0][0]].weight, mods[0][1].weight)


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, math.nan, math.inf, "0.3", None, True])
def test_sparsity_must_be_inside_0_1(bad):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        PruneSpec("global_l1", bad)


def test_unknown_method_and_no_prunable_layers():
    with pytest.raises(ValueError, match="unknown pruning method"):
        PruneSpec("magnitude", 0.3)
    with pytest.raises(ValueError, match="no conv or linear"):
        prune_copy(nn.Sequential(nn.ReLU()), PruneSpec())
    assert set(METHODS) == {"global_l1", "layerwise_l1", "random", "ln_structured"}


def test_random_is_seeded(dlib_backbone):
    a = compute_masks(dlib_backbone.net, PruneSpec("random", 0.2, seed=1))
    b = compute_masks(dlib_backbone.net, PruneSpec("random", 0.2, seed=1))
    c = compute_masks(dlib_backbone.net, PruneSpec("random", 0.2, seed=2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
