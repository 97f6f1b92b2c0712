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
