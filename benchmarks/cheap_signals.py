"""Cheap signals beside the drift: does anything that costs a fraction of a forward, or nothing,
bring dlib's errors to the 0.80 aimed for? Scored like the sweep on LFW-dev halves A and B (nAUC20,
fixed threshold, FMR 1e-3, people-level bootstrap 95 % intervals; Δ against the first row, the
backbone's default PreFIQs, on the same resampled people). Choose on A; B is the held-out half.

    python benchmarks/cheap_signals.py ../shared/data/lfw_dev --backbone dlib_resnet29 [--sizes 136,120,104]

Three families:

- **Where the drift is measured.** The default's dense and pruned tails, compared at the pooled
  feature the embedding layer reads (unit vectors), as raw embeddings (not normalised), as the raw
  distance over the dense norm, and by the ratio of the two norms alone.
- **Resolution consistency.** ‖n(x) − n(resize(x))‖: the dense embedding of the chip against that of
  the chip resized to ``--sizes`` px (antialiased), alone and added to the drift per face. A smaller
  chip costs a fraction of a forward (dlib's network needs at least 104 px). ``--mirror-sizes`` adds
  the mirror image at that size against the photo's embedding.
- **Pose from the 5 landmarks** (free: the detector gives them): the nose's offset along the eye axis
  over the eye distance (yaw), across it (pitch, from the median), the log ratio of the two eyes'
  widths, and the RMS residual of the similarity fit to the alignment template (how far the points
  are from a frontal face's), alone and by rank sum with the drift and the detector score.

A study: the product's score stays the drift (README, *How the defaults were chosen*).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lfw import LFWBench, halves_bench, print_halves_table, rank01, unit_rows  # noqa: E402
from prefiqs_core.alignment import get_template, similarity_transform  # noqa: E402
from prefiqs_core.defaults import default_pruning  # noqa: E402
from prefiqs_core.pruning import format_prune, prune_tail  # noqa: E402
from prefiqs_core.scoring import quality_from_drift  # noqa: E402


# ---- where the drift is measured -----------------------------------------------------------------

@torch.inference_mode()
def tail_outputs(tail: nn.Module, acts: torch.Tensor, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pooled, raw)`` of every face through ``tail``: the input of its last linear layer (what the
    embedding layer reads) and the raw embedding, both float64."""
    linear = [m for m in tail.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("the tail has no linear layer: nothing to read the pooled feature from")
    pooled, raw = [], []
    hook = linear[-1].register_forward_pre_hook(lambda m, a: pooled.append(a[0].reshape(len(a[0]), -1).clone()))
    try:
        for i in range(0, len(acts), batch):
            raw.append(tail(acts[i:i + batch]).reshape(len(acts[i:i + batch]), -1))
    finally:
        hook.remove()
    return torch.cat(pooled).double().numpy(), torch.cat(raw).double().numpy()


def space_distances(dense: tuple, pruned: tuple) -> dict[str, np.ndarray]:
    """Per-face distances between the dense and pruned ``(pooled, raw)`` outputs (larger = worse)."""
    (pd, rd), (pp, rp) = dense, pruned
    nd, np_ = np.linalg.norm(rd, axis=1), np.linalg.norm(rp, axis=1)
    return {
        "drift (unit embeddings, the product's)": np.linalg.norm(unit_rows(rd) - unit_rows(rp), axis=1),
        "pooled feature drift (unit)": np.linalg.norm(unit_rows(pd) - unit_rows(pp), axis=1),
        "raw embedding drift": np.linalg.norm(rd - rp, axis=1),
        "raw embedding drift / dense norm": np.linalg.norm(rd - rp, axis=1) / nd,
        "|log(pruned norm / dense norm)|": np.abs(np.log(np_ / nd)),
    }


# ---- resolution consistency ----------------------------------------------------------------------

def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@torch.inference_mode()
def rescaled_embeddings(bench: LFWBench, size: int, mirror: bool = False) -> np.ndarray:
    """Unit dense embeddings of every chip resized to ``size`` px (and mirrored when ``mirror``)."""
    out = []
    for _, x in bench._batches():
        x = x.flip(-1) if mirror else x
        out.append(F.normalize(bench.bb.net(resize(x, size)).float(), dim=1).numpy())
    return np.concatenate(out)


def rescaled_cost(bench: LFWBench, size: int) -> float:
    """Multiply-accumulates of one forward at ``size`` px over one at the network's own size."""
    from prefiqs_core.trunk import stage_macs

    with torch.inference_mode():
        return sum(stage_macs(bench.stages, torch.zeros(1, 3, size, size))) / sum(bench.macs)


# ---- pose from the 5 landmarks -------------------------------------------------------------------

def landmark_geometry(points: np.ndarray, template: np.ndarray) -> dict[str, np.ndarray]:
    """Pose cues of ``(N, 5, 2)`` dlib-order points (two corners of one eye, two of the other, the
    nose): ``yaw`` |nose offset along the eye axis| / eye distance, ``pitch`` the signed offset
    across it / eye distance, ``eye_asymmetry`` |log| of the eyes' width ratio, ``residual`` the RMS
    distance (template px) of the points from the template's after the best similarity fit."""
    p = np.asarray(points, np.float64)
    e1, e2, nose = p[:, 0:2].mean(1), p[:, 2:4].mean(1), p[:, 4]
    axis = e2 - e1
    iod = np.linalg.norm(axis, axis=1)
    u = axis / iod[:, None]
    across = np.stack([-u[:, 1], u[:, 0]], 1)
    rel = nose - (e1 + e2) / 2
    w1, w2 = np.linalg.norm(p[:, 0] - p[:, 1], axis=1), np.linalg.norm(p[:, 2] - p[:, 3], axis=1)
    t = np.asarray(template, np.float64)
    residual = np.empty(len(p))
    for i, pts in enumerate(p):
        m = similarity_transform(pts, t)
        residual[i] = np.sqrt((((pts @ m[:, :2].T + m[:, 2]) - t) ** 2).sum(1).mean())
    return {"yaw": np.abs((rel * u).sum(1)) / iod, "pitch": (rel * across).sum(1) / iod,
            "eye_asymmetry": np.abs(np.log(w1 / w2)), "residual": residual}


# ---- the table -----------------------------------------------------------------------------------

def main(argv=None):
    def extra(ap):
        ap.add_argument("--sizes", default="136,120,104", help="chip sizes for resolution consistency (px)")
        ap.add_argument("--mirror-sizes", default="104", help="sizes at which the mirror image is also tried")

    args, bench = halves_bench(__doc__, "dlib_resnet29", argv, extra=extra)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    mirror_sizes = [int(s) for s in args.mirror_sizes.split(",") if s]
    specs = default_pruning(bench.bb.name)
    drift = bench.mean_drift(specs)
    q = quality_from_drift(drift)
    rows = {f"PreFIQs, {format_prune(specs)} (the default)": q}
    costs = {}

    # the drift's space: the default's first copy (dlib's default is one copy)
    k, tail, _ = prune_tail(bench.bb.net, specs[0])
    acts = bench.activations(k)
    if acts is None:
        raise SystemExit("error: the default prunes from the input; this study reads the cached trunk activation")
    dense_tail = nn.Sequential(*[m for _, m in bench.stages[k:]])
    spaces = space_distances(tail_outputs(dense_tail, acts, bench.batch), tail_outputs(tail, acts, bench.batch))
    for name, d in list(spaces.items())[1:]:
        rows[f"{format_prune(specs[:1])}: {name}"] = -d

    for s in sizes:
        r = np.linalg.norm(bench.dense - rescaled_embeddings(bench, s), axis=1)
        costs[s] = rescaled_cost(bench, s)
        rows[f"resolution: ‖n(x) − n(x at {s} px)‖ alone ({costs[s]:.2f} fwd)"] = -r
        rows[f"per face: drift + resolution {s} px / 2 (+{costs[s]:.2f} fwd)"] = -(drift + r / 2)
        rows[f"per face: drift + resolution {s} px"] = -(drift + r)
        if s in mirror_sizes:
            m = np.linalg.norm(bench.dense - rescaled_embeddings(bench, s, mirror=True), axis=1)
            rows[f"mirror at {s} px: ‖n(x) − n(mirror x at {s} px)‖ alone"] = -m
            rows[f"per face: drift + mirror at {s} px / 2"] = -(drift + m / 2)

    det = bench.faces.detections
    geo = landmark_geometry(det["landmarks"], get_template(bench.bb.preprocess.template).landmarks("dlib5"))
    det_score = np.nan_to_num(det["scores"], nan=-np.inf)  # a missed face ranks lowest, as the baseline does
    pose = {"yaw": -geo["yaw"], "pitch (from the median)": -np.abs(geo["pitch"] - np.median(geo["pitch"])),
            "eye width asymmetry": -geo["eye_asymmetry"], "5-point fit residual": -geo["residual"]}
    for name, v in pose.items():
        rows[f"pose: {name} alone"] = v
    rows["rank sum: PreFIQs + yaw"] = rank01(q) + rank01(pose["yaw"])
    rows["rank sum: PreFIQs + 5-point residual"] = rank01(q) + rank01(pose["5-point fit residual"])
    rows["rank sum: PreFIQs + detector score"] = rank01(q) + rank01(det_score)
    rows["rank sum: PreFIQs + detector score + 5-point residual"] = (
        rank01(q) + rank01(det_score) + rank01(pose["5-point fit residual"]))
    rows["rank sum: PreFIQs + detector score + yaw"] = rank01(q) + rank01(det_score) + rank01(pose["yaw"])
    print(f"{bench.bb.name}; Spearman with the drift: yaw {np.corrcoef(rank01(drift), rank01(geo['yaw']))[0, 1]:.2f}, "
          f"5-point residual {np.corrcoef(rank01(drift), rank01(geo['residual']))[0, 1]:.2f}")
    print_halves_table(bench, rows)


if __name__ == "__main__":
    main()
