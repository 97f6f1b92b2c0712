"""EDC / pAUC on small cases worked out by hand (the arithmetic is in the comments)."""
import math

import numpy as np
import pytest

from prefiqs_core.evaluation import (DEFAULT_GRID, edc, fmr_threshold, fnmr_at, pair_quality_from,
                                     pauc, plot_edc, theoretical_best_area)

# ---- Case A, fixed convention ----------------------------------------------------------------
# 10 impostors 0.1..0.9 and 0.95; target FMR 0.1 → k = 1 false match allowed → threshold just above
# the 2nd-highest impostor, 0.9. A mated pair matches iff its similarity is > 0.9.
IMP_A = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
# Mated (similarity, quality): 0.5 error, 0.95 ok, 0.9 error (the tie rule), 0.99 ok, 0.3 error.
GEN_A = [(0.5, 0.1), (0.95, 0.2), (0.9, 0.2), (0.99, 0.3), (0.3, 0.4)]


def case_a():
    sims = [s for s, _ in GEN_A] + IMP_A
    mated = [True] * len(GEN_A) + [False] * len(IMP_A)
    # Impostor qualities are deliberately the lowest: the fixed curve must ignore them.
    qual = [q for _, q in GEN_A] + [0.0] * len(IMP_A)
    return sims, mated, qual


