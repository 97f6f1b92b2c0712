"""Command line: ``python -m prefiqs_core score PATH... --out scores.csv`` and ``demo``."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .backbones import NAMES

CSV_COLUMNS = ["path", "face", "x0", "y0", "x1", "y1", "det_score", "drift", "quality", "error"]


def _add_model_args(p: argparse.ArgumentParser):
    from .pruning import METHODS, SPEC_HELP

    p.add_argument("--backbone", default="dlib_resnet29", choices=NAMES, help="face-recognition network")
    p.add_argument("--checkpoint", help="weights file for the backbone (.pth state dict, .onnx, dlib .dat)")
    g = p.add_argument_group("pruning (default: the backbone's measured default; the effective spec is "
                             "printed and stored beside the output)")
    g.add_argument("--prune", metavar="SPEC", help=f"pruning spec string: {SPEC_HELP}")
    g.add_argument("--pruning", choices=METHODS, help="pruning method; with any of these flags the copy is "
                   "exactly what the flags say (no option is taken from the default)")
    g.add_argument("--sparsity", type=float, help="fraction pruned, strictly between 0 and 1")
    g.add_argument("--seed", type=int, default=None, help="seed for --pruning random")
    g.add_argument("--keep-first", action="store_true", help="leave the network's first layer dense")
    g.add_argument("--keep-last", action="store_true", help="leave the embedding layer dense")
    g.add_argument("--prune-from", metavar="SPLIT", help="prune only from this split point on; the dense "
                   "trunk before it runs once (list them: python -m prefiqs_core splits)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="decoding workers: processes that detect faces, threads that decode --aligned chips "
                   "(0: all in the main thread; default: one per core, at most 4)")


def pruning_from_args(args, backbone_name: str):
    """The pruned copies the command line asks for: ``--prune``, else the component flags, else the
    backbone's default. Raises ``ValueError`` with a one-line message."""
    from .defaults import default_pruning, exact_pruning
    from .pruning import parse_prune

    parts = dict(method=args.pruning, sparsity=args.sparsity, seed=args.seed,
                 keep_first=args.keep_first or None, keep_last=args.keep_last or None, start=args.prune_from)
    given = {k: v for k, v in parts.items() if v is not None}
    if args.prune is not None:
        if given:
            flags = ", ".join("--" + {"method": "pruning", "start": "prune-from"}.get(k, k).replace("_", "-")
                              for k in given)
            raise ValueError(f"--prune already says everything; drop {flags}")
        return parse_prune(args.prune)
    if not given:
        return default_pruning(backbone_name)
    return [exact_pruning(backbone_name, **given)]


def build_scorer(args):
    import torch

    from .backbones import load_backbone
    from .scoring import PreFIQs

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: no CUDA device is available here")
    if args.batch_size < 1:
        raise SystemExit("error: --batch-size must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise SystemExit("error: --workers must be 0 or more")
    backbone = load_backbone(args.backbone, args.checkpoint)
    try:
        specs = pruning_from_args(args, backbone.name)
        return PreFIQs(backbone, specs, device=args.device)
    except ValueError as e:
        raise SystemExit(f"error: {e}")


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
    print(f"pruning: {scorer.spec_string} ({scorer.forwards_per_face:.2f} dense forwards per face)",
          file=sys.stderr)
    mode = "aligned" if args.aligned else "detect"
    dataset = ChipDataset(paths, scorer.backbone.preprocess, mode)
    images = tqdm(iter_images(dataset, args.workers, args.batch_size, args.device), total=len(paths), unit="img",
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
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(json.dumps(scorer.config() | dict(faces=n_ok, skipped=n_err), indent=1) + "\n")
    print(f"scored {n_ok} faces from {len(paths)} files ({n_err} skipped) -> {out} (settings: {sidecar.name})",
          file=sys.stderr)
    return 0 if n_ok else 1


def cmd_splits(args) -> int:
    """Where pruning may start for a backbone, with the share of the network each tail re-runs."""
    import torch

    from .backbones import load_backbone
    from .trunk import stage_macs, stages_of

    bb = load_backbone(args.backbone, args.checkpoint)
    stages = stages_of(bb.net)
    s = bb.preprocess.size
    with torch.inference_mode():
        macs = stage_macs(stages, torch.zeros(1, 3, s, s))
    total = sum(macs)
    print(f"{bb.name}: {len(stages) - 1} split points; cost = 1 + tail share per pruned copy")
    for k, (name, _) in enumerate(stages[1:], start=1):
        print(f"  from:{name:<28} tail {sum(macs[k:]) / total:6.1%}")
    return 0


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
    sp = sub.add_parser("splits", help="list a backbone's split points (where --prune-from may start)")
    sp.add_argument("--backbone", default="dlib_resnet29", choices=NAMES)
    sp.add_argument("--checkpoint")
    d = sub.add_parser("demo", help="score the bundled real photos, print the ranking, write a contact sheet")
    d.add_argument("--out-dir", default="out/demo")
    d.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    return {"score": cmd_score, "demo": cmd_demo, "splits": cmd_splits}[args.cmd](args)
