#!/usr/bin/env python
"""Quality measures judged by real recognition errors on an LFW-style identity folder.

Every image is detected and aligned once (cached per folder), embedded by the backbone's dense
network (the recognition system), and compared in all genuine pairs (at most ``--max-per-person``
images per person) and all impostor pairs. Each quality measure then orders the genuine pairs
(pair quality = the lower of the two faces'), and the FNM-EDC (``prefiqs_core.evaluation.edc``)
says how fast the false non-match rate falls as the worst pairs are discarded. The people are split
into two seeded, people-disjoint halves: settings are chosen on half A and reported on half B, with
a people-level bootstrap 95 % interval.

Columns: ``nAUC20`` = pAUC of the fixed-threshold FNM-EDC up to 20 % discarded, divided by
(FNMR at 0 % x 0.2): 1.0 is no better than keeping every pair, lower is better.

    python benchmarks/lfw.py ../shared/data/lfw_dev                     # default + baselines
    python benchmarks/lfw.py DIR --backbone sface --prune "global_l1@0.5" --prune "global_l1@0.5+from:conv_6_dw_conv2d"
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prefiqs_core.backbones import load_backbone  # noqa: E402
from prefiqs_core.evaluation.baselines import EmbeddingNorm, JVPSensitivity, available_methods  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.evaluation import edc, pauc  # noqa: E402
from prefiqs_core.evaluation.lfw import (COMPARATORS, FaceSet, PairSet, impostor_qualities, people_bootstrap,  # noqa: E402
                              people_halves, threshold_at, weighted_pauc)
from prefiqs_core.pruning import format_prune, parse_prune, prune_tail, short_prune  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402
from prefiqs_core.sensitivity import tail_jvp  # noqa: E402
from prefiqs_core.trunk import run_stages, stage_macs, stages_of, start_index  # noqa: E402

DEFAULT_DIR = ROOT.parent / "shared" / "data" / "lfw_dev"
FMRS = (1e-3, 1e-4)
BASELINES = ("random", "sharpness", "face_size", "detector_score", "embedding_norm", "serfiq", "grafiqs")
# also available: "jvp" (JVPSensitivity, the first-order drift of the backbone's default pruning; here
# through the pruned tail only, from the cached dense activation)


@dataclass
class Half:
    """One people-disjoint half: its pairs, thresholds, and bootstrap weights."""

    name: str
    pairs: PairSet
    thresholds: dict = field(default_factory=dict)
    boot: np.ndarray | None = None

    def errors(self, fmr: float) -> np.ndarray:
        return (self.pairs.genuine < self.thresholds[fmr]).astype(np.float64)


class LFWBench:
    """Dense embeddings once; then any pruning setting or baseline costs only its own forwards."""

    variant = ""  # names what the chips are when they are not the photos themselves (cache files)
    comparator = "cosine"  # how the recogniser compares two faces, so which errors it makes

    def __init__(self, root, backbone, cache_dir, max_per_person: int = 20, split_seed: int = 0,
                 reps: int = 1000, batch: int = 64, log=print, max_people: int | None = None,
                 comparator: str = "cosine"):
        self.bb, self.batch, self.log, self.reps = backbone, batch, log, reps
        self.comparator = comparator
        t0 = time.time()
        self.faces = FaceSet.load(root, cache_dir, max_per_person, progress=_tqdm, max_people=max_people)
        self.labels = self.faces.labels
        self.chips = self.faces.chips(backbone.preprocess.template)
        self.stages = stages_of(backbone.net.eval())
        s = backbone.preprocess.size
        with torch.inference_mode():
            self.macs = stage_macs(self.stages, torch.zeros(1, 3, s, s))
        self._acts: dict[int, torch.Tensor] = {}
        self.dense = self._dense_embeddings(self.faces.cache / f"dense_{backbone.name}_{backbone.source_sha256[:12]}.npy")
        a, b = people_halves(self.labels, split_seed)
        self.halves = {"A": self.half_of("A", a, reps, 1), "B": self.half_of("B", b, reps, 2)}
        n = len(self.labels)
        self.log(f"{backbone.name}: {n} faces of {len(set(self.labels))} people, "
                 f"{self.faces.n_fallback} with no detected face (fixed box); "
                 + "; ".join(f"half {h.name}: {h.pairs.n_people} people, {len(h.pairs.genuine)} genuine, "
                             f"{len(h.pairs.impostor)} impostor pairs, FNMR@1e-3 {h.errors(1e-3).mean():.3f}"
                             for h in self.halves.values())
                 + f" ({time.time() - t0:.0f} s)")

    def half_of(self, name: str, mask: np.ndarray, reps: int, seed: int) -> Half:
        """The faces where ``mask`` is true as one half: its pairs, its own thresholds and (when
        ``reps``) its people-level bootstrap weights."""
        # "euclidean": the raw descriptors' distance (dlib's own comparison); the unit rows otherwise
        emb = self.dense * self.raw_norm[:, None].astype(np.float32) if self.comparator == "euclidean" else self.dense
        h = Half(name, PairSet.build(emb, self.labels, mask, self.comparator))
        h.thresholds = {f: threshold_at(h.pairs.impostor, f) for f in FMRS}
        if reps:
            h.boot = people_bootstrap(h.pairs.person, h.pairs.n_people, reps, seed)
        return h

    def add_all_people(self, seed: int = 3) -> Half:
        """A third 'half', ``all``: every person, one threshold over all impostor pairs (how a table
        over the whole folder, with no split, is measured)."""
        self.halves["all"] = self.half_of("all", np.ones(len(self.labels), bool), self.reps, seed)
        return self.halves["all"]

    # ---- embeddings ---------------------------------------------------------------------------
    def _batches(self):
        for i in range(0, len(self.chips), self.batch):
            yield i, self.bb.prepare(self.chips[i:i + self.batch])

    @torch.inference_mode()
    def _dense_embeddings(self, cache: Path) -> np.ndarray:
        """Unit dense embeddings of every face; the raw embedding norms are kept too (MagFace's
        quality, the ``embedding_norm`` baseline, comes free with this forward)."""
        norms = cache.with_name(cache.stem + "_norms.npy")
        if cache.exists() and norms.exists():
            e = np.load(cache)
            if len(e) == len(self.chips):
                self.raw_norm = np.load(norms)
                return e
        raw = np.concatenate([self.bb.net(x).float().numpy() for _, x in _tqdm(
            self._batches(), total=-(-len(self.chips) // self.batch), desc="dense")])
        self.raw_norm = np.linalg.norm(raw.astype(np.float64), axis=1)
        e = raw / self.raw_norm[:, None].astype(np.float32)
        np.save(cache, e)
        np.save(norms, self.raw_norm)
        return e

    @torch.inference_mode()
    def activations(self, k: int) -> torch.Tensor | None:
        """Dense activations entering stage ``k`` for every face (kept in memory; None for k = 0)."""
        if k == 0:
            return None
        if k not in self._acts:
            j = max((c for c in self._acts if c < k), default=0)  # continue from the nearest cached stage
            if j == 0:
                self._acts[k] = torch.cat([run_stages(self.stages, x, 0, k) for _, x in self._batches()])
            else:
                h = self._acts[j]
                self._acts[k] = torch.cat([run_stages(self.stages, h[i:i + self.batch], j, k)
                                           for i in range(0, len(h), self.batch)])
        return self._acts[k]

    @torch.inference_mode()
    def pruned(self, spec) -> np.ndarray:
        """Unit embeddings of every face through the copy pruned by ``spec``."""
        k, tail, _ = prune_tail(self.bb.net, spec)
        acts = self.activations(k)
        out = []
        for i in range(0, len(self.chips), self.batch):
            # late tails start from the cached dense activation: the chips need no preparing then
            h = self.bb.prepare(self.chips[i:i + self.batch]) if acts is None else acts[i:i + self.batch]
            out.append(F.normalize(tail(h).float(), dim=1).numpy())
        return np.concatenate(out)

    def drift(self, spec) -> np.ndarray:
        return np.linalg.norm(self.dense - self.pruned(spec), axis=1)

    def mean_drift(self, specs, members: dict | None = None) -> np.ndarray:
        """PreFIQs' drift for a list of copies (their mean), kept on disk beside the dense embeddings
        so that a re-run does not re-run the pruned tails; ``members`` (copy → drift) lets settings
        of one run share their copies."""
        label = format_prune(specs)
        # a bench over other chips than the photos (the mirror images) keeps its drift under its own name
        variant = f"{self.variant}_" if self.variant else ""
        saved = self.faces.cache / (f"drift_{variant}{self.bb.name}_{self.bb.source_sha256[:12]}_"
                                    f"{hashlib.sha1(label.encode()).hexdigest()[:12]}.npy")
        if saved.exists():
            d = np.load(saved)
            if len(d) == len(self.chips):
                return d
        members = {} if members is None else members
        for s in specs:
            if s not in members:
                members[s] = self.drift(s)
        d = np.mean([members[s] for s in specs], axis=0)
        np.save(saved, d)
        return d

    def jvp_drift(self, spec) -> np.ndarray:
        """‖J n·Δθ‖ of every face (JVPSensitivity's norm), the JVP through the pruned tail only."""
        k, f = tail_jvp(self.bb.net, spec)
        acts = self.activations(k)
        out = []
        for i in range(0, len(self.chips), self.batch):
            # forward-mode AD does not run in inference mode: a plain copy of the cached activation
            h = self.bb.prepare(self.chips[i:i + self.batch]) if acts is None else acts[i:i + self.batch].clone()
            out.append(f(h).double().numpy())
        return np.concatenate(out)

    def cost(self, specs) -> float:
        total = sum(self.macs)
        return 1.0 + sum(sum(self.macs[start_index(self.stages, s.start):]) / total for s in specs)

    def baseline(self, method) -> np.ndarray:
        if isinstance(method, EmbeddingNorm):  # the same number the method computes, from the dense pass
            return self.raw_norm
        if isinstance(method, JVPSensitivity):  # the same number, the trunk shared with the pruned tails
            return quality_from_drift(np.mean([self.jvp_drift(s) for s in method.specs], axis=0))
        det = self.faces.detections
        sizes = np.minimum(det["boxes"][:, 2] - det["boxes"][:, 0], det["boxes"][:, 3] - det["boxes"][:, 1])
        out = [method.score(self.chips[i:i + self.batch], sizes[i:i + self.batch], det["scores"][i:i + self.batch])
               for i in range(0, len(self.chips), self.batch)]
        return np.concatenate(out)

    # ---- metrics ------------------------------------------------------------------------------
    def pair_quality(self, quality: np.ndarray, half: Half) -> np.ndarray:
        return np.minimum(quality[half.pairs.a], quality[half.pairs.b])

    def nauc(self, quality, half: "str | Half", fmr: float = 1e-3, limit: float = 0.2, boot: bool = False):
        """Normalised fixed-threshold pAUC on a half (by name, or any :meth:`half_of`), and its
        bootstrap replicates when ``boot``."""
        h = self.halves[half] if isinstance(half, str) else half
        pq, err = self.pair_quality(quality, h), h.errors(fmr)
        area, e0 = weighted_pauc(pq, err, np.ones(len(pq)), limit)
        value = float(area[0] / (e0[0] * limit))
        if not boot:
            return value
        areas, e0s = weighted_pauc(pq, err, h.boot, limit)
        return value, areas / (e0s * limit)

    def full_metrics(self, quality, half: str = "B") -> dict:
        """Every column of the paper-style table, with the project's own ``edc``/``pauc``."""
        h = self.halves[half]
        pq_gen = self.pair_quality(quality, h)
        out = {}
        for fmr in FMRS:
            for conv in ("fixed", "per_level"):
                if conv == "fixed":
                    curve = edc(np.concatenate([h.pairs.genuine, h.pairs.impostor]),
                                np.r_[np.ones(len(pq_gen), bool), np.zeros(len(h.pairs.impostor), bool)],
                                np.concatenate([pq_gen, np.zeros(len(h.pairs.impostor))]), fmr, "fixed")  # unused by "fixed"
                else:
                    curve = self._per_level(quality, h, pq_gen, fmr)
                e0 = float(curve.fnmr[0])
                for lim in (0.2, 0.3):
                    a = pauc(curve, lim)
                    out[f"{conv}_{fmr:g}_pauc{int(lim * 100)}"] = a
                    out[f"{conv}_{fmr:g}_npauc{int(lim * 100)}"] = a / (e0 * lim) if e0 > 0 else float("nan")
                out[f"{conv}_{fmr:g}_fnmr0"] = e0
        return out

    def _per_level(self, quality, h: Half, pq_gen, fmr):
        pq_imp = impostor_qualities(quality, h.pairs)
        return edc(np.concatenate([h.pairs.genuine, h.pairs.impostor]),
                   np.r_[np.ones(len(pq_gen), bool), np.zeros(len(pq_imp), bool)],
                   np.concatenate([pq_gen, pq_imp]), fmr, "per_level")


def rank01(x: np.ndarray) -> np.ndarray:
    """Ranks of ``x`` over the whole set, scaled to (0, 1] (ties share their mean rank): how the
    studies add signals on different scales."""
    from scipy.stats import rankdata
    return rankdata(x) / len(x)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its length."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def halves_bench(doc: str, backbone: str, argv=None, prune: bool = False, extra=None):
    """The command line shared by the small A/B studies (``combine.py``, ``flip_drift.py``): the
    identity folder, ``--backbone``, ``--cache``, ``--reps`` (and ``--prune`` when asked; ``extra(ap)``
    adds a study's own options). Returns the parsed arguments and the bench."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_DIR), help="identity folder (default: %(default)s)")
    ap.add_argument("--backbone", default=backbone)
    if prune:
        ap.add_argument("--prune", default=None, help="pruning spec string (default: the backbone's default)")
    ap.add_argument("--cache", default="out/lfw/cache", help="the LFW benchmark's cache (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--max-people", type=int, help="only the first N people (a quick run)")
    ap.add_argument("--comparator", choices=COMPARATORS, default="cosine",
                    help="how the recogniser compares faces: cosine of the unit embeddings (default), or "
                         "the Euclidean distance of the raw embeddings (dlib's own comparison)")
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    if not Path(args.folder).is_dir():
        raise SystemExit(f"error: identity folder {args.folder} not found (give the LFW development folder's path)")
    return args, LFWBench(Path(args.folder), load_backbone(args.backbone), Path(args.cache),
                          getattr(args, "max_per_person", 20), reps=args.reps,
                          log=lambda m: print(m, file=sys.stderr, flush=True), max_people=args.max_people,
                          comparator=args.comparator)


def paired_interval(reps: np.ndarray, reps_ref: np.ndarray) -> tuple[float, float, float]:
    """95 % interval of the difference of two qualities' bootstrap replicates drawn on the same
    resamples, and the share of resamples where the first is lower (better)."""
    d = np.asarray(reps, float) - np.asarray(reps_ref, float)
    lo, hi = np.nanpercentile(d, [2.5, 97.5])
    return float(lo), float(hi), float(np.mean(d[~np.isnan(d)] < 0))


def print_halves_table(bench: "LFWBench", qualities: dict, halves=("A", "B")) -> None:
    """One markdown row per quality: nAUC20 on halves A and B (or ``halves``) with their bootstrap
    95 % intervals, and the difference from the first row with its paired interval (same resampled
    people; negative = better than the first row; P = share of resamples where it is better)."""
    ref = next(iter(qualities.values()))
    # the first row's replicates once per half; every row's own replicates serve both its columns
    ref_boot = {half: bench.nauc(ref, half, boot=True) for half in halves}
    head = ["quality"]
    for i, half in enumerate(halves):
        head += [f"{half}: nAUC20 (95 % CI)",
                 f"{half}: Δ vs first row (paired" + (" 95 % CI; P better)" if i == 0 else ")")]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, q in qualities.items():
        cells = []
        for half in halves:
            v, reps = bench.nauc(q, half, boot=True)
            lo, hi = np.nanpercentile(reps, [2.5, 97.5])
            cells.append(f"{v:.3f} ({lo:.3f}–{hi:.3f})")
            if q is ref:
                cells.append("–")
            else:
                v0, reps0 = ref_boot[half]
                dlo, dhi, p = paired_interval(reps, reps0)
                cells.append(f"{v - v0:+.3f} ({dlo:+.3f}…{dhi:+.3f}; {p:.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def _tqdm(it, total=None, desc=None):
    from tqdm import tqdm
    return tqdm(it, total=total, desc=desc, mininterval=15, file=sys.stderr)


def product_combined(bench: LFWBench, drift: np.ndarray, specs) -> tuple[str, np.ndarray] | None:
    """``(label, values)``: the product's per-face ``combined`` value of every face
    (``prefiqs_core.combined``, from the shipped calibration table and detector reference), or None
    where the shipped table is not for this backbone, pruning and weights. A face the detector
    missed (the fixed box) counts at the detector reference's percentile 0."""
    from prefiqs_core.calibration import resolve
    from prefiqs_core.combined import combined_values, shipped_detector_reference

    cal, _ = resolve(bench.bb.name, format_prune(specs), bench.bb.source_sha256)
    if cal is None:
        return None
    det = np.nan_to_num(np.asarray(bench.faces.detections["scores"], np.float64), nan=-np.inf)
    values = combined_values(cal, shipped_detector_reference(), quality_from_drift(drift), det, bench.dense)
    parts = "PreFIQs + detector score" + (" + distinctiveness" if cal.distinctiveness is not None else "")
    return f"combined ({parts})", values


def run(bench: LFWBench, settings: dict, baselines: dict, full: bool = True, combined: bool = False) -> list[dict]:
    """Scores every setting (PreFIQs spec lists) and baseline; one dict per row. ``combined``: also the
    product's ``combined`` value beside each setting that has shipped tables (the default's)."""
    rows = []
    drift_cache: dict = {}
    for label, specs in settings.items():
        t = time.time()
        drift = bench.mean_drift(specs, drift_cache)
        rows.append(_row(bench, label, "prefiqs", quality_from_drift(drift), bench.cost(specs), full, time.time() - t))
        comb = product_combined(bench, drift, specs) if combined else None
        if comb is not None:
            rows.append(_row(bench, comb[0], "combined", comb[1], bench.cost(specs), full, time.time() - t))
    for name, m in baselines.items():
        t = time.time()
        rows.append(_row(bench, name, "baseline", bench.baseline(m), m.forwards_per_face, full, time.time() - t))
    return rows


def _row(bench, label, kind, q, cost, full, seconds) -> dict:
    a = bench.nauc(q, "A")
    b, boot = bench.nauc(q, "B", boot=True)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    r = dict(label=label, kind=kind, cost=cost, A=a, B=b, B_lo=lo, B_hi=hi, seconds=seconds, quality=q,
             boot=boot)
    if full:
        r |= bench.full_metrics(q, "B")
    bench.log(f"  {label:<52} A {a:.3f}  B {b:.3f} [{lo:.3f}, {hi:.3f}]  cost {cost:.2f}  ({seconds:.0f} s)")
    return r


def table(rows, default_label=None) -> str:
    lines = ["| quality | cost (dense fwd) | A: nAUC20 @1e-3 | **B: nAUC20 @1e-3** (95 % CI) | B: nAUC30 @1e-3 | "
             "B: nAUC20 @1e-4 | B: per-level nAUC20 @1e-3 | B: per-level pAUC20 @1e-3 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"**{r['label']} (default)**" if r["label"] == default_label else r["label"]
        extra = [r.get(k, float("nan")) for k in ("fixed_0.001_npauc30", "fixed_0.0001_npauc20",
                                                    "per_level_0.001_npauc20", "per_level_0.001_pauc20")]
        lines.append(f"| {name} | {r['cost']:.2f} | {r['A']:.3f} | {r['B']:.3f} ({r['B_lo']:.3f}–{r['B_hi']:.3f}) | "
                     + " | ".join(f"{v:.3f}" if k < 3 else f"{v:.4f}" for k, v in enumerate(extra)) + " |")
    return "\n".join(lines)


def display_label(label: str) -> str:
    """A row's label for a legend: seed copies written once (``short_prune``); a trailing
    "(...)" note and baselines' names stay as they are."""
    base, sep, rest = label.partition(" (")
    try:
        base = short_prune(parse_prune(base))
    except ValueError:
        pass
    return base + sep + rest


def plot(bench: LFWBench, rows, path, half="B", fmr=1e-3):
    """EDC curves (fixed threshold) of the given rows on one half."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = bench.halves[half]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        pq = bench.pair_quality(r["quality"], h)
        order = np.argsort(pq, kind="stable")
        err = h.errors(fmr)[order]
        n = len(err)
        kept_err = err.sum() - np.r_[0, np.cumsum(err)]
        x = np.arange(n + 1) / n
        y = np.divide(kept_err, n - np.arange(n + 1), out=np.zeros(n + 1), where=np.arange(n + 1) < n)
        ax.plot(x[:-1], y[:-1], label=f"{display_label(r['label'])} ({r['B']:.2f})",
                lw=2 if r["kind"] == "prefiqs" else 1.2)
    ax.set_xlim(0, 0.3)
    top = max(float(np.max(line.get_ydata()[line.get_xdata() <= 0.3])) for line in ax.get_lines())
    ax.set_ylim(0, 1.1 * top)
    ax.set_xlabel("fraction of genuine pairs discarded (lowest quality first)")
    ax.set_ylabel(f"FNMR at FMR {fmr:g} (fixed threshold)")
    ax.set_title(f"{bench.bb.name}, LFW development people, half {half} (held out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="quality (nAUC20)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_DIR), help="identity folder (default: %(default)s)")
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--checkpoint")
    ap.add_argument("--prune", action="append", default=[], help="spec string(s) to compare (default: the "
                    "backbone's default)")
    ap.add_argument("--baselines", default=",".join(BASELINES), help="comma list ('' for none)")
    ap.add_argument("--max-per-person", type=int, default=20)
    ap.add_argument("--max-people", type=int, help="only the first N people (a quick run)")
    ap.add_argument("--reps", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--out", default="out/lfw")
    ap.add_argument("--no-combined", action="store_true", help="leave out the product's combined value (shown "
                    "beside a setting whose shipped calibration table applies)")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        raise SystemExit(f"error: identity folder {folder} not found (give the LFW development folder's path)")
    bb = load_backbone(args.backbone, args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = LFWBench(folder, bb, out / "cache", args.max_per_person, reps=args.reps,
                     log=lambda m: print(m, file=sys.stderr, flush=True), max_people=args.max_people)
    default = format_prune(default_pruning(bb.name))
    specs = args.prune or [default]
    settings = {}
    for s in specs:
        try:
            settings[format_prune(parse_prune(s))] = parse_prune(s)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    names = [n for n in args.baselines.split(",") if n]
    baselines = available_methods(bb, names) if names else {}
    rows = run(bench, settings, baselines, combined=not args.no_combined)
    md = table(rows, default)
    (out / f"lfw_{bb.name}.md").write_text(md + "\n")
    (out / f"lfw_{bb.name}.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k not in ("quality", "boot")} for r in rows], indent=1))
    plot(bench, rows, out / f"lfw_edc_{bb.name}.png")
    print(md)
    print(f"\ntables and EDC plot in {out}/", file=sys.stderr)


if __name__ == "__main__":
    main()
