"""Whose quality predicts whose errors? Each backbone's quality (its default PreFIQs drift and its raw
embedding norm) judged on the recognition errors of each backbone, on LFW-dev halves A and B
(nAUC20, fixed threshold, FMR 1e-3, people-level bootstrap 95 % intervals; Δ against the first row,
the recogniser's own PreFIQs default, on the same resampled people).

    python benchmarks/cross_backbone.py ../shared/data/lfw_dev --backbones dlib_resnet29,sface

The question it answers: someone who matches faces with one network (say dlib's, through
face_recognition) could score quality with another. Both backbones see the same photos (the same
detections and people halves), each aligned to its own template. Each backbone's dense embeddings
and default drift are cached (``--cache``); with a cold cache SFace's drift costs one SFace forward
of every face.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lfw import DEFAULT_DIR, LFWBench, print_halves_table  # noqa: E402
from prefiqs_core.backbones import load_backbone  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402


def qualities_of(bench: LFWBench) -> dict[str, np.ndarray]:
    """A backbone's own qualities of every face (higher = better), by name."""
    name = bench.bb.name
    return {f"{name} PreFIQs (its default)": quality_from_drift(bench.mean_drift(default_pruning(name))),
            f"{name} embedding norm": bench.raw_norm}


def top_people_share(person: np.ndarray, errors: np.ndarray, top: int = 10) -> float:
    """The share of the false non-matches held by the ``top`` people with the most of them (a per-photo
    quality cannot separate the photos of someone the network confuses everywhere)."""
    counts = np.bincount(person[errors > 0])
    return float(np.sort(counts)[::-1][:top].sum() / max(errors.sum(), 1))


def cross_rows(benches: list[LFWBench], recogniser: LFWBench) -> dict[str, np.ndarray]:
    """Every backbone's qualities for the recogniser's pairs, the recogniser's own PreFIQs first."""
    if any(b.labels != recogniser.labels for b in benches):
        raise SystemExit("error: the backbones' face lists differ (use one --cache for all)")
    own = qualities_of(recogniser)
    rows = dict(own)
    for b in benches:
        if b is not recogniser:
            rows |= qualities_of(b)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_DIR), help="identity folder (default: %(default)s)")
    ap.add_argument("--backbones", default="dlib_resnet29,sface", help="comma-separated backbone names")
    ap.add_argument("--cache", default="out/lfw/cache", help="the LFW benchmark's cache (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap replicates")
    args = ap.parse_args(argv)
    names = [n for n in args.backbones.split(",") if n]
    if len(names) < 2:
        raise SystemExit("error: --backbones needs at least two names")
    if not Path(args.folder).is_dir():
        raise SystemExit(f"error: identity folder {args.folder} not found (give the LFW development folder's path)")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    benches = [LFWBench(Path(args.folder), load_backbone(n), Path(args.cache), reps=args.reps, log=log)
               for n in names]
    for rec in benches:
        parts = []
        for name, h in rec.halves.items():
            e = h.errors(1e-3)
            parts.append(f"{name}: FNMR {e.mean():.3f}, {int(e.sum())} false non-matches, "
                         f"{top_people_share(h.pairs.person, e):.0%} of them in the 10 people with the most")
        print(f"\n### errors of {rec.bb.name} at FMR 1e-3 ({'; '.join(parts)})\n")
        print_halves_table(rec, cross_rows(benches, rec))


if __name__ == "__main__":
    main()
