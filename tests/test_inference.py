"""The execution form the scorer runs (norms folded into the layers before them, channels-last on
the CPU): the same embeddings and drifts as the networks as loaded, on real chips and real weights."""
import copy

import numpy as np
import pytest
import torch
from torch import fx, nn

from prefiqs_core.inference import as_input, execution_copy, fold_norms
from prefiqs_core.pruning import PruneSpec, parse_prune
from prefiqs_core.scoring import PreFIQs
from test_trunk import iresnet, sface, sface_chips  # noqa: F401  (module fixtures)


def _random_stats(net: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


class Skip(nn.Module):
    """conv a → bn a (foldable); conv b, whose output is also added back, → bn b (not foldable);
    relu → bn c (follows no layer); fc → bn d (foldable)."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.bn_c = nn.BatchNorm2d(4)
        self.fc, self.bn_d = nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5)

    def forward(self, x):
        y = self.bn_a(self.conv_a(x))
        z = self.conv_b(y)
        y = self.bn_c(torch.relu(self.bn_b(z) + z))
        return self.bn_d(self.fc(torch.flatten(y, 1)))


def test_a_graph_folds_only_the_norms_that_follow_a_layer_alone():
    torch.manual_seed(0)
    gm = fx.symbolic_trace(_random_stats(Skip()))
    x = torch.randn(7, 3, 6, 6)
    with torch.no_grad():
        want = gm(x)
    assert fold_norms(gm) == 2
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert called == {"conv_a", "conv_b", "bn_b", "bn_c", "fc"}
    with torch.no_grad():
        assert torch.allclose(gm(x), want, atol=1e-5)


def test_a_training_mode_norm_is_not_folded():
    gm = fx.symbolic_trace(_random_stats(Skip()))
    gm.bn_a.train()
    assert fold_norms(gm) == 1  # only fc → bn_d


def test_sequential_children_and_declared_pairs_fold():
    torch.manual_seed(1)
    seq = _random_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4)))
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        want = seq(x)
    assert fold_norms(seq) == 1 and isinstance(seq[1], nn.Identity) and isinstance(seq[3], nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.allclose(seq(x), want, atol=1e-5)


def test_execution_copy_leaves_the_network_alone_and_is_channels_last_on_the_cpu(dlib_backbone):
    before = {k: v.clone() for k, v in dlib_backbone.net.state_dict().items()}
    fast = execution_copy(dlib_backbone.net, "cpu")
    assert all(torch.equal(v, dlib_backbone.net.state_dict()[k]) for k, v in before.items())
    assert fast.blocks[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(fast.blocks[0].affine1, nn.Identity)
    x = torch.zeros(2, 3, 8, 8)
    assert as_input(x, "cpu").is_contiguous(memory_format=torch.channels_last)
    assert as_input(x, torch.device("cuda")) is x  # not measured there: left as it is


def test_real_backbones_fold_every_norm_that_follows_a_layer(dlib_backbone, sface, iresnet):  # noqa: F811
    # dlib: the stem and two per residual block; SFace: every conv's and the embedding layer's batch
    # norm (the one after the last activation follows no layer); iResNet-18: bn2 and bn3 of its 8
    # blocks, the 4 downsampling shortcuts, the stem and the embedding layer's
    assert fold_norms(copy.deepcopy(dlib_backbone.net)) == 1 + 2 * 14
    assert fold_norms(copy.deepcopy(sface.net)) == 28
    assert fold_norms(copy.deepcopy(iresnet.net)) == 16 + 4 + 1 + 1


@pytest.mark.parametrize("prune", [None, "global_l1@0.5", "layerwise_l1@0.1+keepfirst,global_l1@0.5+from:{late}"])
def test_fast_scores_equal_the_networks_as_loaded(dlib_backbone, real_chips, sface, sface_chips, iresnet,  # noqa: F811
                                                  prune):
    late = {"dlib_resnet29": "blocks.10", "sface": "conv_12_dw_conv2d", "iresnet_r18": "layer3.1"}
    for bb, chips in ((dlib_backbone, real_chips), (sface, sface_chips), (iresnet, sface_chips)):
        specs = parse_prune(prune.format(late=late.get(bb.name, "layer3.1"))) if prune else None
        plain, fast = PreFIQs(bb, specs, fast=False), PreFIQs(bb, specs)
        a, b = plain.score(chips), fast.score(chips)
        assert np.allclose(a.dense, b.dense, atol=1e-5), bb.name
        assert np.allclose(a.drift, b.drift, atol=1e-5), bb.name
        assert a.drift.max() > 1e-3  # the pruning moved something: the comparison is not of zeros
        # folding scales channels: what pruning removed stays removed
        for (_, pt), (_, ft) in zip(plain.tails, fast.tails):
            zeros = lambda t: sum(int((m.weight == 0).sum()) for m in t.modules()  # noqa: E731
                                  if isinstance(m, (nn.Conv2d, nn.Linear)))
            assert zeros(ft) >= zeros(pt) > 0


def test_the_unit_of_cost_is_the_fast_dense_forward(dlib_backbone, real_chips):
    s = PreFIQs(dlib_backbone, PruneSpec("global_l1", 0.5, start="blocks.12"))
    x = dlib_backbone.prepare(real_chips[:4])
    with torch.inference_mode():
        assert torch.allclose(s.dense_forward(x), dlib_backbone.net(x), atol=1e-5)


class WrongAxis(nn.Module):
    """A linear layer applied to a 3-D tensor, then a batch norm over axis 1: the norm's 4 channels
    are the conv's, not the linear layer's 4 outputs, so folding them into it would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(64, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return torch.flatten(self.bn(self.fc(torch.flatten(self.conv(x), 2))), 1)


def test_a_network_that_folds_wrongly_is_scored_as_loaded_with_a_warning():
    from prefiqs_core.backbones import from_module
    from prefiqs_core.backbones.base import Preprocess

    torch.manual_seed(2)
    net = fx.symbolic_trace(_random_stats(WrongAxis()))
    assert fold_norms(copy.deepcopy(net)) == 1  # the declarations allow it...
    bb = from_module(net, Preprocess(size=8))
    with pytest.warns(UserWarning, match="scoring with the networks as loaded .*differs"):
        s = PreFIQs(bb, PruneSpec("global_l1", 0.5))
    assert not s.fast  # ...the probe batch shows it is wrong
    assert s.config()["execution"].startswith("as loaded: the dense differs")
    chips = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    want = PreFIQs(bb, PruneSpec("global_l1", 0.5), fast=False).score(chips)
    assert np.array_equal(s.score(chips).drift, want.drift)


def test_the_real_backbones_pass_the_probe(dlib_backbone, sface, iresnet):  # noqa: F811
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(PreFIQs(bb).fast for bb in (dlib_backbone, sface, iresnet))
    assert PreFIQs(dlib_backbone).config()["execution"] == "norms folded, channels-last"
    assert PreFIQs(dlib_backbone, fast=False).config()["execution"] == "as loaded"
