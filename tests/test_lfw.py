"""The LFW development benchmark: its fast EDC equals the project's edc, pairs are complete and
people-disjoint, and (where the LFW folder is present, as in CI) the benchmark runs end to end."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prefiqs_core.evaluation import edc, fmr_threshold, pauc
from prefiqs_core.evaluation.lfw import (PairSet, impostor_qualities, impostor_similarities, people_bootstrap,
                              people_halves, read_people, threshold_at, weighted_pauc)

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "data" / "lfw_dev"


def unit_rows(rng, n, d=16):
    e = rng.normal(size=(n, d))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_weighted_pauc_equals_the_projects_fixed_edc():
    rng = np.random.default_rng(0)
    gen, imp = rng.normal(0.6, 0.2, 400), rng.normal(0.0, 0.2, 20000)
    q = rng.uniform(size=400) + 0.3 * gen  # continuous, no ties, related to the similarity
    thr = threshold_at(imp, 1e-3)
    assert thr == fmr_threshold(imp, 1e-3)[0]
    curve = edc(np.r_[gen, imp], np.r_[np.ones(400, bool), np.zeros(20000, bool)],
                np.r_[q, np.ones(20000)], 1e-3, "fixed")
    for lim in (0.2, 0.3):
        area, e0 = weighted_pauc(q, (gen < thr).astype(float), np.ones(400), lim)
        assert area[0] == pytest.approx(pauc(curve, lim), abs=1e-12)
        assert e0[0] == pytest.approx(curve.fnmr[0])


def test_bootstrap_weights_equal_repeating_the_pairs():
    rng = np.random.default_rng(1)
    q, err = rng.uniform(size=50), (rng.uniform(size=50) < 0.3).astype(float)
    w = rng.integers(0, 3, 50).astype(float)
    rep = np.repeat(np.arange(50), w.astype(int))
    a, e0 = weighted_pauc(q, err, w)
    # the project's edc on the repeated pairs (repeats are ties, discarded together, as a weight is)
    gen = np.where(err[rep] > 0, -1.0, 1.0)
    imp = np.random.default_rng(2).uniform(-0.5, 0.5, 5000)  # threshold near 0.5: errors are the -1s
    curve = edc(np.r_[gen, imp], np.r_[np.ones(len(gen), bool), np.zeros(5000, bool)],
                np.r_[q[rep], np.ones(5000)], 1e-3, "fixed")
    assert a[0] == pytest.approx(pauc(curve, 0.2), abs=1e-12) and e0[0] == pytest.approx(curve.fnmr[0])
    weights = people_bootstrap(np.arange(50) % 10, 10, reps=7, seed=0)
    assert weights.shape == (7, 50) and (weights.sum(1) == weights.sum(1)[0]).all()


def test_weighted_pauc_in_chunks_of_replicates_equals_all_at_once(monkeypatch):
    """Replicates are computed a few rows at a time (bounded memory); any chunk size gives the same
    areas and FNMR@0 as one pass over every replicate."""
    import prefiqs_core.evaluation.lfw as lfw_mod

    rng = np.random.default_rng(3)
    q, err = rng.uniform(size=300), (rng.uniform(size=300) < 0.2).astype(float)
    w = people_bootstrap(rng.integers(0, 30, 300), 30, reps=11, seed=1)
    monkeypatch.setattr(lfw_mod, "WEIGHTED_PAUC_ELEMENTS", 10 ** 9)
    whole = weighted_pauc(q, err, w)
    for elements in (1, 300, 900, 3000):  # one replicate, one, three and ten per chunk
        monkeypatch.setattr(lfw_mod, "WEIGHTED_PAUC_ELEMENTS", elements)
        a, e0 = weighted_pauc(q, err, w)
        assert a.shape == e0.shape == (11,)
        # equal up to the order of float additions (summation blocks differ with the array's shape)
        np.testing.assert_allclose(a, whole[0], rtol=1e-12)
        np.testing.assert_allclose(e0, whole[1], rtol=1e-12)
        # each replicate on its own gives its row too
        np.testing.assert_allclose(weighted_pauc(q, err, w[4])[0], whole[0][4:5], rtol=1e-12)


def test_pairs_are_every_genuine_and_impostor_pair_of_the_half():
    rng = np.random.default_rng(2)
    labels = [f"p{i}" for i in rng.integers(0, 9, 60)]
    emb = unit_rows(rng, 60)
    half_a, half_b = people_halves(labels, seed=3)
    assert not ({labels[i] for i in np.flatnonzero(half_a)} & {labels[i] for i in np.flatnonzero(half_b)})
    assert (half_a | half_b).all()
    ps = PairSet.build(emb, labels, half_a)
    idx = np.flatnonzero(half_a)
    brute_gen, brute_imp = [], []
    for x in range(len(idx)):
        for y in range(x + 1, len(idx)):
            s = emb[idx[x]] @ emb[idx[y]]
            (brute_gen if labels[idx[x]] == labels[idx[y]] else brute_imp).append(s)
    assert sorted(ps.genuine) == pytest.approx(sorted(brute_gen))
    assert np.asarray(ps.impostor) == pytest.approx(np.asarray(brute_imp, np.float32), abs=1e-6)
    q = rng.uniform(size=60)
    qi = impostor_qualities(q, ps, block=7)  # blocks of any size give the same order
    brute_q = [min(q[idx[x]], q[idx[y]]) for x in range(len(idx)) for y in range(x + 1, len(idx))
               if labels[idx[x]] != labels[idx[y]]]
    assert qi == pytest.approx(np.asarray(brute_q, np.float32))
    assert impostor_similarities(emb[idx], ps.codes, block=5) == pytest.approx(ps.impostor, abs=1e-6)


def test_euclidean_comparator_scores_minus_the_distance_of_the_rows_as_given():
    rng = np.random.default_rng(5)
    labels = [f"p{i}" for i in rng.integers(0, 7, 40)]
    raw = rng.normal(size=(40, 8)) * rng.uniform(0.2, 2.0, size=(40, 1))  # rows of different lengths
    ps = PairSet.build(raw, labels, None, "euclidean")
    brute_gen, brute_imp = [], []
    for x in range(40):
        for y in range(x + 1, 40):
            s = -np.linalg.norm(raw[x] - raw[y])
            (brute_gen if labels[x] == labels[y] else brute_imp).append(s)
    assert sorted(ps.genuine) == pytest.approx(sorted(brute_gen))
    assert np.asarray(ps.impostor) == pytest.approx(np.asarray(brute_imp, np.float32), abs=1e-5)
    assert impostor_similarities(raw, ps.codes, block=3, comparator="euclidean") == pytest.approx(ps.impostor, abs=1e-5)
    # not the cosine ranking: the rows' lengths count
    cos = PairSet.build(raw / np.linalg.norm(raw, axis=1, keepdims=True), labels)
    assert not np.array_equal(np.argsort(ps.impostor), np.argsort(cos.impostor))
    with pytest.raises(ValueError, match="comparator is one of cosine, euclidean, not 'l1'"):
        PairSet.build(raw, labels, None, "l1")


def test_read_people_caps_each_person_with_a_seeded_sample(tmp_path):
    for person, n in (("Ann", 5), ("Bob", 1), ("Cid", 3)):
        (tmp_path / person).mkdir()
        for i in range(n):
            (tmp_path / person / f"{person}_{i:04d}.jpg").write_bytes(b"x")
    paths, labels = read_people(tmp_path, max_per_person=2, seed=0)
    assert labels == ["Ann", "Ann", "Cid", "Cid"]  # Bob has one image: no genuine pair, left out
    assert read_people(tmp_path, max_per_person=2, seed=0)[0] == paths
    with pytest.raises(FileNotFoundError):
        read_people(tmp_path / "nope")


@pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW development folder not at {LFW} (CI has it)")
def test_lfw_benchmark_end_to_end_on_a_few_people(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lfw.py"), str(LFW), "--max-people", "40",
                        "--max-per-person", "4", "--reps", "50", "--out", str(tmp_path),
                        "--prune", "global_l1@0.5+from:blocks.10", "--prune", "global_l1@0.7+from:blocks.12",
                        "--baselines", "random,sharpness,detector_score,jvp"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    table = (tmp_path / "lfw_dlib_resnet29.md").read_text()
    for row in ("global_l1@0.5+from:blocks.10", "random", "sharpness", "detector_score", "jvp",
                "combined (PreFIQs + detector score + distinctiveness)"):
        assert f"| {row} |" in table
    # the product's combined value only beside the setting its shipped tables are for (the default)
    assert table.count("| combined (") == 1
    assert "half A: 20 people" in p.stderr and "no detected face" in p.stderr
    assert (tmp_path / "lfw_edc_dlib_resnet29.png").stat().st_size > 10_000


@pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW development folder not at {LFW} (CI has it)")
def test_whole_set_table_on_a_few_people(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "whole_set.py"), str(LFW), "--max-people", "40",
                        "--max-per-person", "4", "--reps", "50", "--cache", str(tmp_path)],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [x for x in p.stdout.splitlines() if x.startswith("| ")]
    assert lines[0].startswith("| quality | all: nAUC20") and "| B: nAUC20" in lines[0]
    names = [x.split(" | ")[0][2:] for x in lines[1:]]
    assert names == ["global_l1@0.7+from:blocks.12 (the default)", "global_l1@0.5", "layerwise_l1@0.1",
                     "ln_structured@0.05+keepfirst+keeplast", "random", "sharpness", "embedding norm",
                     "detector score"]
    assert "all people 40," in p.stdout
