#!/usr/bin/env python
"""Choose PreFIQs defaults by real recognition errors: pruning settings on LFW development people.

Primary objective (``--lfw``, on by default when ``../shared/data/lfw_dev`` exists): the
normalised pAUC to 20 % discarded of the fixed-threshold FNM-EDC at FMR 1e-3 on real faces
(``benchmarks/lfw.py``): lower is better, 1.0 = no better than keeping every pair. The people are
split into two seeded, people-disjoint halves: every setting is ranked on half A and reported on
half B (with a people-level bootstrap 95 % interval), so the reported figure is for people the
choice never saw. Rule: the best setting on A and its A-interval; the default is the best setting
that costs at most 1.3 dense forwards per face if its A-score lies inside that interval, else the
best setting that costs at most 2 forwards.
The column "A: Δ vs best" gives each setting's difference from the best on A with its paired
interval (both measured on the same resampled people), a sharper test than the two intervals apart;
the rule itself reads the best's own interval.

Secondary columns (the earlier proxy, on the 14 real demo faces, their mirrors and 12 synthetic
degradations each): ``order`` = how often a clean chip outranks its degraded copy; ``auroc`` =
faces vs non-faces of scikit-image's lfw_subset.

    python benchmarks/sweep.py [--backbone dlib_resnet29] [--lfw DIR] [--out out/sweep]
    python benchmarks/sweep.py --no-lfw            # the proxy only (no LFW folder at hand)
    python benchmarks/sweep.py --no-proxy          # LFW only (the proxy costs a forward of 564 chips per copy)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefiqs_core import assets  # noqa: E402
from prefiqs_core.backbones import load_backbone  # noqa: E402
from prefiqs_core.evaluation.degrade import degraded_set  # noqa: E402
from prefiqs_core.demo import collect_demo_chips  # noqa: E402
from prefiqs_core.pruning import PruneSpec, format_prune, parse_prune  # noqa: E402
from prefiqs_core.scoring import PreFIQs  # noqa: E402
from lfw import paired_interval  # noqa: E402

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
        scorer = PreFIQs(self.bb, spec)  # shared trunk: only the pruned part runs again
        return {k: scorer.score(v, self.batch).drift for k, v in self.sets.items()}


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


# The grid: full-network settings (cost 2 dense forwards) and late-only ones at several split points.
GRIDS = {
    "dlib_resnet29": [
        "global_l1@0.5", "layerwise_l1@0.1", "ln_structured@0.05+keepfirst+keeplast",
        "global_l1@0.5+from:blocks.6", "global_l1@0.3+from:blocks.10", "global_l1@0.5+from:blocks.10",
        "global_l1@0.7+from:blocks.10", "layerwise_l1@0.3+from:blocks.10", "random@0.1+from:blocks.10",
        "ln_structured@0.1+from:blocks.10", "global_l1@0.5+keeplast+from:blocks.10",
        "global_l1@0.5+from:blocks.12", "global_l1@0.7+from:blocks.12",
        "global_l1@0.5+from:blocks.10,layerwise_l1@0.3+from:blocks.10",
    ],
    "sface": [
        "global_l1@0.4+keepfirst",
        "global_l1@0.5+from:conv_6_dw_conv2d", "global_l1@0.3+from:conv_10_dw_conv2d",
        "global_l1@0.5+from:conv_10_dw_conv2d", "global_l1@0.7+from:conv_10_dw_conv2d",
        "layerwise_l1@0.3+from:conv_10_dw_conv2d", "random@0.1+from:conv_10_dw_conv2d",
        "global_l1@0.5+from:conv_12_dw_conv2d", "global_l1@0.7+from:conv_12_dw_conv2d",
        "global_l1@0.5+from:conv_14_dw_conv2d",
    ],
}
CHEAP, AFFORDABLE = 1.3, 2.0


def choose(rows: list[dict]) -> tuple[dict, str]:
    """The default by the rule in this module's docstring, judged on half A only; and why."""
    pre = [r for r in rows if r["kind"] == "prefiqs"]
    best = min(pre, key=lambda r: r["A"])
    hi = float(np.nanpercentile(best["A_boot"], 97.5))
    cheap = [r for r in pre if r["cost"] <= CHEAP + 1e-9 and r["A"] <= hi]
    if cheap:
        pick = min(cheap, key=lambda r: r["A"])
        why = (f"best on A: {best['label']} ({best['A']:.3f}, 95 % interval up to {hi:.3f}); "
               f"{pick['label']} costs {pick['cost']:.2f} forwards and scores {pick['A']:.3f} on A, inside it")
    else:
        pick = min((r for r in pre if r["cost"] <= AFFORDABLE + 1e-9), key=lambda r: r["A"])
        why = f"no setting at <= {CHEAP} forwards within the best's interval; best at <= 2 forwards"
    if pick is not best:
        # the same comparison on the same resampled people: what they share cancels
        lo, hi_d, p = paired_interval(pick["A_boot"], best["A_boot"])
        why += (f"; paired on the same resampled people the pick is {pick['A'] - best['A']:+.3f} "
                f"({lo:+.3f} to {hi_d:+.3f}) from the best, worse on {1 - p:.0%} of them")
    return pick, why


