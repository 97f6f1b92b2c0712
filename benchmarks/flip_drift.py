"""Does the mirror image help the score? PreFIQs drift measured on each face and on its mirror image,
scored like the sweep on LFW-dev halves A and B (nAUC20, fixed threshold, FMR 1e-3, people-level
bootstrap 95 % intervals). Comparisons stay those of the plain dense embedding of each photo: only the
quality changes.

    python benchmarks/flip_drift.py ../shared/data/lfw_dev --backbone dlib_resnet29 [--prune SPEC]

Rows: the drift of the photo (the product's score), of its mirror, their mean and their maximum; the
drift of the flip-averaged embedding (dense and pruned embeddings each taken as the normalised sum of
photo and mirror, as CR-FIQA-style ``--flip`` evaluation would use them); the dense flip distance
‖n(x) − n(mirror x)‖ on its own (a quality that needs no pruning), added to the drift by ranks (needs
the whole set) and as a per-face sum of distances. A row that uses the mirror costs one more dense
forward, plus the pruned tail again when it uses the mirror's drift. ``--feature-flip blocks.9,blocks.12``
adds a cheap stand-in for the mirror: the dense activation at a split point mirrored along its width and
run through the dense tail. Choose on A; B is the held-out half.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lfw import LFWBench, halves_bench, print_halves_table, rank01, unit_rows  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.pruning import format_prune, parse_prune  # noqa: E402
from prefiqs_core.trunk import run_stages, start_index  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402


def mirrored(bench: LFWBench) -> LFWBench:
    """The same bench over the mirror image of every chip (own activations and dense embeddings)."""
    m = copy.copy(bench)
    m.chips = np.ascontiguousarray(bench.chips[:, :, ::-1])
    m._acts = {}
    m.variant = "mirror"
    name = f"dense_mirror_{bench.bb.name}_{bench.bb.source_sha256[:12]}.npy"
    m.dense = m._dense_embeddings(bench.faces.cache / name)
    return m


@torch.inference_mode()
def feature_flip_distance(bench: LFWBench, split: str) -> np.ndarray:
    """‖n(x) − n(tail(flip h))‖: the dense activation entering ``split`` mirrored along its width and
    run through the dense tail (a mirror at the cost of the tail only; conv filters are not
    mirror-symmetric, so this is not the mirror image's embedding)."""
    k = start_index(bench.stages, split)
    if k == 0:
        raise SystemExit(f"error: --feature-flip {split}: that is the input; the mirror image rows cover it")
    h = bench.activations(k)
    out = [F.normalize(run_stages(bench.stages, h[i:i + bench.batch].flip(-1), k).float(), dim=1).numpy()
           for i in range(0, len(h), bench.batch)]
    return np.linalg.norm(bench.dense - np.concatenate(out), axis=1)


def distances(bench: LFWBench, mirror: LFWBench, specs) -> dict[str, np.ndarray]:
    """Per-face distances between unit embeddings (drifts of several copies averaged as PreFIQs does):
    ``photo``/``mirror`` drift, ``averaged`` (drift of the flip-averaged embedding) and ``flip``
    (dense photo vs dense mirror)."""
    dense_avg = unit_rows(bench.dense + mirror.dense)
    return {
        "photo": bench.mean_drift(specs),
        "mirror": mirror.mean_drift(specs),
        "averaged": np.mean([np.linalg.norm(
            dense_avg - unit_rows(bench.pruned(s) + mirror.pruned(s)), axis=1)
            for s in specs], axis=0),
        "flip": np.linalg.norm(bench.dense - mirror.dense, axis=1),
    }


def qualities(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Qualities (higher = better) by name. Rank sums need the whole set; the sums of distances are
    per face (what a score could use without a reference set)."""
    mean = (d["photo"] + d["mirror"]) / 2
    q = quality_from_drift(d["photo"])
    return {
        "PreFIQs on the photo (the product's score)": q,
        "PreFIQs on the mirror": quality_from_drift(d["mirror"]),
        "mean drift of photo and mirror": quality_from_drift(mean),
        "larger drift of photo and mirror": quality_from_drift(np.maximum(d["photo"], d["mirror"])),
        "drift of the flip-averaged embedding": quality_from_drift(d["averaged"]),
        "dense flip distance alone": -d["flip"],
        "rank sum: PreFIQs + flip distance": rank01(q) + rank01(-d["flip"]),
        "rank sum: mean drift + flip distance": rank01(-mean) + rank01(-d["flip"]),
        "per face: mean drift + flip distance / 2": -(mean + d["flip"] / 2),
        "per face: mean drift + flip distance": -(mean + d["flip"]),
        "per face: mean drift + 2 × flip distance": -(mean + 2 * d["flip"]),
        "per face: PreFIQs drift + flip distance": -(d["photo"] + d["flip"]),
    }


def main(argv=None):
    args, bench = halves_bench(__doc__, "dlib_resnet29", argv, prune=True, extra=lambda ap: ap.add_argument(
        "--feature-flip", default="", metavar="SPLITS",
        help="also mirror the dense activation entering each of these split points (comma-separated)"))
    bb = bench.bb
    specs = parse_prune(args.prune) if args.prune else default_pruning(bb.name)
    mirror = mirrored(bench)
    d = distances(bench, mirror, specs)
    print(f"{bb.name}, pruning {format_prune(specs)}; Spearman correlation of the photo's drift and the "
          f"flip distance: {np.corrcoef(rank01(d['photo']), rank01(d['flip']))[0, 1]:.2f}")
    rows = qualities(d)
    for split in filter(None, args.feature_flip.split(",")):
        f = feature_flip_distance(bench, split)
        rows[f"feature-map flip at {split} alone"] = -f
        rows[f"per face: PreFIQs drift + feature-map flip at {split} / 2"] = -(d["photo"] + f / 2)
        rows[f"per face: PreFIQs drift + feature-map flip at {split}"] = -(d["photo"] + f)
    print_halves_table(bench, rows)


if __name__ == "__main__":
    main()
