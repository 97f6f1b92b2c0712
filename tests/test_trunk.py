"""Shared-trunk PreFIQs: pruning from a split point, the dense trunk run once, drift unchanged."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from prefiqs_core.backbones import from_module
from prefiqs_core.backbones.base import Preprocess, prunable_modules
from prefiqs_core.pruning import PruneSpec, compute_masks, prune_copy, prune_tail
from prefiqs_core.scoring import PreFIQs
from prefiqs_core.trunk import run_stages, split_points, stages_of


def whole_network_drift(backbone, spec, chips):
    """The reference: the whole pruned network run on its own, no sharing."""
    pruned, _ = prune_copy(backbone.net, spec)
    x = backbone.prepare(chips)
    with torch.no_grad():
        d = F.normalize(backbone.net(x), dim=1)
        p = F.normalize(pruned(x), dim=1)
    return (d - p).norm(dim=1).numpy()


@pytest.fixture(scope="module")
def sface():
    from prefiqs_core.backbones import load_backbone
    return load_backbone("sface")


@pytest.fixture(scope="module")
def sface_chips(real_chips):
    from prefiqs_core.alignment import convert_chip
    return np.stack([convert_chip(c, "dlib150", "arcface112") for c in real_chips])


@pytest.fixture(scope="module")
def iresnet(tmp_path_factory):
    from prefiqs_core.backbones.iresnet import load_iresnet
    from test_iresnet import perturbed_state, save
    return load_iresnet("r18", save(tmp_path_factory.mktemp("ir"), perturbed_state("r18", seed=5)))


@pytest.mark.parametrize("start", [None, "blocks.10", "head"])
def test_dlib_shared_trunk_drift_equals_whole_pruned_network(dlib_backbone, real_chips, start):
    spec = PruneSpec("global_l1", 0.5, start=start)
    got = PreFIQs(dlib_backbone, spec).score(real_chips[:8]).drift
    want = whole_network_drift(dlib_backbone, spec, real_chips[:8])
    assert np.abs(got - want).max() < 1e-5
    assert want.max() > 1e-4  # the pruning did change the embedding


@pytest.mark.parametrize("start", ["conv_6_dw_conv2d", "conv_12_conv2d"])
def test_sface_shared_trunk_drift_equals_whole_pruned_network(sface, sface_chips, start):
    spec = PruneSpec("global_l1", 0.4, start=start)
    got = PreFIQs(sface, spec).score(sface_chips).drift
    want = whole_network_drift(sface, spec, sface_chips)
    assert np.abs(got - want).max() < 1e-5 and want.max() > 1e-3


def test_iresnet_shared_trunk_drift_equals_whole_pruned_network(iresnet, real_chips):
    from prefiqs_core.alignment import convert_chip
    chips = np.stack([convert_chip(c, "dlib150", "arcface112") for c in real_chips[:6]])
    assert "layer3.1" in split_points(iresnet.net) and "layer1.0" in split_points(iresnet.net)
    for spec in (PruneSpec("layerwise_l1", 0.3, start="layer3.1"),
                 PruneSpec("global_l1", 0.5, start="layer4.0", keep_last=True)):
        got = PreFIQs(iresnet, spec).score(chips).drift
        want = whole_network_drift(iresnet, spec, chips)
        assert np.abs(got - want).max() < 1e-5 and want.max() > 1e-4


def test_ensemble_with_different_starts_shares_one_dense_pass(dlib_backbone, real_chips):
    specs = [PruneSpec("global_l1", 0.5, start="blocks.10"), PruneSpec("layerwise_l1", 0.2)]
    got = PreFIQs(dlib_backbone, specs).score(real_chips[:4]).drift
    want = np.mean([whole_network_drift(dlib_backbone, s, real_chips[:4]) for s in specs], axis=0)
    assert np.abs(got - want).max() < 1e-5


def test_stages_reproduce_the_network(dlib_backbone, sface, iresnet):
    for bb in (dlib_backbone, sface, iresnet):
        x = torch.randn(2, 3, bb.preprocess.size, bb.preprocess.size)
        with torch.no_grad():
            assert torch.equal(bb.net(x), run_stages(stages_of(bb.net), x)), bb.name


def test_dlib_split_points_are_its_blocks_and_head(dlib_backbone):
    assert split_points(dlib_backbone.net) == [f"blocks.{i}" for i in range(14)] + ["head"]


def test_sface_split_points_are_found_in_the_graph(sface):
    points = split_points(sface.net)
    # every split point starts at a conv or linear layer of the ONNX graph, in graph order
    layers = dict(prunable_modules(sface.net))
    assert len(points) >= 20 and all(p in layers for p in points)
    order = list(layers)
    assert [order.index(p) for p in points] == sorted(order.index(p) for p in points)


def test_graph_with_a_skip_connection_is_not_cut_inside_it():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, padding=1)
            self.b = nn.Conv2d(3, 3, 3, padding=1)
            self.c = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = self.a(x)
            y = self.c(torch.relu(self.b(h))) + h  # b and c sit inside a skip over h
            return self.fc(y.mean(dim=(2, 3)))

    gm = fx.symbolic_trace(Block())
    assert split_points(gm) == ["b", "fc"]  # "c" is not: h is still live there
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(gm(x), run_stages(stages_of(gm), x))


def test_masks_with_start_rank_only_the_pruned_part(dlib_backbone):
    spec = PruneSpec("global_l1", 0.5, start="blocks.10")
    masks = compute_masks(dlib_backbone.net, spec)
    tail = [f"blocks.{i}.conv{j}" for i in range(10, 14) for j in (1, 2)] + ["fc"]
    assert sorted(masks) == sorted(tail)
    mods = dict(dlib_backbone.net.named_modules())
    w = torch.cat([mods[n].weight.detach().abs().reshape(-1) for n in tail])
    k = round(0.5 * w.numel())
    cut = torch.sort(w).values[k - 1]
    removed = sum(int((~masks[n]).sum()) for n in tail)
    assert removed == k
    for n in tail:  # everything removed is at most the k-th smallest magnitude, everything kept at least
        a = mods[n].weight.detach().abs()
        assert (a[~masks[n]] <= cut).all() and (a[masks[n]] >= cut).all()


def test_pruned_tail_is_a_copy_of_the_tail_only(dlib_backbone):
    before = {k: v.clone() for k, v in dlib_backbone.net.state_dict().items()}
    k, tail, report = prune_tail(dlib_backbone.net, PruneSpec("global_l1", 0.5, start="blocks.12"))
    assert k == 13 and len(tail) == 3  # blocks.12, blocks.13, head
    n_tail = sum(p.numel() for p in tail.parameters())
    assert n_tail < 0.7 * sum(p.numel() for p in dlib_backbone.net.parameters())
    assert report.achieved == pytest.approx(0.5, abs=1e-3)
    for name, v in dlib_backbone.net.state_dict().items():
        assert torch.equal(v, before[name]), name


def test_cost_in_dense_forwards(dlib_backbone):
    full = PreFIQs(dlib_backbone, PruneSpec("global_l1", 0.5))
    late = PreFIQs(dlib_backbone, PruneSpec("global_l1", 0.5, start="blocks.10"))
    assert full.forwards_per_face == pytest.approx(2.0)
    assert 1.1 < late.forwards_per_face < 1.3
    assert late.config()["prune"] == "global_l1@0.5+from:blocks.10"


@pytest.mark.parametrize("spec,msg", [
    (PruneSpec("global_l1", 0.5, start="blocks.99"), "unknown split point 'blocks.99'"),
    (PruneSpec("global_l1", 0.5, start="stem"), "unknown split point 'stem'"),
    (PruneSpec("global_l1", 0.5, start="head", keep_last=True), "leaves no layer to prune"),
])
def test_bad_split_points_give_clear_errors(dlib_backbone, spec, msg):
    with pytest.raises(ValueError, match=msg) as e:
        PreFIQs(dlib_backbone, spec)
    if "unknown" in msg:
        assert "blocks.10" in str(e.value)  # the message lists the real split points


def test_a_plain_module_has_no_split_points_but_can_be_pruned_whole():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(8))
    net(torch.zeros(1, 3, 8, 8))

    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    bb = from_module(Opaque(), Preprocess(size=8), name="opaque")
    assert split_points(bb.net) == []
    with pytest.raises(ValueError, match="single stage"):
        PreFIQs(bb, PruneSpec("global_l1", 0.5, start="net.2"))
    chips = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    assert PreFIQs(bb, PruneSpec("global_l1", 0.5)).score(chips).drift.shape == (3,)
    seq = from_module(net, Preprocess(size=8), name="seq")
    assert split_points(seq.net) == ["1", "2"]
