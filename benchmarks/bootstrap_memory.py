"""Memory and time of the people-level bootstrap of the LFW benchmark's nAUC (``weighted_pauc`` over
``people_bootstrap`` weights) on synthetic pairs of the size a folder with every photo kept gives.

    python benchmarks/bootstrap_memory.py [--pairs 200000] [--people 1184] [--reps 1000]

Prints the weights' own size, the peak resident memory of the process and the time. The replicates
are evaluated a few rows at a time, so the peak is the weights plus a bounded working set (about
13.5 GiB before that, for the defaults here).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefiqs_core.evaluation.lfw import people_bootstrap, weighted_pauc  # noqa: E402


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200_000, help="genuine pairs")
    ap.add_argument("--people", type=int, default=1184)
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap replicates")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    person = rng.integers(0, args.people, args.pairs)
    quality, errors = rng.uniform(size=args.pairs), (rng.uniform(size=args.pairs) < 0.06).astype(float)
    before = _peak_gib()
    t0 = time.perf_counter()
    w = people_bootstrap(person, args.people, args.reps, seed=0)
    t1 = time.perf_counter()
    areas, _ = weighted_pauc(quality, errors, w)
    t2 = time.perf_counter()
    print(f"{args.pairs} genuine pairs, {args.people} people, {args.reps} replicates: weights "
          f"{w.nbytes / 2 ** 30:.2f} GiB ({w.dtype}); peak resident {_peak_gib():.2f} GiB (at start "
          f"{before:.2f}); weights {t1 - t0:.1f} s, nAUC replicates {t2 - t1:.1f} s; "
          f"mean pAUC {areas.mean():.5f}")


if __name__ == "__main__":
    main()
