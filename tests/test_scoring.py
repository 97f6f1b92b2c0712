"""PreFIQs scores on real faces: the properties the method rests on."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from prefiqs_core import assets
from prefiqs_core.evaluation.degrade import degrade
from prefiqs_core.pruning import PruneSpec, prune_copy
from prefiqs_core.scoring import PreFIQs, quality_from_drift
from prefiqs_core.sensitivity import drift_along, jvp_norm, tail_jvp
from prefiqs_core.trunk import run_stages, stages_of, start_index


@pytest.fixture(scope="module")
def scorer(dlib_backbone):
    return PreFIQs(dlib_backbone)  # the backbone's measured default pruning


def test_outputs_shapes_ranges_and_determinism(scorer, real_chips):
    a = scorer.score(real_chips, batch_size=5)
    b = scorer.score(real_chips, batch_size=64)
    n = len(real_chips)
    assert a.dense.shape == a.pruned.shape == a.drift_vector.shape == (n, 128)
    assert np.allclose(np.linalg.norm(a.dense, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(a.pruned, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(a.drift_vector, axis=1), a.drift, atol=1e-5)
    assert ((a.drift >= 0) & (a.drift <= 2)).all()
    assert np.allclose(a.quality, 1 - a.drift / 2)
    assert np.allclose(a.drift, b.drift, atol=1e-5)  # batch size does not change a face's score
    assert np.array_equal(scorer.score(real_chips, 64).drift, b.drift)  # deterministic


def test_drift_is_zero_without_pruning(dlib_backbone, real_chips):
    s = PreFIQs(dlib_backbone, PruneSpec("global_l1", 0.3))
    # a "pruned" tail that removed nothing
    s.tails = [(0, copy.deepcopy(torch.nn.Sequential(*(stage for _, stage in s.stages))))]
    assert np.abs(s.score(real_chips).drift).max() == 0.0
    # and the smallest possible pruning moves nothing measurable
    tiny = PreFIQs(dlib_backbone, PruneSpec("global_l1", 1e-6))
    assert tiny.score(real_chips).drift.max() < 1e-5


def test_drift_grows_with_sparsity(dlib_backbone, real_chips):
    x = dlib_backbone.prepare(real_chips)
    means = []
    for s in (0.05, 0.1, 0.2, 0.3, 0.5):
        means.append(PreFIQs(dlib_backbone, PruneSpec("layerwise_l1", s)).score_tensor(x).drift.mean())
    assert all(b > a for a, b in zip(means, means[1:])), means


@pytest.mark.parametrize("kind,severity", [("blur", 4.0), ("blur", 6.0), ("downscale", 24), ("noise", 60.0)])
def test_degraded_chips_drift_more_than_clean(scorer, real_chips, kind, severity):
    clean = scorer.score(real_chips).drift
    bad = scorer.score(np.stack([degrade(c, kind, severity) for c in real_chips])).drift
    assert bad.mean() > clean.mean()
    assert (bad > clean).mean() >= 0.5


def test_non_faces_score_worse_than_faces(scorer):
    a = np.load(assets.require(assets.extra_dir() / "lfw_subset.npy", "lfw_subset"))
    chips = np.stack([np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize((150, 150), Image.BICUBIC)
                                 .convert("RGB")) for x in a])
    q = scorer.score(chips).quality
    faces, non_faces = q[:100], q[100:]
    assert non_faces.mean() < faces.mean()
    auroc = (faces[:, None] > non_faces[None, :]).mean()
    assert auroc > 0.6


def test_jvp_first_order_claim(dlib_backbone, real_chips):
    """drift / ‖J·Δθ‖ → 1 as sparsity → 0: the paper's first-order argument, checked numerically."""
    x = dlib_backbone.prepare(real_chips[:6])
    errors = []
    for s in (0.3, 0.1, 0.03):
        pruned, _ = prune_copy(dlib_backbone.net, PruneSpec("layerwise_l1", s))
        ratio = (drift_along(dlib_backbone.net, pruned, x) / jvp_norm(dlib_backbone.net, pruned, x)).numpy()
        errors.append(np.abs(ratio - 1).mean())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[-1] < 0.02
    # along the pruning direction itself, scaling Δθ down makes the linearisation exact
    pruned, _ = prune_copy(dlib_backbone.net, PruneSpec("global_l1", 0.5))
    j = jvp_norm(dlib_backbone.net, pruned, x)
    r = (drift_along(dlib_backbone.net, pruned, x, t=0.01) / (0.01 * j)).numpy()
    assert np.abs(r - 1).max() < 0.02


def test_tail_jvp_equals_the_whole_network_jvp(dlib_backbone, real_chips):
    """Starting the JVP at the dense activation where pruning starts changes nothing (Δθ is zero
    before it), for a late split point and for whole-network pruning."""
    net = dlib_backbone.net
    x = dlib_backbone.prepare(real_chips[:4])
    for spec in (PruneSpec("global_l1", 0.7, start="blocks.12"), PruneSpec("layerwise_l1", 0.1)):
        whole = jvp_norm(net, prune_copy(net, spec)[0], x)
        k, f = tail_jvp(net, spec)
        assert k == start_index(stages_of(net), spec.start) and (k > 0) == bool(spec.start)
        with torch.no_grad():
            h = run_stages(stages_of(net), x, 0, k) if k else x
        assert torch.allclose(f(h), whole, rtol=1e-4, atol=1e-6), (spec, f(h), whole)
        assert whole.min() > 0


def test_ensemble_averages_per_copy_drifts(dlib_backbone, real_chips):
    specs = [PruneSpec("random", 0.03, seed=s) for s in range(3)]
    ens = PreFIQs(dlib_backbone, specs)
    singles = [PreFIQs(dlib_backbone, [s]).score(real_chips).drift for s in specs]
    assert ens.forwards_per_face == 4
    assert np.allclose(ens.score(real_chips).drift, np.mean(singles, axis=0), atol=1e-5)


def test_quality_map_is_monotone():
    d = np.linspace(0, 2, 11)
    q = quality_from_drift(d)
    assert q[0] == 1 and q[-1] == 0 and (np.diff(q) < 0).all()


def test_empty_batch_and_device(scorer):
    out = scorer.score(np.zeros((0, 150, 150, 3), np.uint8))
    assert len(out) == 0 and out.dense.shape == (0, 128)
    assert scorer.device == torch.device("cpu")
