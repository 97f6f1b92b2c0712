"""Command line: ``python -m prefiqs_core score PATH... --out scores.csv`` and ``demo``."""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from .backbones import NAMES

CSV_COLUMNS = ["path", "face", "x0", "y0", "x1", "y1", "det_score", "drift", "quality", "error"]


def _add_model_args(p: argparse.ArgumentParser):
    p.add_argument("--backbone", default="dlib_resnet29", choices=NAMES, help="face-recognition network")
    p.add_argument("--checkpoint", help="weights file for the backbone (.pth state dict, .onnx, dlib .dat)")
    p.add_argument("--pruning", choices=("global_l1", "layerwise_l1", "random", "ln_structured"),
                   help="pruning method (default: the backbone's measured default)")
    p.add_argument("--sparsity", type=float, help="fraction pruned, strictly between 0 and 1")
    p.add_argument("--seed", type=int, default=0, help="seed for --pruning random")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding/detection worker processes")


def build_scorer(args):
    import torch

    from .backbones import load_backbone
    from .defaults import default_pruning
    from .pruning import PruneSpec
    from .scoring import PreFIQs

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: no CUDA device is available here")
    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be at least 1")
    backbone = load_backbone(args.backbone, args.checkpoint)
    specs = default_pruning(backbone.name)
    if args.pruning or args.sparsity is not None or args.seed:
        base = specs[0]
        try:
            specs = [PruneSpec(args.pruning or base.method,
                               base.sparsity if args.sparsity is None else args.sparsity, args.seed,
                               base.keep_first, base.keep_last)]
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    return PreFIQs(backbone, specs, device=args.device)


def cmd_score(args) -> int:
    from tqdm import tqdm

    from .pipeline import ChipDataset, expand_paths, iter_images, score_images

    paths, missing = expand_paths(args.paths)
    for p, why in missing:
        print(f"skipped {p}: {why}", file=sys.stderr)
    if not paths:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    try:
        scorer = build_scorer(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    mode = "aligned" if args.aligned else "detect"
    dataset = ChipDataset(paths, scorer.backbone.preprocess, mode)
    images = tqdm(iter_images(dataset, args.workers, args.batch_size), total=len(paths), unit="img",
                  disable=args.quiet, file=sys.stderr)
    n_ok = n_err = 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in score_images(scorer, images, args.batch_size):
            box = row.box or ("", "", "", "")
            if row.error:
                n_err += 1
                tqdm.write(f"skipped {row.path}: {row.error}", file=sys.stderr)
            else:
                n_ok += 1
            w.writerow([row.path, row.face, *(f"{v:.1f}" if v != "" else "" for v in box),
                        "" if row.det_score is None else f"{row.det_score:.4f}",
                        "" if row.drift is None else f"{row.drift:.6f}",
                        "" if row.quality is None else f"{row.quality:.6f}", row.error or ""])
    print(f"scored {n_ok} faces from {len(paths)} files ({n_err} skipped) -> {out}", file=sys.stderr)
    return 0 if n_ok else 1


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(out_dir=Path(args.out_dir), device=args.device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m prefiqs_core",
                                 description="PreFIQs face image quality: embedding drift under pruning")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score face images or folders into a CSV (worst = lowest quality)")
    s.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    s.add_argument("--out", required=True, help="CSV to write: one row per face")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--aligned", action="store_true", help="images are already aligned chips of the backbone's kind")
    g.add_argument("--detect", action="store_true", help="detect and align faces first (default)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(s)
    d = sub.add_parser("demo", help="score the bundled real photos, print the ranking, write a contact sheet")
    d.add_argument("--out-dir", default="out/demo")
    d.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    return {"score": cmd_score, "demo": cmd_demo}[args.cmd](args)
