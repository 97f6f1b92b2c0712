"""Does a second, free signal add to PreFIQs? Combinations of the default's drift with the raw
embedding norm (``--partner norm``), the face detector's own score (``--partner detector``) or the
embedding's distinctiveness (``--partner distinctiveness``: 1 − cos of the dense unit embedding and
the mean unit embedding of half A's faces, label-free; larger = farther from the average face), scored
like the sweep on LFW-dev halves A and B (nAUC20, fixed threshold, FMR 1e-3, people-level bootstrap
95 % intervals), with ``--splits N``: the spread over both halves of N seeded people splits.

    python benchmarks/combine.py ../shared/data/lfw_dev --backbone sface [--partner detector] [--splits 20]

Each combination ranks faces by both signals: the sum of their ranks (plain, or one weighted ×2),
the sum of z-scores, the lower of the two ranks; for a positive partner (the norm) also the sum of
z-scores of the logs, the ratio partner / drift and the product partner × quality. The drift is the
backbone's default pruning, computed once and kept in the cache (``drift_<backbone>_<weights>_<spec
hash>.npy``). The detector is the benchmark's (dlib's HOG detector, for every backbone); a face it
missed, placed by the fixed box, ranks below every detection. With ``distinctiveness`` the rows also
add the detector score as a third signal (rank sums of all three), and the opposite sign (closeness
to the average face) alone.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lfw import halves_bench, print_halves_table, product_combined, rank01  # noqa: E402
from whole_set import count_arg, print_spread, split_spread  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.evaluation.baselines import make_method  # noqa: E402
from prefiqs_core.pruning import format_prune  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402

PARTNERS = {"norm": ("embedding norm", "norm"), "detector": ("detector score", "detector"),
            "distinctiveness": ("distinctiveness", "distinctiveness")}


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def combinations(drift: np.ndarray, other: np.ndarray, partner: str = "norm") -> dict[str, np.ndarray]:
    """Qualities (higher = better) from the drift and a partner signal (higher = better), by name."""
    name, short = PARTNERS[partner]
    q = quality_from_drift(drift)
    out = {
        "PreFIQs (the default)": q,
        name: other,
        "rank sum": rank01(q) + rank01(other),
        "rank sum, PreFIQs ×2": 2 * rank01(q) + rank01(other),
        f"rank sum, {short} ×2": rank01(q) + 2 * rank01(other),
        "lower rank": np.minimum(rank01(q), rank01(other)),
        "z sum": _z(q) + _z(other),
    }
    if np.all(other > 0):  # the forms below need a positive partner
        out |= {
            "z sum of logs": _z(np.log(other)) - _z(np.log(np.maximum(drift, 1e-12))),
            f"{short} / drift": other / np.maximum(drift, 1e-12),
            f"{short} × quality": other * q,
        }
    return out


def distinctiveness(dense: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 − cos(e, m) of each unit embedding ``e`` with ``m``, the unit mean of the ``reference``
    faces' unit embeddings (0 = the average face's direction, larger = more distinctive): the
    product's :class:`prefiqs_core.calibration.Distinctiveness`, fitted on ``reference``."""
    from prefiqs_core.calibration import Distinctiveness

    return Distinctiveness.fit(reference).of(dense)


def partner_values(bench, partner: str) -> np.ndarray:
    if partner == "norm":
        return bench.raw_norm
    if partner == "distinctiveness":
        from prefiqs_core.evaluation.lfw import people_halves
        return distinctiveness(bench.dense, bench.dense[people_halves(bench.labels, 0)[0]])
    return bench.baseline(make_method("detector_score"))


def with_detector(q: np.ndarray, other: np.ndarray, det: np.ndarray) -> dict[str, np.ndarray]:
    """Three-signal rows: the detector score added to PreFIQs and a partner (all higher = better)."""
    return {
        "closeness to the average face (the opposite sign)": -other,
        "rank sum: PreFIQs + detector": rank01(q) + rank01(det),
        "rank sum: PreFIQs + detector ×2": rank01(q) + 2 * rank01(det),
        "rank sum: detector + partner": rank01(det) + rank01(other),
        "rank sum: PreFIQs + detector + partner": rank01(q) + rank01(det) + rank01(other),
        "rank sum: PreFIQs + detector ×2 + partner": rank01(q) + 2 * rank01(det) + rank01(other),
        "lower of the three ranks": np.minimum(np.minimum(rank01(q), rank01(det)), rank01(other)),
    }


def main(argv=None):
    def extra(ap):
        ap.add_argument("--partner", choices=sorted(PARTNERS), default="norm",
                        help="the signal combined with the drift (default: %(default)s)")
        ap.add_argument("--splits", type=count_arg, default=0, help="also the spread over both halves of N seeded "
                        "people splits (seed 0 = A/B)")

    args, bench = halves_bench(__doc__, "sface", argv, extra=extra)
    bb = bench.bb
    specs = default_pruning(bb.name)
    drift = bench.mean_drift(specs)
    other = partner_values(bench, args.partner)
    print(f"{bb.name}, default {format_prune(specs)}; Spearman correlation of drift-quality and "
          f"{PARTNERS[args.partner][0]}: {np.corrcoef(rank01(-drift), rank01(other))[0, 1]:.2f}")
    qualities = combinations(drift, other, args.partner)
    if args.partner == "detector":
        comb = product_combined(bench, drift, specs)
        if comb is not None:
            qualities["combined (per face: the shipped references' percentiles)"] = comb[1]
    if args.partner == "distinctiveness":
        qualities |= with_detector(qualities["PreFIQs (the default)"], other,
                                   partner_values(bench, "detector"))
    print_halves_table(bench, qualities)
    if args.splits:
        print()
        print_spread(split_spread(bench, qualities, range(args.splits)))


if __name__ == "__main__":
    main()
