"""Pairs from identity labels, cosine similarity and templates, checked against hand counts."""
import math

import numpy as np
import pytest

from prefiqs_core.evaluation.pairs import (build_templates, cosine_similarities, count_impostor_pairs,
                                genuine_pairs, impostor_pairs, make_pairs, pair_similarities)

# Faces 0..5; face 3 is unlabeled. Identities: a = {0, 2}, b = {1, 4}, c = {5}.
LABELS = ["a", "b", "a", None, "b", "c"]
# Labeled faces {0,1,2,4,5}: C(5,2) = 10 pairs, 2 of them genuine → 8 impostors.
ALL_IMPOSTORS = [(0, 1), (0, 4), (0, 5), (1, 2), (1, 5), (2, 4), (2, 5), (4, 5)]


def as_set(p):
    return {tuple(r) for r in np.asarray(p).tolist()}


def test_genuine_pairs_by_hand():
    np.testing.assert_array_equal(genuine_pairs(LABELS), [[0, 2], [1, 4]])
    # Three faces of one identity → C(3,2) = 3 pairs; NaN is unlabeled like None.
    np.testing.assert_array_equal(genuine_pairs([7, 7, float("nan"), 7]), [[0, 1], [0, 3], [1, 3]])
    assert genuine_pairs(["x", "y"]).shape == (0, 2)


def test_all_impostors_when_few_exist():
    assert count_impostor_pairs(LABELS) == 8
    np.testing.assert_array_equal(impostor_pairs(LABELS), ALL_IMPOSTORS)
    np.testing.assert_array_equal(impostor_pairs(LABELS, max_impostors=8), ALL_IMPOSTORS)
    # 1 and "1" are different identities.
    np.testing.assert_array_equal(impostor_pairs([1, "1"]), [[0, 1]])


def test_sampled_impostors_are_capped_distinct_and_seeded():
    few = impostor_pairs(LABELS, max_impostors=3, seed=5)
    assert len(few) == 3 and as_set(few) <= set(ALL_IMPOSTORS) and len(as_set(few)) == 3
    np.testing.assert_array_equal(few, impostor_pairs(LABELS, max_impostors=3, seed=5))
    assert impostor_pairs(LABELS, max_impostors=0).shape == (0, 2)

    labels = [i % 10 for i in range(200)]  # 10 identities × 20 faces
    assert count_impostor_pairs(labels) == 19900 - 10 * 190  # 18000
    p = impostor_pairs(labels, max_impostors=5000, seed=1)
    assert p.shape == (5000, 2)
    assert len(as_set(p)) == 5000  # no duplicates
    assert np.all(p[:, 0] < p[:, 1])  # no self pairs, ordered
    assert np.all(np.asarray(labels)[p[:, 0]] != np.asarray(labels)[p[:, 1]])
    np.testing.assert_array_equal(p, impostor_pairs(labels, max_impostors=5000, seed=1))
    assert as_set(p) != as_set(impostor_pairs(labels, max_impostors=5000, seed=2))
    # Roughly uniform: every face takes part in about 2·5000/200 = 50 pairs.
    counts = np.bincount(p.ravel(), minlength=200)
    assert counts.min() > 20 and counts.max() < 90


def test_bad_max_impostors():
    with pytest.raises(ValueError, match="max_impostors"):
        impostor_pairs(LABELS, max_impostors=-1)
    with pytest.raises(ValueError, match="max_impostors"):
        impostor_pairs(LABELS, max_impostors=2.5)


def test_make_pairs():
    p = make_pairs(LABELS)
    assert len(p) == 10 and p.n_mated == 2 and p.n_nonmated == 8 and p.n_impostors_total == 8
    np.testing.assert_array_equal(p.a[:2], [0, 1])
    np.testing.assert_array_equal(p.b[:2], [2, 4])
    assert p.notes == []
    s = make_pairs(LABELS, max_impostors=2)
    assert s.n_nonmated == 2 and "sampled 2 of 8" in s.notes[0]
    assert any("no genuine" in n for n in make_pairs(["a", "b"]).notes)
    assert any("no impostor" in n for n in make_pairs(["a", "a"]).notes)


def test_cosine_similarities_by_hand():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[0.0, 2.0], [1.0, 0.0], [-3.0, 0.0]])
    np.testing.assert_allclose(cosine_similarities(a, b), [0.0, 1 / math.sqrt(2), -1.0])
    with pytest.raises(ValueError, match="all-zero"):
        cosine_similarities(a, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shape mismatch"):
        cosine_similarities(a, b[:2])
    with pytest.raises(ValueError, match="NaN"):
        cosine_similarities(a, np.full((3, 2), np.nan))


def test_pair_similarities():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    p = make_pairs(["x", "y", "x"])  # genuine (0,2); impostors (0,1), (1,2)
    np.testing.assert_allclose(pair_similarities(emb, p), [1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)])


def test_templates_by_hand():
    emb = np.array([[1.0, 0.0], [0.0, 5.0], [3.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    labels = ["a", "a", "a", "b", "b"]
    tids = [1, 1, 2, 1, None]  # face 4 has no template id: skipped
    q = [0.9, 0.4, 0.7, 0.8, 0.1]
    t = build_templates(emb, labels, tids, q)
    assert t.keys == [("a", 1), ("a", 2), ("b", 1)]
    # ("a", 1): mean of unit rows [1,0] and [0,1] → [.5,.5] → normalised [1/√2, 1/√2].
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(t.embeddings, [[r, r], [1, 0], [0, -1]])
    np.testing.assert_allclose(t.quality, [0.4, 0.7, 0.8])  # min over members
    assert t.labels == ["a", "a", "b"]
    np.testing.assert_array_equal(t.members[0], [0, 1])
    p = make_pairs(t.labels)
    assert p.n_mated == 1 and p.n_nonmated == 2
    with pytest.raises(ValueError, match="length mismatch"):
        build_templates(emb, labels[:4], tids)
