"""prefiqs_core.backbones.iresnet: arcface_torch key layout, sizes, loading, MagFace variant.

Checkpoints are built here with the real key layout (perturbed weights and BatchNorm statistics,
saved as plain dicts of tensors) because no iResNet weights ship offline. r100 work is kept to one
112x112 forward on the CPU.
"""
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prefiqs_core.backbones.base import Backbone
from prefiqs_core.backbones.iresnet import ARCH_LAYERS, build_iresnet, load_iresnet, parse_arch
from prefiqs_core.checkpoints import CheckpointError

BLOCKS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def arcface_torch_keys(blocks):
    """The state-dict keys of insightface arcface_torch's iresnet, written out from its naming scheme."""
    keys = ["conv1.weight", *(f"bn1.{s}" for s in BN), "prelu.weight"]
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{stage}.{b}."
            keys += [*(f"{p}bn1.{s}" for s in BN), f"{p}conv1.weight", *(f"{p}bn2.{s}" for s in BN),
                     f"{p}prelu.weight", f"{p}conv2.weight", *(f"{p}bn3.{s}" for s in BN)]
            if b == 0:
                keys += [f"{p}downsample.0.weight", *(f"{p}downsample.1.{s}" for s in BN)]
    keys += [*(f"bn2.{s}" for s in BN), "fc.weight", "fc.bias", *(f"features.{s}" for s in BN)]
    return keys


def analytic_param_count(blocks, emb=512):
    """Parameters (incl. the frozen features.weight) counted by hand from the layer shapes."""
    n = 3 * 64 * 9 + 2 * 64 + 64  # conv1, bn1, prelu
    cin = 64
    for cout, count in zip(WIDTHS, blocks):
        for b in range(count):
            c_in = cin if b == 0 else cout
            n += 2 * c_in + 9 * c_in * cout + 2 * cout + cout + 9 * cout * cout + 2 * cout
            if b == 0:
                n += c_in * cout + 2 * cout  # downsample conv1x1 + BN
        cin = cout
    return n + 2 * 512 + (512 * 7 * 7 * emb + emb) + 2 * emb  # bn2, fc, features


def perturbed_state(arch, variant="arcface", seed=0, num_features=512):
    """A state dict with the real layout and non-trivial values (weights, BN stats, PReLU slopes)."""
    net = build_iresnet(arch, variant=variant, num_features=num_features)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        v = v.clone()
        if k.endswith("num_batches_tracked"):
            v.fill_(1000)
        elif k.endswith("running_var"):
            v.uniform_(0.5, 1.5, generator=g)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            v.normal_(0.0, 0.1, generator=g)
        elif k == "features.weight" and variant == "arcface":
            pass  # arcface_torch keeps it at 1.0
        elif k.endswith("prelu.weight"):
            v.uniform_(0.1, 1.0, generator=g)
        elif v.ndim == 1:  # BatchNorm scales
            v.uniform_(0.8, 1.2, generator=g)
        else:  # conv / fc weights
            v.mul_(1.0 + 0.1 * torch.randn(v.shape, generator=g))
        sd[k] = v
    return sd


