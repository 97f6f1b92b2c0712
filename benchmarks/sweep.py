#!/usr/bin/env python
"""Choose PreFIQs defaults by measurement: pruning methods × sparsities × ensembles on real faces.

For every setting it reports
- order: how often a real face's clean chip gets a higher quality than its own degraded copy, averaged
  over 6 degradations × 2 severities (blur, down-scaling, noise, JPEG, occlusion, darkening);
- strong: the same over the strong severities only;
- auroc: faces vs non-faces of scikit-image's lfw_subset (25 px, upscaled), quality as the score;
- fwd: forwards per face (1 dense + one per pruned copy), the cost.
utility = (order + auroc) / 2. Faces: every face detected in the real photos plus their mirror
images (mirroring doubles the sample without inventing faces).

How much of a difference is noise: a bootstrap (1000 resamples of the real faces, a face and its
mirror drawn together, and of the lfw faces and non-faces; the same draws for every setting) gives
each setting's 95 % interval of utility and how often it beats the chosen default on the same draw.

    python benchmarks/sweep.py [--backbone dlib_resnet29] [--out out/sweep]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefiqs_core import assets  # noqa: E402
from prefiqs_core.backbones import load_backbone  # noqa: E402
from prefiqs_core.degrade import degraded_set  # noqa: E402
from prefiqs_core.demo import collect_demo_chips  # noqa: E402
from prefiqs_core.pruning import PruneSpec, prune_copy  # noqa: E402

SINGLE = (
    [PruneSpec("global_l1", s) for s in (0.3, 0.4, 0.5, 0.6)]
    + [PruneSpec("layerwise_l1", s) for s in (0.1, 0.2, 0.3, 0.4)]
    + [PruneSpec("random", s) for s in (0.01, 0.03, 0.1)]
    + [PruneSpec("ln_structured", s) for s in (0.02, 0.05, 0.1)]
)
VARIANTS = [("keep_first", dict(keep_first=True)), ("keep_last", dict(keep_last=True)),
            ("keep both", dict(keep_first=True, keep_last=True))]


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def lfw_subset_chips(size: int):
    a = np.load(assets.require(assets.extra_dir() / "lfw_subset.npy", "scikit-image lfw_subset"))
    chips = [np.asarray(Image.fromarray((x * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
                        .convert("RGB")) for x in a]
    return np.stack(chips[:100]), np.stack(chips[100:])  # faces, non-faces


class Bench:
    """Embeds every test chip once densely; each pruned copy adds one forward per chip."""

    def __init__(self, backbone, batch=64):
        self.bb = backbone
        self.batch = batch
        real, _, _ = collect_demo_chips(backbone.preprocess)
        real = np.stack(real)
        clean = np.concatenate([real, real[:, :, ::-1]])
        self.sets = {"clean": clean}
        for kind, level, _, chips in degraded_set(clean):
            self.sets[f"{kind}{level}"] = chips
        self.sets["lfw_face"], self.sets["lfw_nonface"] = lfw_subset_chips(backbone.preprocess.size)
        self.n_faces = len(clean)
        self.dense = {k: self._embed(backbone.net, v) for k, v in self.sets.items()}

    @torch.inference_mode()
    def _embed(self, net, chips):
        out = [F.normalize(net(self.bb.prepare(chips[i:i + self.batch])), dim=1)
               for i in range(0, len(chips), self.batch)]
        return torch.cat(out)

    def drifts(self, spec: PruneSpec) -> dict[str, np.ndarray]:
        net, _ = prune_copy(self.bb.net, spec)
        return {k: (self.dense[k] - self._embed(net, v)).norm(dim=1).numpy() for k, v in self.sets.items()}


def evaluate(drift_sets: list[dict], n_real: int) -> dict:
    """Metrics for the ensemble whose drift is the mean of the given per-copy drifts.

    Also the per-unit pieces the bootstrap resamples: ``wins`` = per real face (chip ``j`` and its
    mirror ``j + n_real`` are one unit: they are not independent), its share of degraded copies it
    outscores; ``pairs`` = the lfw face x non-face comparison matrix (1, ½ for a tie, 0).
    """
    d = {k: np.mean([ds[k] for ds in drift_sets], axis=0) for k in drift_sets[0]}
    q = {k: 1 - v / 2 for k, v in d.items()}
    deg = [k for k in q if k[-1].isdigit()]
    order = float(np.mean([(q["clean"] > q[k]).mean() for k in deg]))
    strong = float(np.mean([(q["clean"] > q[k]).mean() for k in deg if k.endswith("2")]))
    au = auroc(q["lfw_face"], q["lfw_nonface"])
    per_chip = np.mean([q["clean"] > q[k] for k in deg], axis=0)
    wins = (per_chip[:n_real] + per_chip[n_real:2 * n_real]) / 2
    pos, neg = q["lfw_face"][:, None], q["lfw_nonface"][None, :]
    pairs = (pos > neg) + 0.5 * (pos == neg)
    return dict(order=order, strong=strong, auroc=au, utility=(order + au) / 2,
                clean_drift=float(d["clean"].mean()), fwd=1 + len(drift_sets), wins=wins, pairs=pairs)


class Bootstrap:
    """Resamples (with replacement) the real faces, the lfw faces and the lfw non-faces, the same
    draws for every setting, so that differences between settings are paired."""

    def __init__(self, n_real: int, n_pos: int, n_neg: int, reps: int = 1000, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.units = rng.integers(0, n_real, (reps, n_real))
        self.pos = rng.integers(0, n_pos, (reps, n_pos))
        self.neg = rng.integers(0, n_neg, (reps, n_neg))

    def utilities(self, r: dict) -> np.ndarray:
        order = r["wins"][self.units].mean(axis=1)
        # the AUROC of a resample: mean of the comparison matrix over the drawn rows and columns
        row_counts = np.apply_along_axis(np.bincount, 1, self.pos, minlength=r["pairs"].shape[0])
        col_counts = np.apply_along_axis(np.bincount, 1, self.neg, minlength=r["pairs"].shape[1])
        au = np.einsum("bi,ij,bj->b", row_counts, r["pairs"], col_counts) / (self.pos.shape[1] * self.neg.shape[1])
        return (order + au) / 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--checkpoint")
    ap.add_argument("--out", default="out/sweep")
    args = ap.parse_args(argv)
    t0 = time.time()
    bench = Bench(load_backbone(args.backbone, args.checkpoint))
    print(f"{args.backbone}: {bench.n_faces} real face chips (incl. mirrors) x 13 variants, "
          f"100 lfw faces + 100 non-faces", file=sys.stderr)
    cache, rows = {}, []

    def run(label, specs):
        for s in specs:
            if s not in cache:
                cache[s] = bench.drifts(s)
        rows.append((label, evaluate([cache[s] for s in specs], bench.n_faces // 2)))
        r = rows[-1][1]
        print(f"  {label:<48} order {r['order']:.3f} auroc {r['auroc']:.3f} utility {r['utility']:.3f}",
              file=sys.stderr)

    for s in SINGLE:
        run(s.label(), [s])
    best = max((r for r in rows), key=lambda r: r[1]["utility"])
    best_spec = next(s for s in SINGLE if s.label() == best[0])
    for name, kw in VARIANTS:
        v = PruneSpec(best_spec.method, best_spec.sparsity, **kw)
        run(v.label(), [v])
    by_method = {}
    for s in SINGLE:
        by_method.setdefault(s.method, []).append(s)
    for method, specs in by_method.items():
        if method != "random":
            run(f"ensemble {method} {{{','.join(f'{s.sparsity:g}' for s in specs)}}}", specs)
    run("ensemble random@0.03 x3 seeds", [PruneSpec("random", 0.03, seed) for seed in range(3)])
    top2 = sorted(rows[:len(SINGLE)], key=lambda r: -r[1]["utility"])[:3]
    top_specs = [next(s for s in SINGLE if s.label() == r[0]) for r in top2]
    run("ensemble of the 3 best singles: " + " + ".join(s.label() for s in top_specs), top_specs)

    singles = [r for r in rows if r[1]["fwd"] == 2]
    pick = max(singles, key=lambda r: r[1]["utility"])
    ens = max(rows, key=lambda r: r[1]["utility"])
    # an ensemble must buy at least 0.02 utility per extra forward to be worth its cost
    if ens is not pick and ens[1]["utility"] - pick[1]["utility"] >= 0.02 * (ens[1]["fwd"] - 2):
        pick = ens
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    boot = Bootstrap(bench.n_faces // 2, len(bench.sets["lfw_face"]), len(bench.sets["lfw_nonface"]))
    ref = boot.utilities(pick[1])
    lines = [f"| setting ({args.backbone}) | order (all) | order (strong) | face/non-face AUROC | utility | "
             "utility 95 % CI | P(better than default) | mean clean drift | forwards/face |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows:
        mark = " **(default)**" if label == pick[0] else ""
        u = boot.utilities(r)
        lo, hi = np.percentile(u, [2.5, 97.5])
        better = "" if label == pick[0] else f"{(u > ref).mean():.2f}"
        lines.append(f"| {label}{mark} | {r['order']:.3f} | {r['strong']:.3f} | {r['auroc']:.3f} | "
                     f"{r['utility']:.3f} | {lo:.3f}–{hi:.3f} | {better} | {r['clean_drift']:.3f} | {r['fwd']} |")
    table = "\n".join(lines)
    (out / f"sweep_{args.backbone}.md").write_text(table + "\n")
    print(table)
    print(f"\nbest trade-off: {pick[0]} (utility {pick[1]['utility']:.3f}); "
          f"{len(cache)} pruned copies in {time.time() - t0:.0f} s; table in {out}/sweep_{args.backbone}.md")


if __name__ == "__main__":
    main()
