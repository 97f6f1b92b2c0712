#!/usr/bin/env python
"""Speed of PreFIQs against its floor, measured in one run on the same batch.

1. model-only: one dense forward of a prepared batch (the unit of cost);
2. PreFIQs: dense + pruned forwards, normalisation and drift on the same batch; its cost in dense
   forwards must be <= 1.05 x (1 + number of pruned copies), that count being the floor;
3. end to end on pre-aligned chips: the CLI's path (files → decode in DataLoader workers → batches →
   scores), faces per second against the model-only PreFIQs rate of step 2 (target >= 80 %).

    python benchmarks/speed.py [--backbone dlib_resnet29] [--batch 64] [--faces 512] [--device cpu]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prefiqs_core.backbones import load_backbone  # noqa: E402
from prefiqs_core.demo import collect_demo_chips  # noqa: E402
from prefiqs_core.pipeline import ChipDataset, iter_images, score_images  # noqa: E402
from prefiqs_core.scoring import PreFIQs  # noqa: E402


def timed_pair(fa, fb, reps: int, device, clock=time.perf_counter) -> tuple[float, float, float]:
    """Median seconds of ``fa()`` and ``fb()``, measured alternately so that both see the same
    machine load, and the median of the per-repetition ratios fb/fa. ``clock=time.process_time``
    counts this process's CPU time instead of wall time (steadier on a shared machine)."""
    def once(fn):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        t = clock()
        fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize()
        return clock() - t

    fa(), fb()  # warm-up
    ta, tb = [], []
    for _ in range(reps):
        ta.append(once(fa))
        tb.append(once(fb))
    ratios = np.array(tb) / np.array(ta)
    return float(np.median(ta)), float(np.median(tb)), float(np.median(ratios))


def jittered(chips: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` chips from the real ones: random mirror, ±3 px shift, ±10 % brightness."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = chips[i % len(chips)]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        c = np.roll(c, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        out.append(np.clip(c * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8))
    return np.stack(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--checkpoint")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--faces", type=int, default=512, help="chips written to disk for the end-to-end run")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    backbone = load_backbone(args.backbone, args.checkpoint)
    scorer = PreFIQs(backbone, device=device)
    real, _, _ = collect_demo_chips(backbone.preprocess)
    chips = jittered(np.stack(real), max(args.faces, args.batch))
    x = backbone.prepare(chips[:args.batch], device)
    print(f"device {device} ({torch.get_num_threads()} torch threads), backbone {backbone.name}, "
          f"batch {args.batch}, pruned copies {len(scorer.pruned)}")

    with torch.inference_mode():
        t_dense, t_prefiqs, cost = timed_pair(lambda: scorer.dense(x), lambda: scorer.score_tensor(x),
                                              args.reps, device)
    floor = scorer.forwards_per_face
    model_rate = args.batch / t_prefiqs
    print(f"dense forward        {1e3 * t_dense / args.batch:8.2f} ms/face  ({args.batch / t_dense:8.1f} faces/s)")
    print(f"PreFIQs (model only) {1e3 * t_prefiqs / args.batch:8.2f} ms/face  ({model_rate:8.1f} faces/s)")
    print(f"PreFIQs cost = {cost:.3f} dense forwards; floor {floor}; limit 1.05 x {floor} = {1.05 * floor:.2f}: "
          f"{'OK' if cost <= 1.05 * floor else 'OVER'}")

    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(chips[:args.faces]):
            Image.fromarray(c).save(f"{d}/chip_{i:05d}.jpg", quality=95)
        paths = sorted(Path(d).glob("*.jpg"))
        ds = ChipDataset(paths, backbone.preprocess, "aligned")
        list(score_images(scorer, iter_images(ChipDataset(paths[:args.batch], backbone.preprocess, "aligned"),
                                              args.workers, args.batch), args.batch))  # warm-up, workers' first fork
        t = time.perf_counter()
        n = sum(1 for r in score_images(scorer, iter_images(ds, args.workers, args.batch), args.batch)
                if r.error is None)
        t_e2e = time.perf_counter() - t
        e2e_rate = n / t_e2e
        print(f"end to end (decode in workers + PreFIQs) on {n} JPEG chips: {e2e_rate:8.1f} faces/s = "
              f"{100 * e2e_rate / model_rate:.0f} % of the model-only rate (target >= 80 %)")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prefiqs_core", "score", d, "--aligned", "--quiet", "--out",
                        f"{d}/scores.csv", "--backbone", args.backbone, "--batch-size", str(args.batch),
                        "--device", args.device] + (["--checkpoint", args.checkpoint] if args.checkpoint else []),
                       check=True, cwd=ROOT)
        t_cli = time.perf_counter() - t
        print(f"CLI process, start to exit, {n} chips: {t_cli:.1f} s ({n / t_cli:.1f} faces/s incl. start-up "
              "and pruning)")


if __name__ == "__main__":
    main()
