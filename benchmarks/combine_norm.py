"""Does the embedding norm add to PreFIQs? Combinations of the default's drift and the raw
embedding norm, scored like the sweep on LFW-dev halves A and B (nAUC20, fixed threshold, FMR 1e-3,
people-level bootstrap 95 % intervals).

    python benchmarks/combine_norm.py ../shared/data/lfw_dev --backbone sface [--cache out/lfw/cache]

Each combination ranks faces by both signals: the sum of their ranks (plain, or one weighted ×2),
the sum of z-scores (of quality, or of log drift and log norm), the lower of the two ranks, the
ratio norm / drift and the product norm × quality. The drift is the backbone's default pruning,
computed once and kept in the cache (``drift_<backbone>_<weights>_<spec hash>.npy``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lfw import halves_bench, print_halves_table  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.pruning import format_prune  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    return rankdata(x) / len(x)


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def combinations(drift: np.ndarray, norm: np.ndarray) -> dict[str, np.ndarray]:
    """Qualities (higher = better) from the drift and the raw norm, by name."""
    q = quality_from_drift(drift)
    return {
        "PreFIQs (the default)": q,
        "embedding norm": norm,
        "rank sum": _rank(q) + _rank(norm),
        "rank sum, PreFIQs ×2": 2 * _rank(q) + _rank(norm),
        "rank sum, norm ×2": _rank(q) + 2 * _rank(norm),
        "lower rank": np.minimum(_rank(q), _rank(norm)),
        "z sum": _z(q) + _z(norm),
        "z sum of logs": _z(np.log(norm)) - _z(np.log(np.maximum(drift, 1e-12))),
        "norm / drift": norm / np.maximum(drift, 1e-12),
        "norm × quality": norm * q,
    }


def main(argv=None):
    _, bench = halves_bench(__doc__, "sface", argv)
    bb = bench.bb
    specs = default_pruning(bb.name)
    label = format_prune(specs)
    drift = bench.mean_drift(specs)
    print(f"{bb.name}, default {label}; Spearman correlation of drift-quality and norm: "
          f"{np.corrcoef(_rank(-drift), _rank(bench.raw_norm))[0, 1]:.2f}")
    print_halves_table(bench, combinations(drift, bench.raw_norm))


if __name__ == "__main__":
    main()