def save(tmp_path, obj, name="backbone.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def batch(n=2, seed=0):
    return torch.randn(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- architecture names and layout

def test_parse_arch_accepts_common_spellings():
    assert [parse_arch(a) for a in ("r50", "R100", "iresnet18", "resnet34", " iresnet100 ")] == \
        ["r50", "r100", "r18", "r34", "r100"]
    with pytest.raises(ValueError, match="r18, r34, r50, r100"):
        parse_arch("r101")
    assert set(ARCH_LAYERS) == set(BLOCKS) and all(ARCH_LAYERS[a] == BLOCKS[a] for a in BLOCKS)


@pytest.mark.parametrize("variant", ["arcface", "magface"])
def test_r100_keys_equal_arcface_torch_backbone_pth(variant):
    sd = build_iresnet("r100", variant=variant).state_dict()
    assert list(sd) == arcface_torch_keys(BLOCKS["r100"])
    assert len(sd) == 925
    # spot checks against names seen in real backbone.pth files
    shapes = {
        "conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1), "layer1.0.downsample.1.running_var": (64,),
        "layer3.13.conv2.weight": (256, 256, 3, 3), "layer3.29.bn3.running_mean": (256,),
        "layer4.2.prelu.weight": (512,), "bn2.weight": (512,),
        "fc.weight": (512, 25088), "fc.bias": (512,), "features.running_mean": (512,),
        "features.weight": (512,), "features.num_batches_tracked": (),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layer3.30.conv1.weight" not in sd and "layer1.1.downsample.0.weight" not in sd


@pytest.mark.parametrize("arch", ["r18", "r34", "r50"])
def test_smaller_depths_have_the_arcface_torch_keys(arch):
    assert list(build_iresnet(arch).state_dict()) == arcface_torch_keys(BLOCKS[arch])


# Known counts (computed from the layer shapes; arcface_torch r50 ~43.6M, r100 ~65.2M).
PARAMS = {"r18": 24_025_600, "r34": 34_139_328, "r50": 43_590_848, "r100": 65_156_160}


@pytest.mark.parametrize("arch", list(PARAMS))
def test_parameter_counts(arch):
    n = sum(p.numel() for p in build_iresnet(arch).parameters())
    assert n == PARAMS[arch] == analytic_param_count(BLOCKS[arch])
    if arch == "r50":
        assert n == pytest.approx(43.6e6, rel=2e-3)
    if arch == "r100":
        assert n == pytest.approx(65.2e6, rel=2e-3)


def test_variant_hyperparameters():
    arc, mag = build_iresnet("r18", variant="arcface"), build_iresnet("r18", variant="magface")
    arc_bns = [m for m in arc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    mag_bns = [m for m in mag.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert {m.eps for m in arc_bns} == {1e-5} and {m.eps for m in mag_bns} == {2e-5}
    assert not arc.features.weight.requires_grad  # frozen at 1.0 in arcface_torch
    assert torch.equal(arc.features.weight, torch.ones(512))
    assert mag.features.weight.requires_grad  # learned in MagFace
    assert isinstance(mag.dropout, nn.Dropout2d) and mag.dropout.p == 0.4


# ---------------------------------------------------------------- an independent functional forward

def reference_forward(sd, blocks, x, eps):
    """arcface_torch's forward written with torch.nn.functional on the raw state dict."""
    def bn(p, t):
        return F.batch_norm(t, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"],
                            sd[p + "bias"], training=False, eps=eps)

    x = F.prelu(bn("bn1.", F.conv2d(x, sd["conv1.weight"], padding=1)), sd["prelu.weight"])
    for stage, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{stage}.{b}."
            stride = 2 if b == 0 else 1
            y = F.conv2d(bn(p + "bn1.", x), sd[p + "conv1.weight"], padding=1)
            y = F.prelu(bn(p + "bn2.", y), sd[p + "prelu.weight"])
            y = bn(p + "bn3.", F.conv2d(y, sd[p + "conv2.weight"], stride=stride, padding=1))
            if b == 0:
                x = bn(p + "downsample.1.", F.conv2d(x, sd[p + "downsample.0.weight"], stride=2))
            x = y + x
    x = bn("bn2.", x).flatten(1)
    return bn("features.", F.linear(x, sd["fc.weight"], sd["fc.bias"]))


@pytest.mark.parametrize("variant,eps", [("arcface", 1e-5), ("magface", 2e-5)])
def test_forward_matches_functional_reference(tmp_path, variant, eps):
    sd = perturbed_state("r18", variant, seed=1)
    bb = load_iresnet("r18", save(tmp_path, sd), variant=variant)
    x = batch()
    with torch.no_grad():
        got = bb.net(x)
        want = reference_forward(sd, BLOCKS["r18"], x, eps)
    assert got.shape == (2, 512) and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- loading

def test_arcface_load_round_trip_and_provenance(tmp_path):
    sd = perturbed_state("r18", seed=2)
    path = save(tmp_path, sd)
    a = load_iresnet("iresnet18", path)
    b = load_iresnet("r18", str(path))  # an independent second load
    assert isinstance(a, Backbone) and a.name == "iresnet18" and a.embedding_dim == 512
    assert not a.net.training
    assert a.source == str(path)
    assert a.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert a.extra["arch"] == "r18" and a.extra["variant"] == "arcface" and not a.extra["random_init"]
    for k, v in sd.items():
        assert torch.equal(a.net.state_dict()[k], v), k
    x = batch(seed=3)
    with torch.no_grad():
        ya, yb, ya2 = a.net(x), b.net(x), a.net(x)
    assert torch.equal(ya, yb) and torch.equal(ya, ya2)  # identical loads, deterministic forward


def test_arcface_preprocess_is_rgb_plus_minus_one():
    bb = load_iresnet("r18", allow_random=True)
    p = bb.preprocess
    assert (p.size, p.channels, p.mean, p.std, p.template) == \
        (112, "RGB", (127.5,) * 3, (127.5,) * 3, "arcface112")
    chip = np.zeros((1, 112, 112, 3), np.uint8)
    chip[..., 0] = 255  # pure red
    x = bb.prepare(chip)
    assert x[0, 0].eq(1.0).all() and x[0, 1].eq(-1.0).all() and x[0, 2].eq(-1.0).all()


@pytest.mark.parametrize("layout", ["ddp", "dataparallel"])
def test_magface_checkpoint_layouts_load(tmp_path, layout):
    sd = perturbed_state("r18", "magface", seed=4)
    if layout == "ddp":  # trainer_dist.py: features.module.* + parallel_fc margin layer
        state = {f"features.module.{k}": v for k, v in sd.items()}
        state["parallel_fc.weight"] = torch.randn(512, 50)
    else:  # trainer.py with DataParallel: module.features.* + module.fc margin layer
        state = {f"module.features.{k}": v for k, v in sd.items()}
        state["module.fc.weight"] = torch.randn(512, 50)
    obj = {"epoch": 25, "arch": "iresnet18", "state_dict": state}
    bb = load_iresnet("r18", save(tmp_path, obj), variant="magface")
    assert bb.name == "magface_iresnet18"
    for k, v in sd.items():
        assert torch.equal(bb.net.state_dict()[k], v), k
    # MagFace's features BN has a learned scale, which must have been loaded, not reset to 1
    assert not torch.equal(bb.net.features.weight, torch.ones(512))


def test_magface_preprocess_is_bgr_zero_to_one():
    bb = load_iresnet("r18", variant="magface", allow_random=True)
    p = bb.preprocess
    assert (p.size, p.channels, p.mean, p.std) == (112, "BGR", (0.0,) * 3, (255.0,) * 3)
    chip = np.zeros((1, 112, 112, 3), np.uint8)
    chip[..., 0] = 255  # pure red: last channel in BGR order
    x = bb.prepare(chip)
    assert x[0, 0].eq(0).all() and x[0, 1].eq(0).all() and x[0, 2].eq(1.0).all()


def test_checkpoint_is_required_unless_random_allowed():
    with pytest.raises(CheckpointError, match="needs a checkpoint"):
        load_iresnet("r50")
    bb = load_iresnet("r18", allow_random=True)
    assert bb.source == "random-init" and bb.extra["random_init"] and not bb.net.training


def test_unknown_variant_and_arch():
    with pytest.raises(ValueError, match="variant"):
        load_iresnet("r18", variant="cosface", allow_random=True)
    with pytest.raises(ValueError, match="architecture"):
        load_iresnet("r200", allow_random=True)


def test_r50_checkpoint_into_r100_names_missing_keys(tmp_path):
    path = save(tmp_path, build_iresnet("r50").state_dict(), "r50.pth")
    with pytest.raises(CheckpointError) as err:
        load_iresnet("r100", path)
    msg = str(err.value)
    assert "iresnet100" in msg and str(path) in msg
    assert "missing keys" in msg and "layer2.4.bn1.weight" in msg
    assert "unexpected" not in msg  # every r50 key exists in r100 with the same shape


def test_wrong_embedding_size_names_shapes(tmp_path):
    path = save(tmp_path, perturbed_state("r18", num_features=128))
    with pytest.raises(CheckpointError) as err:
        load_iresnet("r18", path)
    msg = str(err.value)
    assert "shape mismatches" in msg
    assert "fc.weight: expected shape (512, 25088), got (128, 25088)" in msg
    load_iresnet("r18", path, num_features=128)  # fine when asked for


def test_r100_loads_and_runs_one_forward(tmp_path):
    sd = perturbed_state("r100", seed=5)
    bb = load_iresnet("r100", save(tmp_path, {"state_dict": sd}))  # also through a container
    assert bb.name == "iresnet100"
    loaded = bb.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    with torch.no_grad():
        y = bb.net(batch(1, seed=6))
    assert y.shape == (1, 512) and y.dtype == torch.float32 and torch.isfinite(y).all()


# ---------------------------------------------------------------- torch.func compatibility

def test_functional_call_and_jvp(tmp_path):
    bb = load_iresnet("r18", save(tmp_path, perturbed_state("r18", seed=7)))
    net = bb.net.double()  # float64 so the derivative checks are tight
    x, v = batch(1, seed=8).double(), batch(1, seed=9).double()
    u = torch.randn(1, 512, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    params = {k: t.detach() for k, t in net.named_parameters()}
    buffers = dict(net.named_buffers())
    with torch.no_grad():
        y = net(x)

    def f(inp):
        return torch.func.functional_call(net, (params, buffers), (inp,))

    y_f, jv = torch.func.jvp(f, (x,), (v,))
    torch.testing.assert_close(y_f, y)
    # Forward and reverse mode agree exactly: <u, J v> == <J^T u, v>.
    _, pullback = torch.func.vjp(f, x)
    (jtu,) = pullback(u)
    torch.testing.assert_close((u * jv).sum(), (jtu * v).sum(), rtol=1e-9, atol=1e-9)
    # And J v is the directional derivative. The net is piecewise linear (PReLU), so a finite
    # difference is only approximate where it crosses a kink: compare in norm, loosely.
    h = 1e-6
    with torch.no_grad():
        fd = (net(x + h * v) - net(x - h * v)) / (2 * h)
    assert (fd - jv).norm() / jv.norm() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda(tmp_path):
    bb = load_iresnet("r18", save(tmp_path, perturbed_state("r18", seed=10)))
    x = batch(2, seed=11)
    with torch.no_grad():
        cpu = bb.net(x)
        gpu = bb.to("cuda").net(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
