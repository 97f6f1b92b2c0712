#!/usr/bin/env python
"""Time and memory of the IJB-C protocol handling at full size, without the images: meta files of
IJB-C's size (227,630 faces, 23,124 templates, 15.66 M template pairs) are written with random
content in IJB-C's format, then read (``prefiqs_core.evaluation.ijb.read_ijb``), sub-sampled, and the
templates aggregated from random 512-D embeddings (``aggregate_templates``) and compared.

    python benchmarks/ijb_meta.py                   # full IJB-C size
    python benchmarks/ijb_meta.py --scale 0.01      # a hundredth of it
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prefiqs_core.evaluation.ijb import read_ijb  # noqa: E402
from prefiqs_core.evaluation.pairs import aggregate_templates, template_pair_similarities  # noqa: E402

FACES, TEMPLATES, PAIRS, MEDIA = 227_630, 23_124, 15_658_489, 120_000


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_meta(folder: Path, faces: int, templates: int, pairs: int, media: int, rng) -> None:
    meta = folder / "meta"
    meta.mkdir(parents=True)
    (folder / "loose_crop").mkdir()
    tids = np.sort(rng.integers(1, templates + 1, faces))
    tids[:templates] = np.arange(1, templates + 1)  # every template has a face
    tids.sort()
    mids = rng.integers(1, media + 1, faces)
    names = [f"{i + 1}.jpg" for i in range(faces)]
    pts = rng.uniform(20, 200, (faces, 10))
    score = rng.uniform(0.5, 1.0, faces)
    with open(meta / "ijbc_face_tid_mid.txt", "w") as f:
        f.writelines(f"{n} {t} {m}\n" for n, t, m in zip(names, tids, mids))
    with open(meta / "ijbc_name_5pts_score.txt", "w") as f:
        f.writelines(f"{n} " + " ".join(f"{v:.3f}" for v in p) + f" {s:.4f}\n" for n, p, s in zip(names, pts, score))
    t = rng.integers(1, templates + 1, (pairs, 2))
    lab = (rng.random(pairs) < 19_557 / PAIRS).astype(np.int64)
    np.savetxt(meta / "ijbc_template_pair_label.txt", np.column_stack([t, lab]), fmt="%d")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C's size (default 1)")
    ap.add_argument("--dim", type=int, default=512, help="embedding size (default 512, as ArcFace)")
    ap.add_argument("--max-pairs", type=int, default=200_000, help="pairs kept by the subset step")
    ap.add_argument("--write", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    n = lambda v: max(2, int(v * args.scale))  # noqa: E731
    faces, templates, pairs, media = n(FACES), n(TEMPLATES), n(PAIRS), n(MEDIA)
    rng = np.random.default_rng(0)
    if args.write:
        write_meta(Path(args.write) / "IJBC", faces, templates, pairs, media, rng)
        return
    rows = []
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        # written by a child process, so that its memory does not count in this one's peak
        subprocess.run([sys.executable, __file__, "--write", d, "--scale", str(args.scale)], check=True)
        print(f"wrote {faces} faces / {templates} templates / {pairs} pairs in {time.perf_counter() - t:.0f} s "
              "(not counted)", file=sys.stderr)
        base = peak_mib()
        t = time.perf_counter()
        proto = read_ijb(d)
        rows.append(("read_ijb", time.perf_counter() - t, peak_mib()))
        t = time.perf_counter()
        sub = proto.subset(args.max_pairs)
        rows.append((f"subset(max_pairs={args.max_pairs}): {len(sub.pair_label)} pairs, {len(sub)} faces",
                     time.perf_counter() - t, peak_mib()))
        k = max(2, templates // 10)
        t = time.perf_counter()
        sub = proto.subset(max_templates=k)
        rows.append((f"subset(max_templates={k}): {len(sub.pair_label)} pairs, {len(sub)} faces",
                     time.perf_counter() - t, peak_mib()))
    emb = rng.standard_normal((faces, args.dim), dtype=np.float32)
    q = rng.random(faces)
    rows.append((f"random {faces} x {args.dim} float32 embeddings", 0.0, peak_mib()))
    t = time.perf_counter()
    ts = aggregate_templates(emb, proto.template_ids, proto.media_ids, quality=q)
    rows.append((f"aggregate_templates ({faces} x {args.dim})", time.perf_counter() - t, peak_mib()))
    t = time.perf_counter()
    sims, ok = template_pair_similarities(ts, proto.pair_t1, proto.pair_t2)
    rows.append((f"template_pair_similarities ({int(ok.sum())} pairs)", time.perf_counter() - t, peak_mib()))
    print(f"`python benchmarks/ijb_meta.py --scale {args.scale:g}`: IJB-C-sized meta files ({faces} faces, "
          f"{templates} templates, {pairs} pairs); process peak RSS before reading: {base:.0f} MiB\n")
    print("| step | seconds | process peak RSS after (MiB) |\n|---|---|---|")
    for what, s, mib in rows:
        print(f"| {what} | {s:.1f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
