#!/usr/bin/env python
"""Speed of PreFIQs against its floor, measured in one run on the same batch.

1. model-only: one dense forward of a prepared batch (the unit of cost);
2. PreFIQs: dense + pruned forwards, normalisation and drift on the same batch; its timed cost in
   dense forwards against the multiply-accumulate count (``forwards_per_face``: 2.0 when every layer
   is pruned, 1 + the tail's share when pruning starts at a split point and the trunk is shared);
   the timed cost must stay within 1.05 x that count (+ 0.05 for the per-stage overhead);
3. the cost frontier: full-network pruning and shared-trunk pruning from several split points,
   each timed against the dense forward in one run;
4. end to end on pre-aligned chips: the CLI's path (JPEG files → decoding threads → batches → scores)
   against PreFIQs alone on the same chips already decoded and prepared, the two timed alternately
   ``--e2e-reps`` times after a warm-up of each; the ratio of rates (target >= 80 %) per repetition,
   its median and spread, with the load average; the share of the end-to-end time spent in the
   scorer (prepare + network), measured within each run and so steadier on a shared machine; and
   where the time goes (decoding, preparing the batch, the network), each timed on its own;
5. the whole ``python -m prefiqs_core score --aligned`` process on the same files, start-up included;
6. (with 2) the execution form: the same PreFIQs with the networks as loaded against the form it
   runs in (norms folded into the layers, channels-last on the CPU), alternately on the same batch.

    python benchmarks/speed.py [--backbone dlib_resnet29] [--prune SPEC] [--batch 64] [--faces 512] [--device cpu]
                               [--workers N] [--e2e-reps 3] [--e2e-only]
"""
from __future__ import annotations

import argparse
import os
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
from prefiqs_core.images import load_rgb  # noqa: E402
from prefiqs_core.pipeline import ChipDataset, decode_rgb, default_workers, iter_images, score_images  # noqa: E402
from prefiqs_core.pruning import PruneSpec, parse_prune  # noqa: E402
from prefiqs_core.scoring import PreFIQs  # noqa: E402
from prefiqs_core.trunk import split_points  # noqa: E402


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


def frontier_specs(backbone) -> list[PruneSpec]:
    """Full-network global L1 50 %, and the same from the split points whose tails are nearest to
    50 %, 25 % and 10 % of the network."""
    specs = [PruneSpec("global_l1", 0.5)]
    probe = PreFIQs(backbone, specs)
    names = split_points(backbone.net)
    total = sum(probe.stage_macs)
    share = {n: sum(probe.stage_macs[k:]) / total for k, n in enumerate(names, start=1)}
    for target in (0.5, 0.25, 0.1):
        best = min(names, key=lambda n: abs(share[n] - target))
        if all(s.start != best for s in specs):
            specs.append(PruneSpec("global_l1", 0.5, start=best))
    return specs


def frontier(backbone, x, reps, device):
    """Dense vs PreFIQs cost for full-network and shared-trunk pruning, timed alternately in one run."""
    print("cost frontier (global L1 50 %), timed on the same batch against the dense forward:")
    for spec in frontier_specs(backbone):
        s = PreFIQs(backbone, spec, device=device)
        with torch.inference_mode():
            _, _, ratio = timed_pair(lambda: s.dense_forward(x), lambda: s.score_tensor(x), reps, device)
        print(f"  {spec.label():<44} {ratio:6.3f} dense forwards timed, {s.forwards_per_face:6.3f} by MACs")