def main(argv=None):
    from lfw import BASELINES, DEFAULT_DIR, LFWBench, plot, run

    from prefiqs_core.evaluation.baselines import available_methods
    from prefiqs_core.defaults import default_pruning

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--checkpoint")
    ap.add_argument("--lfw", default=str(DEFAULT_DIR), help="identity folder (default: %(default)s)")
    ap.add_argument("--no-lfw", action="store_true", help="the synthetic proxy columns only")
    ap.add_argument("--no-proxy", action="store_true", help="leave out the proxy columns (each pruned copy "
                    "costs a forward of the 564 proxy chips: minutes per copy for SFace on a small CPU)")
    ap.add_argument("--grid", action="append", help="spec strings to sweep instead of the backbone's grid")
    ap.add_argument("--grid-file", help="a file of spec strings, one per line ('#' comments), e.g. "
                    "benchmarks/grids/dlib_resnet29_late.txt")
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--out", default="out/sweep")
    ap.add_argument("--cache", default="out/lfw/cache", help="where the LFW chips and dense embeddings "
                    "are cached (default: %(default)s; benchmarks/lfw.py uses <its --out>/cache)")
    args = ap.parse_args(argv)
    if args.grid_file:
        lines = Path(args.grid_file).read_text().splitlines()
        args.grid = (args.grid or []) + [g.strip() for g in lines if g.strip() and not g.lstrip().startswith("#")]
    t0 = time.time()
    bb = load_backbone(args.backbone, args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    default_now = format_prune(default_pruning(bb.name))
    grid = args.grid or GRIDS.get(bb.name) or ["global_l1@0.3", "global_l1@0.5", "layerwise_l1@0.1"]
    if default_now not in grid and not args.grid:
        grid = [default_now] + list(grid)
    settings = {format_prune(parse_prune(g)): parse_prune(g) for g in grid}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.no_proxy and (args.no_lfw or not Path(args.lfw).is_dir()):
        raise SystemExit(f"error: --no-proxy and no LFW folder ({'--no-lfw' if args.no_lfw else args.lfw}): "
                         "nothing to compute")
    proxy = None if args.no_proxy else Bench(bb)
    if proxy is not None:
        log(f"{bb.name}: proxy set of {proxy.n_faces} real chips (incl. mirrors) x 13 variants + lfw_subset")

    proxy_drifts: dict = {}  # per pruned copy: ensembles (e.g. of random seeds) share their members

    def proxy_cols(specs):
        for s in specs:
            if s not in proxy_drifts:
                proxy_drifts[s] = proxy.drifts(s)
        r = evaluate([proxy_drifts[s] for s in specs], proxy.n_faces // 2)
        return dict(order=r["order"], auroc=r["auroc"])

    if args.no_lfw or not Path(args.lfw).is_dir():
        if not args.no_lfw:
            log(f"no LFW folder at {args.lfw}: proxy columns only")
        lines = ["| setting | order | face/non-face AUROC |", "|---|---|---|"]
        for label, specs in settings.items():
            c = proxy_cols(specs)
            lines.append(f"| {label} | {c['order']:.3f} | {c['auroc']:.3f} |")
        print("\n".join(lines))
        return
    bench = LFWBench(args.lfw, bb, Path(args.cache), reps=args.reps, log=log)
    names = [n for n in args.baselines.split(",") if n]
    baselines = available_methods(bb, names)
    rows = run(bench, settings, baselines, full=True)
    for r in rows:
        r["A_boot"] = bench.nauc(r["quality"], "A", boot=True)[1]
        if r["kind"] == "prefiqs" and proxy is not None:
            r |= proxy_cols(settings[r["label"]])
    pick, why = choose(rows)
    best = min((r for r in rows if r["kind"] == "prefiqs"), key=lambda r: r["A"])
    lines = [f"| setting ({bb.name}) | cost (dense fwd) | A: nAUC20 (95 % CI) | A: Δ vs best (paired 95 % CI) | "
             "**B: nAUC20** (95 % CI) | B: nAUC30 | B: nAUC20 @1e-4 | B: per-level nAUC20 | order (proxy) | "
             "AUROC (proxy) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["kind"] != "prefiqs", r["A"])):
        alo, ahi = np.nanpercentile(r["A_boot"], [2.5, 97.5])
        name = f"**{r['label']} (chosen)**" if r is pick else r["label"]
        dlo, dhi, _ = paired_interval(r["A_boot"], best["A_boot"])
        paired = "–" if r is best else f"{r['A'] - best['A']:+.3f} ({dlo:+.3f}…{dhi:+.3f})"
        lines.append(f"| {name} | {r['cost']:.2f} | {r['A']:.3f} ({alo:.3f}–{ahi:.3f}) | {paired} | "
                     f"{r['B']:.3f} ({r['B_lo']:.3f}–{r['B_hi']:.3f}) | {r['fixed_0.001_npauc30']:.3f} | "
                     f"{r['fixed_0.0001_npauc20']:.3f} | {r['per_level_0.001_npauc20']:.3f} | "
                     + (f"{r['order']:.3f} | {r['auroc']:.3f} |" if "order" in r else "– | – |"))
    table = "\n".join(lines)
    (out / f"sweep_{bb.name}.md").write_text(table + f"\n\nchosen: {pick['label']}: {why}\n")
    (out / f"sweep_{bb.name}.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k not in ("quality", "boot", "A_boot")} for r in rows], indent=1))
    shown = [pick] + [r for r in rows if r["kind"] == "baseline"]
    old = next((r for r in rows if r["label"] == default_now), None)
    if old is not None and old is not pick:
        old = dict(old, label=old["label"] + " (previous default)")
        shown.insert(1, old)
    plot(bench, shown, out / f"lfw_edc_{bb.name}.png")
    print(table)
    print(f"\nchosen: {pick['label']}: {why}\n{len(rows)} rows in {time.time() - t0:.0f} s; "
          f"table and EDC plot in {out}/")


if __name__ == "__main__":
    main()
