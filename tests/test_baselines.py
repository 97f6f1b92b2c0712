"""Quality baselines: exact values on tiny hand-built networks, then behaviour on real face chips."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from prefiqs_core.backbones import from_module
from prefiqs_core.backbones.base import Preprocess
from prefiqs_core.evaluation.baselines import (SERFIQ, EmbeddingNorm, FaceSize, GraFIQs, JVPSensitivity,
                                    PreFIQsMethod, QualityMethod, RandomQuality, Sharpness,
                                    available_methods, make_method, serfiq_score)
from prefiqs_core.evaluation.degrade import blur
from prefiqs_core.pruning import PruneSpec

# ---- Tiny linear "network": 2x2 RGB chip → flatten (12) → W → 2-D embedding ----------------
# W[0,0] = 1, W[1,1] = 1, W[1,0] = 0.01, all else 0. With R(0,0) = 100 and R(0,1) = 74 (x[0], x[1]),
# e = (100, 74 + 1) = (100, 75), ‖e‖ = 125, n = (0.8, 0.6).
# Global L1 pruning at sparsity 22/24 removes the 22 smallest |weights|: the 21 zeros and the 0.01,
# so exactly W[1,0] changes and Δe = (0, −1).
PRUNE = PruneSpec("global_l1", 22 / 24)


def tiny_linear():
    lin = nn.Linear(12, 2, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[0, 0], lin.weight[1, 1], lin.weight[1, 0] = 1.0, 1.0, 0.01
    return from_module(nn.Sequential(nn.Flatten(), lin), Preprocess(size=2), name="tiny")


def tiny_chip():
    c = np.zeros((1, 2, 2, 3), np.uint8)
    c[0, 0, 0, 0], c[0, 0, 1, 0] = 100, 74
    return c


def test_embedding_norm_by_hand():
    np.testing.assert_allclose(EmbeddingNorm(tiny_linear()).score(tiny_chip()), [125.0], rtol=1e-6)


def test_jvp_by_hand():
    # J·Δ = (I − nnᵀ)Δe / ‖e‖ = ((0, −1) − (0.8, 0.6)(−0.6)) / 125 = (0.48, −0.64) / 125 → norm 0.0064.
    q = JVPSensitivity(tiny_linear(), PRUNE).score(tiny_chip())
    np.testing.assert_allclose(q, [1 - 0.0064 / 2], atol=1e-7)


def test_prefiqs_by_hand():
    # Pruned e' = (100, 74): drift = ‖(0.8, 0.6) − (100, 74)/‖(100, 74)‖‖.
    p = np.array([100.0, 74.0]) / math.hypot(100, 74)
    drift = np.linalg.norm(np.array([0.8, 0.6]) - p)
    m = PreFIQsMethod(tiny_linear(), PRUNE)
    q = m.score(tiny_chip())
    np.testing.assert_allclose(q, [1 - drift / 2], atol=1e-6)
    assert abs(drift - 0.0064) < 2e-4  # first order: agrees with the JVP
    assert m.forwards_per_face == 2


def test_serfiq_score_by_hand():
    # Unit vectors (1,0), (0,1), (−1,0): distances √2, 2, √2 → mean (2√2 + 2)/3.
    e = np.array([[[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]]])
    np.testing.assert_allclose(serfiq_score(e), [2 / (1 + math.exp((2 * math.sqrt(2) + 2) / 3))])
    np.testing.assert_allclose(serfiq_score(np.ones((2, 5, 3))), [1.0, 1.0])  # all passes agree
    with pytest.raises(ValueError, match="T >= 2"):
        serfiq_score(np.ones((2, 1, 3)))


def test_serfiq_head_only_passes_match_explicit_dropout():
    bb = tiny_linear()
    m = SERFIQ(bb, T=6, p=0.5, seed=3)
    keep = m.masks().numpy()
    assert keep.shape == (6, 12) and 0 < keep.mean() < 1
    x = bb.prepare(tiny_chip()).reshape(1, 12).numpy()[0]
    w = bb.net[1].weight.detach().numpy()
    expected = (w @ ((keep * x) / 0.5).T).T  # (T, 2): one embedding per mask
    np.testing.assert_allclose(m.score(tiny_chip()), serfiq_score(expected[None]), rtol=1e-6)
    # The hook is removed: the backbone behaves normally afterwards.
    with torch.no_grad():
        np.testing.assert_allclose(bb.net(bb.prepare(tiny_chip())).numpy(), [[100, 75]], rtol=1e-6)


def test_serfiq_needs_a_linear_head():
    conv_only = from_module(nn.Sequential(nn.Conv2d(3, 4, 2), nn.Flatten()), Preprocess(size=2))
    with pytest.raises(ValueError, match="nn.Linear"):
        SERFIQ(conv_only)


# ---- GraFIQs on a hand-sized conv + BN network -----------------------------------------------
# 1x1 conv with weights w = (1, 2, 0) → z = R + 2G per pixel, then BatchNorm2d(1) with running
# mean 0, var 1. Chip R = [[0, 1], [2, 3]], G = B = 0: z = (0, 1, 2, 3), μ = 1.5, σ² = 1.25.
# L = μ² + (σ² − 1)²; ∂L/∂z_k = 2μ/4 + 2(σ²−1)·2(z_k − μ)/4 = 0.75 + 0.25(z_k − 1.5)
#   = (0.375, 0.625, 0.875, 1.125), Σ = 3. ∂L/∂x_{c,k} = w_c ∂L/∂z_k → Σ|grad| = (1 + 2 + 0)·3 = 9.


def tiny_bn():
    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1, 1))
    net = nn.Sequential(conv, nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(4, 2))
    return from_module(net, Preprocess(size=2), name="tiny_bn")


def test_grafiqs_by_hand():
    c = np.zeros((2, 2, 2, 3), np.uint8)
    c[0, :, :, 0] = [[0, 1], [2, 3]]
    c[1] = c[0]
    np.testing.assert_allclose(GraFIQs(tiny_bn()).score(c), [-9.0, -9.0], rtol=1e-6)


def test_grafiqs_reads_any_batch_norm_of_a_feature_map_and_leaves_flat_ones_out():
    # the ONNX converter's rank-free BatchNorm (SFace's) in place of BatchNorm2d, and a batch norm
    # of the flat output, which has no (H, W) to average over: the same 9 as by hand
    from prefiqs_core.backbones.onnx_convert import BatchNorm

    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1, 1))
    flat_bn = nn.BatchNorm1d(2).eval()
    with torch.no_grad():
        flat_bn.running_mean.fill_(5.0)  # would change the loss if it were counted
    net = nn.Sequential(conv, BatchNorm(1), nn.Flatten(), nn.Linear(4, 2), flat_bn)
    c = np.zeros((2, 2, 2, 3), np.uint8)
    c[0, :, :, 0] = [[0, 1], [2, 3]]
    c[1] = c[0]
    np.testing.assert_allclose(GraFIQs(from_module(net, Preprocess(size=2), name="onnx_bn")).score(c),
                               [-9.0, -9.0], rtol=1e-6)
    only_flat = nn.Sequential(nn.Flatten(), nn.Linear(12, 2), nn.BatchNorm1d(2).eval())
    with pytest.raises(ValueError, match="sees a feature map"):
        GraFIQs(from_module(only_flat, Preprocess(size=2), name="flat")).score(c)


def test_grafiqs_runs_on_sface(real_chips):
    from PIL import Image
    from prefiqs_core.backbones import load_backbone

    bb = load_backbone("sface")
    assert "grafiqs" in available_methods(bb, ["grafiqs"])
    chips = np.stack([np.asarray(Image.fromarray(c).resize((112, 112), Image.BILINEAR)) for c in real_chips[:3]])
    m = GraFIQs(bb, batch_size=2)
    q = m.score(chips)
    assert q.shape == (3,) and np.isfinite(q).all() and (q < 0).all()
    np.testing.assert_allclose(m.score(chips[1:]), q[1:], rtol=1e-4)  # per-face statistics
    assert len({round(float(v), 8) for v in q}) == 3  # each face its own value


def test_grafiqs_refuses_dlib(dlib_backbone):
    with pytest.raises(ValueError, match="BatchNorm2d.*'dlib_resnet29'"):
        GraFIQs(dlib_backbone)
    assert "grafiqs" not in available_methods(dlib_backbone, ["grafiqs", "random"])


def test_bn_network_methods_on_random_iresnet18(real_chips):
    from PIL import Image
    from prefiqs_core.backbones.iresnet import load_iresnet

    torch.manual_seed(0)
    bb = load_iresnet("r18", None, allow_random=True)
    chips = np.stack([np.asarray(Image.fromarray(c).resize((112, 112), Image.BILINEAR))
                      for c in real_chips[:3]])
    m = GraFIQs(bb, batch_size=2)
    q = m.score(chips)
    assert q.shape == (3,) and np.isfinite(q).all() and (q < 0).all()
    # Per-face statistics: a face's value does not depend on its batch-mates.
    np.testing.assert_allclose(m.score(chips[2:]), q[2:], rtol=1e-4)
    # SER-FIQ's head repetition also passes through iResNet's per-sample features BatchNorm1d.
    s = SERFIQ(bb, T=4, batch_size=2).score(chips)
    assert s.shape == (3,) and np.isfinite(s).all() and ((0 < s) & (s <= 1)).all()


# ---- No-network methods ----------------------------------------------------------------------


def test_sharpness_by_hand():
    # Grey 3x3 image, centre 10: Laplacian (reflect-101 border) = −40 centre, 20 on the four edges,
    # 0 at corners → mean 40/9, variance 3200/9 − (40/9)² = 27200/81.
    c = np.zeros((2, 3, 3, 3), np.uint8)
    c[0, 1, 1] = 10
    np.testing.assert_allclose(Sharpness().score(c), [27200 / 81, 0.0])


def test_face_size_and_random():
    chips = np.zeros((3, 4, 4, 3), np.uint8)
    chips[1] += 1
    chips[2] += 2
    np.testing.assert_array_equal(FaceSize().score(chips, sizes=[50, 120.5, 80]), [50, 120.5, 80])
    with pytest.raises(ValueError, match="sizes="):
        FaceSize().score(chips)
    with pytest.raises(ValueError, match="2 sizes for 3 chips"):
        FaceSize().score(chips, sizes=[1, 2])
    r = RandomQuality(7).score(chips)
    assert r.shape == (3,) and ((0 <= r) & (r < 1)).all() and len(set(r)) == 3
    np.testing.assert_array_equal(r, RandomQuality(7).score(chips))  # reproducible
    np.testing.assert_array_equal(RandomQuality(7).score(chips[::-1]), r[::-1])  # order-free
    assert not np.array_equal(r, RandomQuality(8).score(chips))


def test_interface_errors():
    with pytest.raises(ValueError, match="uint8"):
        Sharpness().score(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        Sharpness().score(np.zeros((4, 4, 3), np.uint8))
    assert Sharpness().score(np.zeros((0, 4, 4, 3), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match="unknown quality method"):
        make_method("faceqnet")
    with pytest.raises(ValueError, match="needs a backbone"):
        make_method("serfiq")


# ---- Real chips with the default dlib network ------------------------------------------------


@pytest.fixture(scope="module")
def clean_and_blurred(real_chips):
    chips = real_chips[:10]
    return chips, np.stack([blur(c, 4.0) for c in chips])


@pytest.fixture(scope="module")
def dlib_methods(dlib_backbone):
    # T=20 keeps SER-FIQ quick; FaceSize needs sizes and GraFIQs refuses dlib (tested above).
    return available_methods(dlib_backbone, ["prefiqs", "embedding_norm", "serfiq", "jvp", "sharpness",
                                             "random", "grafiqs"], serfiq={"T": 20})


def test_every_method_on_real_chips(dlib_methods, clean_and_blurred):
    clean, _ = clean_and_blurred
    for name, m in dlib_methods.items():
        assert isinstance(m, QualityMethod)
        q = m.score(clean)
        assert q.shape == (len(clean),) and q.dtype == np.float64, name
        assert np.isfinite(q).all(), name
        assert m.forwards_per_face >= 0 and m.config()["name"] == m.name
    # Scores do not depend on the batching.
    for name in ("serfiq", "jvp"):
        m = dlib_methods[name]
        whole = m.score(clean)
        m.batch_size = 3
        np.testing.assert_allclose(m.score(clean), whole, rtol=1e-5, atol=1e-6, err_msg=name)


def test_blur_lowers_quality(dlib_methods, clean_and_blurred):
    clean, blurred = clean_and_blurred
    s = dlib_methods["sharpness"]
    assert (s.score(blurred) < s.score(clean)).all()  # every chip
    for name in ("prefiqs", "jvp"):  # on average
        m = dlib_methods[name]
        assert m.score(blurred).mean() < m.score(clean).mean(), name


def test_detector_score_is_the_callers_score_with_misses_lowest():
    chips = np.zeros((3, 4, 4, 3), np.uint8)
    m = make_method("detector_score")
    np.testing.assert_array_equal(m.score(chips, det_scores=[0.4, np.nan, 2.1]), [0.4, -1e3, 2.1])
    # the face size is another method's keyword; each reads its own
    np.testing.assert_array_equal(m.score(chips, sizes=[9, 9, 9], det_scores=[1, 2, 3]), [1, 2, 3])
    np.testing.assert_array_equal(FaceSize().score(chips, sizes=[9, 8, 7], det_scores=[1, 2, 3]), [9, 8, 7])
    with pytest.raises(ValueError, match="det_scores="):
        m.score(chips, sizes=[1, 2, 3])
    with pytest.raises(ValueError, match="2 detector scores for 3 chips"):
        m.score(chips, det_scores=[1, 2])
    with pytest.raises(ValueError, match="finite"):
        m.score(chips, det_scores=[1, np.inf, 2])
    assert m.forwards_per_face == 0 and m.config() == {"name": "DetectorScore", "missed": -1e3}
