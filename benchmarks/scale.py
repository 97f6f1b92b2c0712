#!/usr/bin/env python
"""Scale: PreFIQs over many faces streams in bounded memory, writes in bulk, and says how fast.

Synthetic faces are the real demo chips with jitter (mirror, ±3 px shift, ±10 % brightness, as in
speed.py), made one batch at a time so that the input itself never grows with the run.

    python benchmarks/scale.py --engine-only --faces 20000     # engine streaming alone (no FiftyOne)
    python benchmarks/scale.py --plugin --faces 20000 --umap   # a FiftyOne dataset of N samples

``--engine-only`` streams chips through ``pipeline.score_images`` into a CSV. ``--plugin`` builds a
dataset of N samples whose files are a small pool of chip images (``--files``, reused to keep the
disk small), runs ``compute_prefiqs(aligned=True)`` (one bulk write per field per batch) and, with
``--umap``, the joint UMAP (PCA to 50 dimensions first, UMAP in its low-memory mode). Resident
memory (RSS) of this process is sampled at 10 %, 50 % and 100 % of the faces (with
``--faces 100000``: at 10k, 50k and 100k); it must stay flat. Figures are printed as a markdown table.
The default, 5,000 faces, fits a 2-core CPU (dlib ResNet-29 scores ~12-25 faces/s there).
"""
from __future__ import annotations

import argparse
import atexit
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.fo_processes import private_fiftyone  # noqa: E402


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2 ** 20


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def jitter(chip: np.ndarray, rng) -> np.ndarray:
    if rng.random() < 0.5:
        chip = chip[:, ::-1]
    chip = np.roll(chip, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    return np.clip(chip * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def marks(n: int) -> list[int]:
    return sorted({max(1, n // 10), max(1, n // 2), n})


class Recorder:
    """Time, faces/s and memory at each mark."""

    def __init__(self, n: int):
        self.todo = marks(n)
        self.rows = []
        self.t0 = time.perf_counter()

    def update(self, done: int):
        while self.todo and done >= self.todo[0]:
            dt = time.perf_counter() - self.t0
            self.rows.append((self.todo.pop(0), dt, done / dt, rss_mb(), peak_mb()))


def table(title: str, rows) -> str:
    out = [f"\n**{title}**\n", "| faces | elapsed (s) | faces/s | RSS (MiB) | peak RSS (MiB) |",
           "|---:|---:|---:|---:|---:|"]
    out += [f"| {n:,} | {dt:.1f} | {rate:.1f} | {rss:.0f} | {peak:.0f} |" for n, dt, rate, rss, peak in rows]
    return "\n".join(out)


def real_chips(backbone):
    from prefiqs_core.demo import collect_demo_chips

    chips, _, _ = collect_demo_chips(backbone.preprocess)
    return np.stack(chips)


def engine_only(args) -> str:
    from prefiqs_core.backbones import load_backbone
    from prefiqs_core.pipeline import ImageFaces, score_images
    from prefiqs_core.scoring import PreFIQs

    backbone = load_backbone(args.backbone)
    scorer = PreFIQs(backbone, device=args.device)
    base = real_chips(backbone)
    rng = np.random.default_rng(0)

    def images():  # a generator: chips exist only while their batch is pending
        for i in range(args.faces):
            chip = jitter(base[i % len(base)], rng)
            yield ImageFaces(f"synthetic/{i:07d}", chip[None], [None], [None], (chip.shape[1], chip.shape[0]))

    rec = Recorder(args.faces)
    n = 0
    with tempfile.TemporaryDirectory() as d, open(Path(d) / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        for row in score_images(scorer, images(), args.batch):
            w.writerow([row.path, f"{row.drift:.6f}", f"{row.quality:.6f}"])
            n += 1
            rec.update(n)
    return table(f"engine only: {args.faces:,} faces, {backbone.name}, batch {args.batch}, "
                 f"{torch_threads()} torch threads", rec.rows)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def plugin(args) -> str:
    tmp = tempfile.mkdtemp(prefix="prefiqs-scale-")
    atexit.register(shutil.rmtree, tmp, True)  # the chip pool; runs after the database has stopped
    private_fiftyone(Path(tmp) / "fo", ROOT)  # before fiftyone is imported: it reads its config then
    import importlib

    import fiftyone as fo
    import fiftyone.operators as foo
    from PIL import Image

    foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")  # loads the plugin package
    pkg = "fiftyone.plugins.orgs.prefiqs.prefiqs.operators"
    scoring = importlib.import_module(f"{pkg}.scoring")
    visualization = importlib.import_module(f"{pkg}.visualization")
    from prefiqs_core.backbones import load_backbone

    base = real_chips(load_backbone(args.backbone))
    rng = np.random.default_rng(0)
    pool = []
    for i in range(args.files):
        pool.append(os.path.join(tmp, f"chip_{i:05d}.png"))
        Image.fromarray(jitter(base[i % len(base)], rng)).save(pool[-1])

    ds = fo.Dataset(f"prefiqs-scale-{os.getpid()}")
    t = time.perf_counter()
    for start in range(0, args.faces, 10000):
        ds.add_samples([fo.Sample(filepath=pool[i % len(pool)]) for i in range(start, min(args.faces, start + 10000))],
                       progress=False)
    t_add = time.perf_counter() - t
    rec = Recorder(args.faces)
    res = scoring.compute_prefiqs(ds, aligned=True, batch_size=args.batch, device=args.device,
                                  progress=lambda frac, label: rec.update(round(frac * args.faces)))
    assert res["num_scored"] == args.faces, res
    out = [table(f"plugin: compute_prefiqs on a dataset of {args.faces:,} samples ({args.files} chip files "
                 f"reused; dataset built in {t_add:.0f} s), batch {args.batch}", rec.rows)]
    if args.umap:
        t = time.perf_counter()
        info = visualization.compute_prefiqs_visualization(ds, seed=51)
        dt = time.perf_counter() - t
        out.append(f"\njoint UMAP of {2 * info['num_points']:,} embeddings (PCA {info['pca_dims']} first: "
                   f"{info['pca']}): {dt:.0f} s, RSS {rss_mb():.0f} MiB, peak {peak_mb():.0f} MiB")
    ds.delete()
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--engine-only", action="store_true", help="the engine's streaming alone (default)")
    mode.add_argument("--plugin", action="store_true", help="the FiftyOne path on a dataset of --faces samples")
    ap.add_argument("--faces", type=int, default=5_000,
                    help="faces to score (default sized for a 2-core CPU; 100000 gives the 10k/50k/100k marks)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--files", type=int, default=256, help="--plugin: distinct chip files shared by the samples")
    ap.add_argument("--umap", action="store_true", help="--plugin: also time the joint UMAP")
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    print(f"start: RSS {rss_mb():.0f} MiB; {os.cpu_count()} CPUs", file=sys.stderr)
    print(plugin(args) if args.plugin else engine_only(args))


if __name__ == "__main__":
    main()