def execution_form(backbone, scorer, x, reps, device):
    """PreFIQs with the networks as loaded against their execution form (norms folded, channels-last
    on the CPU: ``prefiqs_core.inference``), the same setting on the same batch, alternately."""
    plain = PreFIQs(backbone, scorer.specs, device=device, fast=False)
    with torch.inference_mode():
        t_plain, t_fast, ratio = timed_pair(lambda: plain.score_tensor(x), lambda: scorer.score_tensor(x),
                                            reps, device)
        gap = np.abs(plain.score_tensor(x).drift - scorer.score_tensor(x).drift).max()
    n = len(x)
    print(f"execution form: networks as loaded {1e3 * t_plain / n:.2f} ms/face, folded"
          f"{' + channels-last' if device.type == 'cpu' else ''} {1e3 * t_fast / n:.2f} ms/face: "
          f"{1 / ratio:.2f}x as fast (median of {reps} alternations); largest drift difference {gap:.1e}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--checkpoint")
    ap.add_argument("--prune", help="spec string (default: the backbone's default)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--faces", type=int, default=512, help="chips written to disk for the end-to-end run")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="decoding threads (default: as the CLI)")
    ap.add_argument("--e2e-reps", type=int, default=3, help="alternate end-to-end and model-only runs")
    ap.add_argument("--e2e-only", action="store_true", help="skip steps 2 and 3 (the model-only cost, frontier)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    backbone = load_backbone(args.backbone, args.checkpoint)
    scorer = PreFIQs(backbone, parse_prune(args.prune) if args.prune else None, device=device)
    real, _, _ = collect_demo_chips(backbone.preprocess)
    chips = jittered(np.stack(real), max(args.faces, args.batch))
    x = backbone.prepare(chips[:args.batch], device)
    print(f"device {device} ({torch.get_num_threads()} torch threads), backbone {backbone.name}, "
          f"batch {args.batch}, pruning {scorer.spec_string}")

    if not args.e2e_only:
        with torch.inference_mode():
            t_dense, t_prefiqs, cost = timed_pair(lambda: scorer.dense_forward(x), lambda: scorer.score_tensor(x),
                                                  args.reps, device)
        floor = scorer.forwards_per_face
        model_rate = args.batch / t_prefiqs
        print(f"dense forward        {1e3 * t_dense / args.batch:8.2f} ms/face  ({args.batch / t_dense:8.1f} faces/s)")
        print(f"PreFIQs (model only) {1e3 * t_prefiqs / args.batch:8.2f} ms/face  ({model_rate:8.1f} faces/s)")
        limit = 1.05 * floor + 0.05
        print(f"PreFIQs cost = {cost:.3f} dense forwards (timed); by multiply-accumulates {floor:.3f}; "
              f"limit {limit:.2f}: {'OK' if cost <= limit else 'OVER'}")
        frontier(backbone, x, args.reps, device)
        execution_form(backbone, scorer, x, args.reps, device)

    with tempfile.TemporaryDirectory() as d:
        for i, c in enumerate(chips[:args.faces]):
            Image.fromarray(c).save(f"{d}/chip_{i:05d}.jpg", quality=95)
        paths = sorted(Path(d).glob("*.jpg"))
        n = end_to_end(scorer, backbone, chips[:args.faces], paths, args, device)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prefiqs_core", "score", d, "--aligned", "--quiet", "--out",
                        f"{d}/scores.csv", "--backbone", args.backbone, "--batch-size", str(args.batch),
                        "--device", args.device] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
                       + (["--prune", args.prune] if args.prune else [])
                       + (["--workers", str(args.workers)] if args.workers is not None else []), check=True, cwd=ROOT)
        t_cli = time.perf_counter() - t
        print(f"CLI process, start to exit, {n} chips: {t_cli:.1f} s ({n / t_cli:.1f} faces/s incl. start-up "
              "and pruning)")


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def end_to_end(scorer, backbone, chips, paths, args, device) -> int:
    """The CLI's scoring path on JPEG files against the network alone on the same chips, alternately.

    Returns the number of faces scored. Both sides see the same chips in the same batches; the
    network-only side gets them decoded and prepared in advance, so the ratio is what decoding,
    batching and preparing cost on top of the network.
    """
    b = args.batch
    xs = [backbone.prepare(chips[i:i + b], device) for i in range(0, len(chips), b)]
    workers = default_workers() if args.workers is None else args.workers

    def model_only():
        with torch.inference_mode():
            for x in xs:
                scorer.score_tensor(x)

    class Timed:
        """The scorer, with the time spent in it (prepare + network) counted: the network's share of
        the end-to-end wall time is measured in the same seconds as the whole, so a machine whose
        load changes between repetitions moves it far less than the ratio of two runs."""

        def __init__(self):
            self.seconds = 0.0

        def score(self, chips, batch_size=64):
            t = time.perf_counter()
            out = scorer.score(chips, batch_size)
            self.seconds += time.perf_counter() - t
            return out

    timed = Timed()

    def cli_path():
        ds = ChipDataset(paths, backbone.preprocess, "aligned")
        return sum(1 for r in score_images(timed, iter_images(ds, workers, b, device), b) if r.error is None)

    n = cli_path()  # warm-up: page cache, the first decode threads, the allocator's batch buffers
    model_only()
    print(f"end to end on {n} JPEG chips ({workers} decoding threads), alternately with PreFIQs alone on the "
          f"same chips; {load()}")
    t_model, t_e2e, share = [], [], []
    for rep in range(args.e2e_reps):
        timed.seconds = 0.0
        for fn, ts in ((model_only, t_model), (cli_path, t_e2e)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        share.append(timed.seconds / t_e2e[-1])
        print(f"  run {rep + 1}: model only {n / t_model[-1]:7.1f} faces/s, end to end {n / t_e2e[-1]:7.1f} "
              f"faces/s = {100 * t_model[-1] / t_e2e[-1]:.0f} %; in the scorer {100 * share[-1]:.0f} % of the "
              f"end-to-end time  ({load()})")
    ratios = np.array(t_model) / np.array(t_e2e)
    print(f"end to end / model only: median {100 * np.median(ratios):.0f} % (runs {ratios.min():.0%} to "
          f"{ratios.max():.0%}; target >= 80 %); time in the scorer (prepare + network): median "
          f"{100 * np.median(share):.0f} % of end to end (runs {min(share):.0%} to {max(share):.0%})")
    # Where the time goes: each part on its own, wall ms per face (one thread decodes in the first two)
    sub = paths[:min(len(paths), 256)]
    parts = {
        "decode, Pillow (reference path)": lambda: [load_rgb(p) for p in sub],
        "decode, as the pipeline does": lambda: [decode_rgb(p) for p in sub],
        "chip → batch tensor (prepare)": lambda: [backbone.prepare(chips[i:i + b], device)
                                                  for i in range(0, len(sub), b)],
    }
    msg = []
    for name, fn in parts.items():
        fn()
        t = time.perf_counter()
        fn()
        msg.append(f"{name} {1e3 * (time.perf_counter() - t) / len(sub):.3f}")
    print("  parts, ms/face: " + ", ".join(msg) + f", the network (PreFIQs) {1e3 * np.median(t_model) / n:.3f}")
    return n


if __name__ == "__main__":
    main()