def test_fixed_curve_by_hand():
    c = edc(*case_a(), target_fmr=0.1, threshold="fixed")
    assert c.convention == "fixed"
    assert c.threshold == np.nextafter(0.9, np.inf)
    assert c.fmr[0] == pytest.approx(0.1)  # only 0.95 is a false match
    # Sorted by quality: [0.1: err] [0.2: ok, err] [0.3: ok] [0.4: err]. Ties (0.2) go together:
    # discard counts 0, 1, 3, 4 and the closing 5; errors left 3, 2, 1, 1, 0.
    np.testing.assert_array_equal(c.discard_counts, [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(c.remaining_mated, [5, 4, 2, 1, 0])
    np.testing.assert_array_equal(c.false_non_matches, [3, 2, 1, 1, 0])
    np.testing.assert_allclose(c.discard_fractions, [0, 0.2, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(c.fnmr, [0.6, 0.5, 0.5, 1.0, 0.0])
    assert c.n_mated == 5 and c.n_nonmated == 10
    assert np.all(c.thresholds == c.threshold)


def test_fixed_pauc_is_a_step_integral():
    c = edc(*case_a(), target_fmr=0.1)
    assert pauc(c, 0.2) == pytest.approx(0.6 * 0.2)  # 0.12
    assert pauc(c, 0.3) == pytest.approx(0.6 * 0.2 + 0.5 * 0.1)  # 0.17
    assert pauc(c, 0.7) == pytest.approx(0.12 + 0.5 * 0.4 + 0.5 * 0.1)  # 0.37
    # Theoretical best for e0 = 0.6 up to 0.3: 0.6²/2 − 0.3²/2 = 0.135.
    assert theoretical_best_area(0.6, 0.3) == pytest.approx(0.135)
    assert pauc(c, 0.3, subtract_best=True) == pytest.approx(0.17 - 0.135)
    # Up to 1.0 the best line reaches zero inside the range: area e0²/2 = 0.18.
    assert theoretical_best_area(0.6, 1.0) == pytest.approx(0.18)
    assert pauc(c, 1.0) == pytest.approx(0.12 + 0.5 * 0.4 + 0.5 * 0.2 + 1.0 * 0.2)


def test_fnmr_at_reads_the_step():
    c = edc(*case_a(), target_fmr=0.1)
    assert fnmr_at(c, 0.0) == pytest.approx(0.6)
    assert fnmr_at(c, 0.19) == pytest.approx(0.6)
    assert fnmr_at(c, 0.5) == pytest.approx(0.5)
    assert fnmr_at(c, 0.8) == pytest.approx(1.0)
    assert fnmr_at(c, 1.0) == 0.0


# ---- Case B, per-level convention ------------------------------------------------------------
# (quality, mated, similarity), qualities distinct and already ascending.
CASE_B = [(0.0, True, 0.1), (0.1, False, 0.8), (0.2, True, 0.6), (0.3, False, 0.5),
          (0.4, True, 0.9), (0.5, False, 0.3), (0.6, True, 0.4), (0.7, False, 0.2),
          (0.8, True, 0.7), (0.9, False, 0.1)]


def case_b(shuffle=False):
    rows = list(CASE_B)
    if shuffle:  # the input order must not matter
        rows = [rows[i] for i in np.random.default_rng(3).permutation(len(rows))]
    q, m, s = zip(*rows)
    return list(s), list(m), list(q)


@pytest.mark.parametrize("shuffle", [False, True])
def test_per_level_curve_by_hand(shuffle):
    c = edc(*case_b(shuffle), target_fmr=0.2, threshold="per_level", discard_fractions=[0, 0.2, 0.4, 0.6])
    # u=0:   imp {.8,.5,.3,.2,.1}, k=floor(0.2*5)=1 → thr > .5 (FMR .2); gen {.1,.6,.9,.4,.7}: 2 errors / 5
    # u=0.2: drop 2; imp {.5,.3,.2,.1}, k=0 → thr > .5 (FMR 0); gen {.6,.9,.4,.7}: 1 / 4
    # u=0.4: drop 4; imp {.3,.2,.1} → thr > .3; gen {.9,.4,.7}: 0 / 3
    # u=0.6: drop 6; imp {.2,.1} → thr > .2; gen {.4,.7}: 0 / 2
    np.testing.assert_allclose(c.fnmr, [0.4, 0.25, 0.0, 0.0])
    np.testing.assert_allclose(c.thresholds, np.nextafter([0.5, 0.5, 0.3, 0.2], np.inf))
    np.testing.assert_allclose(c.fmr, [0.2, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(c.discard_counts, [0, 2, 4, 6])
    np.testing.assert_array_equal(c.remaining_mated, [5, 4, 3, 2])
    np.testing.assert_array_equal(c.remaining_nonmated, [5, 4, 3, 2])
    np.testing.assert_array_equal(c.false_non_matches, [2, 1, 0, 0])


def test_per_level_pauc_is_a_trapezoid():
    c = edc(*case_b(), target_fmr=0.2, threshold="per_level", discard_fractions=[0, 0.2, 0.4, 0.6])
    assert pauc(c, 0.2) == pytest.approx((0.4 + 0.25) / 2 * 0.2)  # 0.065
    # 0.3 is between grid points: FNMR interpolated to 0.125 there.
    assert pauc(c, 0.3) == pytest.approx(0.065 + (0.25 + 0.125) / 2 * 0.1)  # 0.08375
    assert pauc(c, 0.6) == pytest.approx(0.065 + 0.25 / 2 * 0.2)  # 0.09
    assert pauc(c, 0.3, subtract_best=True) == pytest.approx(0.08375 - (0.4 ** 2 / 2 - 0.1 ** 2 / 2))
    with pytest.raises(ValueError, match="beyond the last discard level"):
        pauc(c, 0.7)


def test_per_level_default_grid_and_empty_levels():
    np.testing.assert_allclose(DEFAULT_GRID, np.arange(0, 0.98, 0.05))
    assert len(DEFAULT_GRID) == 20 and DEFAULT_GRID[3] == 0.15
    c = edc(*case_b(), target_fmr=0.2, threshold="per_level")
    np.testing.assert_allclose(c.discard_fractions, DEFAULT_GRID)
    # u=0.95 keeps floor(9.5)=9 → only pair 9 (an impostor): no mated pair, FNMR undefined.
    assert math.isnan(c.fnmr[-1]) and c.remaining_mated[-1] == 0
    assert any("no mated" in n for n in c.notes)
    # u=0.05 drops floor(0.5)=0 pairs: same point as u=0.
    assert c.fnmr[1] == c.fnmr[0] == pytest.approx(0.4)


def test_conventions_differ_on_same_data():
    fixed = edc(*case_b(), target_fmr=0.2, threshold="fixed")
    # Fixed: threshold > .5 once; mated by quality .0(.1 err) .2(.6) .4(.9) .6(.4 err) .8(.7)
    np.testing.assert_allclose(fixed.fnmr, [2 / 5, 1 / 4, 1 / 3, 1 / 2, 0 / 1, 0])
    np.testing.assert_allclose(fixed.discard_fractions, [0, 0.2, 0.4, 0.6, 0.8, 1.0])


# ---- FMR threshold rule ----------------------------------------------------------------------


def test_fmr_threshold_rule_and_ties():
    thr, fmr = fmr_threshold([0.9, 0.5, 0.3, 0.1], 0.25)  # k = 1 → just above 0.5
    assert thr == np.nextafter(0.5, np.inf) and fmr == 0.25
    # Three impostors tied at 0.5: the tie is never split, so achieved FMR 0 < target.
    thr, fmr = fmr_threshold([0.5, 0.5, 0.5, 0.1], 0.25)
    assert thr == np.nextafter(0.5, np.inf) and fmr == 0.0
    # Too few impostors for the target: k = 0 → just above the maximum.
    thr, fmr = fmr_threshold([0.2, 0.7], 1e-3)
    assert thr == np.nextafter(0.7, np.inf) and fmr == 0.0
    # 1e-3 * 3000 must give k = 3, despite floating point.
    imp = np.linspace(0, 1, 3000)
    thr, fmr = fmr_threshold(imp, 1e-3)
    assert thr == np.nextafter(imp[-4], np.inf) and fmr == pytest.approx(1e-3)


def test_fixed_notes_coarse_fmr():
    c = edc(*case_a(), target_fmr=1e-3)
    assert c.threshold == np.nextafter(0.95, np.inf)
    assert any("FMR resolution" in n for n in c.notes)


# ---- Input errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, kwargs, match", [
    (([], [], []), {}, "empty"),
    (([0.1, float("nan")], [True, False], [1, 1]), {}, "NaN"),
    (([0.1, 0.2], [True, False], [1, float("nan")]), {}, "NaN"),
    (([0.1, 0.2, 0.3], [True, False], [1, 1, 1]), {}, "length mismatch"),
    (([0.1, 0.2], [False, False], [1, 1]), {}, "no mated"),
    (([0.1, 0.2], [True, True], [1, 1]), {}, "no non-mated"),
    (([0.1, 0.2], [True, False], [1, 1]), {"target_fmr": 0}, "target_fmr"),
    (([0.1, 0.2], [True, False], [1, 1]), {"target_fmr": 1.0}, "target_fmr"),
    (([0.1, 0.2], [True, False], [1, 1]), {"target_fmr": float("nan")}, "target_fmr"),
    (([0.1, 0.2], [True, False], [1, 1]), {"threshold": "both"}, "threshold must be"),
    (([0.1, 0.2], [0.3, 0.9], [1, 1]), {}, "booleans"),
    (([0.1, 0.2], [True, False], [1, 1]), {"discard_fractions": [0, 0.1]}, "per_level.? only"),
    (([0.1, 0.2], [True, False], [1, 1]), {"threshold": "per_level", "discard_fractions": [0, 1.0]},
     r"\[0, 1\)"),
])
def test_clear_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        edc(*args, **kwargs)


def test_pauc_limit_checked():
    c = edc(*case_a(), target_fmr=0.1)
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="limit"):
            pauc(c, bad)


# ---- Pair quality and plot -------------------------------------------------------------------


def test_pair_quality_from():
    a, b = [0.2, 0.9, 0.5], [0.4, 0.1, 0.5]
    np.testing.assert_allclose(pair_quality_from(a, b), [0.2, 0.1, 0.5])
    np.testing.assert_allclose(pair_quality_from(a, b, "mean"), [0.3, 0.5, 0.5])
    np.testing.assert_allclose(pair_quality_from(a, b, "product"), [0.08, 0.09, 0.25])
    np.testing.assert_allclose(pair_quality_from(a, b, np.maximum), [0.4, 0.9, 0.5])
    with pytest.raises(ValueError, match="how must be"):
        pair_quality_from(a, b, "median")
    with pytest.raises(ValueError, match="length mismatch"):
        pair_quality_from(a, b[:2])
    with pytest.raises(ValueError, match="shape"):
        pair_quality_from(a, b, lambda x, y: x[:1])


def test_plot_edc_writes_png(tmp_path):
    from PIL import Image

    curves = {"fixed": edc(*case_a(), target_fmr=0.1),
              "per level": edc(*case_b(), target_fmr=0.2, threshold="per_level")}
    out = plot_edc(curves, tmp_path / "edc.png", "test EDC")
    data = (tmp_path / "edc.png").read_bytes()
    assert out == tmp_path / "edc.png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(tmp_path / "edc.png").size[0] > 100
    with pytest.raises(ValueError):
        plot_edc({}, tmp_path / "none.png", "x")
