"""benchmarks/combine.py: each combination of the drift and a partner signal (the embedding norm,
the detector score) ranks faces as its name says (higher = better), checked on small hand-made cases."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from combine import combinations  # noqa: E402


def test_with_a_constant_norm_every_combination_orders_faces_as_prefiqs():
    rng = np.random.default_rng(0)
    drift = rng.uniform(0.01, 0.5, 50)
    order = np.argsort(-(1 - drift / 2))
    with np.errstate(invalid="ignore"):  # the z-score of a constant is 0/0, left out below
        qualities = combinations(drift, np.full(50, 3.0))
    for name, q in qualities.items():
        # the norm alone tells nothing here; a constant's z-score is undefined; the lower of two ranks
        # caps every face at the norm's (tied) rank
        if name in ("embedding norm", "lower rank") or name.startswith("z sum"):
            continue
        assert np.array_equal(np.argsort(-q, kind="stable"), order), name


def test_the_combinations_follow_both_signals():
    # face 0: small drift, large norm (best on both); face 2: large drift, small norm (worst on both);
    # face 1: between on both
    drift, norm = np.array([0.05, 0.2, 0.6]), np.array([30.0, 20.0, 5.0])
    for name, q in combinations(drift, norm).items():
        assert q[0] > q[1] > q[2], name


def test_lower_rank_is_the_worse_of_the_two_ranks():
    drift, norm = np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 4.0, 3.0, 2.0])
    q = combinations(drift, norm)["lower rank"]
    # ranks of quality (1 - drift/2): 4, 3, 2, 1 (/4); of norm: 1, 4, 3, 2 (/4)
    assert np.allclose(q, np.array([1, 3, 2, 1]) / 4)


def test_a_partner_that_is_not_positive_gets_only_the_forms_that_apply():
    # detector scores: a missed face (the fixed box) sits far below every detection
    drift, det = np.array([0.05, 0.2, 0.6, 0.3]), np.array([2.5, 1.0, -1e3, 0.2])
    qualities = combinations(drift, det, "detector")
    assert list(qualities) == ["PreFIQs (the default)", "detector score", "rank sum", "rank sum, PreFIQs ×2",
                               "rank sum, detector ×2", "lower rank", "z sum"]
    for name, q in qualities.items():
        assert np.isfinite(q).all() and np.argmin(q) == 2, name  # the missed face with the largest drift
    # a positive partner gets the ratio, the product and the log z-sum too
    assert {"norm / drift", "norm × quality", "z sum of logs"} <= set(combinations(drift, np.abs(det) + 1))


def test_distinctiveness_is_the_angle_from_the_reference_faces_mean_direction():
    from combine import distinctiveness

    # mean direction (1, 0, 0); 34 copies: the reference the product fits needs 100 faces
    ref = np.tile([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.6, -0.8, 0.0]], (34, 1))
    faces = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.6, 0.0, 0.8]])
    assert np.allclose(distinctiveness(faces, ref), [0.0, 1.0, 2.0, 0.4])
    # the reference's mean is normalised: scaling the reference changes nothing
    assert np.allclose(distinctiveness(faces, 5 * ref), distinctiveness(faces, ref))


def test_three_signal_rows_add_the_detector_score():
    from combine import with_detector

    # face 0 is best on all three signals, face 3 worst on all three; faces 1 and 2 trade places
    q, det, other = np.array([0.9, 0.8, 0.7, 0.1]), np.array([3.0, 1.0, 2.0, -5.0]), np.array([0.9, 0.5, 0.4, 0.0])
    rows = with_detector(q, other, det)
    for name, v in rows.items():
        if name.startswith("closeness"):
            assert np.array_equal(v, -other)
            continue
        assert np.argmax(v) == 0 and np.argmin(v) == 3, name
    # ranks /4: q 4,3,2,1; det 4,2,3,1; other 4,3,2,1
    assert np.allclose(rows["rank sum: PreFIQs + detector + partner"], np.array([12, 8, 7, 3]) / 4)
    assert np.allclose(rows["rank sum: PreFIQs + detector ×2 + partner"], np.array([16, 10, 10, 4]) / 4)
    assert np.allclose(rows["lower of the three ranks"], np.array([4, 2, 2, 1]) / 4)
