"""benchmarks/flip_drift.py: each quality built from the photo's and the mirror's drift and the flip
distance ranks faces as its name says (higher = better), on small hand-made cases."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from flip_drift import qualities  # noqa: E402
from lfw import unit_rows  # noqa: E402


def _d(photo, mirror, averaged, flip):
    return {k: np.asarray(v, float) for k, v in
            dict(photo=photo, mirror=mirror, averaged=averaged, flip=flip).items()}


def test_every_quality_follows_all_signals_when_they_agree():
    # face 0 is the most stable on every distance, face 2 the least
    d = _d([0.05, 0.2, 0.6], [0.04, 0.3, 0.5], [0.03, 0.2, 0.4], [0.1, 0.3, 0.9])
    for name, q in qualities(d).items():
        assert q[0] > q[1] > q[2], name


def test_each_quality_reads_the_distance_its_name_says():
    # the photo's drift says 0 < 1 < 2, the mirror's the reverse, the flip distance 1 < 0 < 2
    d = _d([0.1, 0.2, 0.3], [0.5, 0.4, 0.05], [0.2, 0.2, 0.2], [0.3, 0.1, 0.5])
    q = qualities(d)
    order = lambda name: list(np.argsort(-q[name], kind="stable"))  # noqa: E731  best first
    assert order("PreFIQs on the photo (the product's score)") == [0, 1, 2]
    assert order("PreFIQs on the mirror") == [2, 1, 0]
    assert order("dense flip distance alone") == [1, 0, 2]
    # larger drift: 0.5, 0.4, 0.3 -> 2 best; mean drift: 0.3, 0.3, 0.175 -> 2 best, 0 and 1 tied
    assert order("larger drift of photo and mirror") == [2, 1, 0]
    assert q["mean drift of photo and mirror"][2] > q["mean drift of photo and mirror"][0]
    assert np.isclose(q["mean drift of photo and mirror"][0], q["mean drift of photo and mirror"][1])
    # per face sums: mean + flip = 0.6, 0.4, 0.675; mean + 2 flip = 0.9, 0.5, 1.175
    assert order("per face: mean drift + flip distance") == [1, 0, 2]
    assert np.allclose(q["per face: mean drift + 2 × flip distance"], [-0.9, -0.5, -1.175])


def test_unit_rows():
    u = unit_rows(np.array([[3.0, 4.0], [0.0, 2.0]]))
    assert np.allclose(u, [[0.6, 0.8], [0.0, 1.0]])


def test_feature_flip_distance_mirrors_the_activation_at_the_split():
    import torch
    from types import SimpleNamespace
    from flip_drift import feature_flip_distance

    torch.manual_seed(0)
    h = torch.randn(5, 3, 4, 6)  # the activation entering stage 1 (stage 0 made it)
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())  # mirror-invariant
    left = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 6, 8))  # not
    for tail, invariant in ((pool, True), (left, False)):
        stages = [("stem", torch.nn.Identity()), ("tail", tail)]
        with torch.no_grad():
            dense = torch.nn.functional.normalize(tail(h), dim=1).numpy()
        bench = SimpleNamespace(stages=stages, batch=2, dense=dense, activations=lambda k: h)
        d = feature_flip_distance(bench, "tail")
        assert d.shape == (5,)
        assert np.allclose(d, 0, atol=1e-6) if invariant else np.all(d > 1e-3)


def test_mirror_drift_is_cached_apart_from_the_photo_drift(tmp_path, monkeypatch):
    """The mirrored bench shares the photo bench's cache folder and backbone: its drift must get its own
    file, or a re-run would read the photo's drift back as the mirror's."""
    from types import SimpleNamespace
    from flip_drift import mirrored
    from lfw import LFWBench
    from prefiqs_core.pruning import parse_prune

    bench = LFWBench.__new__(LFWBench)
    bench.faces = SimpleNamespace(cache=tmp_path)
    bench.bb = SimpleNamespace(name="net", source_sha256="0" * 64)
    bench.chips = np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3)
    bench._acts = {}
    bench._dense_embeddings = lambda path: np.eye(3)
    # the drift of a face is read from its chip, so the photo and its mirror differ
    monkeypatch.setattr(LFWBench, "drift", lambda self, spec: self.chips[:, 0, 0, 0].astype(float))
    mirror = mirrored(bench)
    specs = parse_prune("global_l1@0.5")
    photo_d, mirror_d = bench.mean_drift(specs), mirror.mean_drift(specs)
    assert not np.allclose(photo_d, mirror_d)
    assert len(list(tmp_path.glob("drift_*.npy"))) == 2
    # read back from disk, each is its own
    assert np.allclose(bench.mean_drift(specs), photo_d) and np.allclose(mirror.mean_drift(specs), mirror_d)
