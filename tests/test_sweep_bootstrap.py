"""benchmarks/sweep.py's bootstrap: each resample's utility is the utility recomputed from scratch on
the resampled faces (a face and its mirror drawn together), and the draws are paired across settings."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from sweep import Bootstrap, auroc, evaluate  # noqa: E402


def fake_drifts(rng, n_real, shift):
    d = {"clean": rng.uniform(0, 0.5, 2 * n_real), "lfw_face": rng.uniform(0, 1, 30) - shift,
         "lfw_nonface": rng.uniform(0, 1, 20) + shift}
    for kind in ("blur", "noise"):
        for level in (1, 2):
            d[f"{kind}{level}"] = rng.uniform(0, 1, 2 * n_real)
    d["lfw_face"][:3] = d["lfw_nonface"][:3]  # some ties
    return d


def test_each_resample_is_the_metric_recomputed_on_its_draw():
    rng = np.random.default_rng(1)
    n_real = 7
    drifts = fake_drifts(rng, n_real, 0.1)
    r = evaluate([drifts], n_real)
    assert abs(r["wins"].mean() - r["order"]) < 1e-12  # equal-sized units: the mean of units is the order
    assert abs(r["pairs"].mean() - r["auroc"]) < 1e-12
    boot = Bootstrap(n_real, 30, 20, reps=50, seed=3)
    u = boot.utilities(r)
    q = {k: 1 - v / 2 for k, v in drifts.items()}
    deg = [k for k in q if k[-1].isdigit()]
    for b in (0, 17, 49):
        units = boot.units[b]
        chips = np.concatenate([units, units + n_real])  # each drawn face with its mirror
        order = np.mean([(q["clean"][chips] > q[k][chips]).mean() for k in deg])
        au = auroc(q["lfw_face"][boot.pos[b]], q["lfw_nonface"][boot.neg[b]])
        assert abs(u[b] - (order + au) / 2) < 1e-12


def test_draws_are_shared_so_a_setting_never_beats_itself():
    rng = np.random.default_rng(2)
    a = evaluate([fake_drifts(rng, 5, 0.0)], 5)
    b = evaluate([fake_drifts(rng, 5, 0.3)], 5)
    boot = Bootstrap(5, 30, 20, reps=200)
    assert not (boot.utilities(a) > boot.utilities(a)).any()
    assert np.array_equal(boot.utilities(b), Bootstrap(5, 30, 20, reps=200).utilities(b))  # seeded
    lo, hi = np.percentile(boot.utilities(b), [2.5, 97.5])
    assert lo < b["utility"] < hi
