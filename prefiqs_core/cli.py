"""Command line: ``python -m prefiqs_core score PATH... --out scores.csv`` and ``demo``."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from .backbones import NAMES
from .defaults import COMBINED_DISTINCTIVENESS, DEFAULT_BACKBONE, FAST_BACKBONE

CSV_COLUMNS = ["path", "face", "x0", "y0", "x1", "y1", "det_score", "drift", "quality", "error"]
# added only when a calibration table applies (prefiqs_core.calibration); last, so that readers by
# position of the columns above are unaffected
CALIBRATION_COLUMNS = ["percentile", "expected_fnmr"]
# with a calibration table, in detect mode: the quality's and the detector score's reference
# percentiles averaged (prefiqs_core.combined)
COMBINED_COLUMNS = ["combined"]
# after it, where the calibration table averages distinctiveness into combined (dlib's): its percentile
DISTINCTIVENESS_COLUMNS = ["distinctiveness"]
# last, where the table also has bands of combined fitted with the run's detector reference
COMBINED_FNMR_COLUMNS = ["combined_expected_fnmr"]


def _add_model_args(p: argparse.ArgumentParser):
    from .pruning import METHODS, SPEC_HELP

    p.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=NAMES,
                   help=f"face-recognition network (default {DEFAULT_BACKBONE}; {FAST_BACKBONE} is about twice as fast)")
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


def _scorer_or_none(args):
    """The scorer, or None after a one-line error (a missing weights file, a bad spec)."""
    try:
        return build_scorer(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def cmd_score(args) -> int:
    from tqdm import tqdm

    from .pipeline import ChipDataset, expand_paths, iter_images, score_images

    paths, missing = expand_paths(args.paths)
    for p, why in missing:
        print(f"skipped {p}: {why}", file=sys.stderr)
    if not paths:
        print("error: no image files found in the given paths", file=sys.stderr)
        return 1
    scorer = _scorer_or_none(args)
    if scorer is None:
        return 1
    print(f"pruning: {scorer.spec_string} ({scorer.forwards_per_face:.2f} dense forwards per face)",
          file=sys.stderr)
    try:
        cal, why = calibration_for(scorer, args.calibration)
    except (ValueError, FileNotFoundError) as e:  # a table the user named that cannot be used: refuse
        print(f"error: --calibration {args.calibration}: {e}", file=sys.stderr)
        return 1
    print(f"calibration: {why}; no percentile/expected_fnmr columns" if cal is None else
          f"calibration: {cal.made.get('source', 'table')} ({cal.backbone}, {cal.prune}) -> columns percentile, "
          "expected_fnmr", file=sys.stderr)
    mode = "aligned" if args.aligned else "detect"
    from .combined import DETECTOR, combined_bands_for, describe, resolve_detector_reference

    try:  # the pipeline's own detector (DlibDetector, upsample 1) finds the faces in detect mode
        det_ref, why_no_combined = resolve_detector_reference(
            args.detector_reference, calibrated=cal is not None, detector=None if args.aligned else DETECTOR,
            no_detector="aligned chips have no face detector score")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: --detector-reference: {e}", file=sys.stderr)
        return 1
    distinct = det_ref is not None and cal.distinctiveness is not None
    comb_bands, why_no_comb_fnmr = combined_bands_for(cal, det_ref)
    if det_ref is not None:
        print(f"combined: {describe(cal)} (detector reference: {args.detector_reference or 'shipped'}) -> "
              f"column combined" + (", and distinctiveness" if distinct else "")
              + (", and combined_expected_fnmr" if comb_bands else f"; no combined_expected_fnmr: {why_no_comb_fnmr}"),
              file=sys.stderr)
    dataset = ChipDataset(paths, scorer.backbone.preprocess, mode)
    images = tqdm(iter_images(dataset, args.workers, args.batch_size, args.device), total=len(paths), unit="img",
                  disable=args.quiet, file=sys.stderr)
    n_ok = n_err = 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS + (CALIBRATION_COLUMNS if cal else []) + (COMBINED_COLUMNS if det_ref else [])
                   + (DISTINCTIVENESS_COLUMNS if distinct else []) + (COMBINED_FNMR_COLUMNS if comb_bands else []))
        for row in score_images(scorer, images, args.batch_size, keep_embeddings=distinct):
            box = row.box or ("", "", "", "")
            if row.error:
                n_err += 1
                tqdm.write(f"skipped {row.path}: {row.error}", file=sys.stderr)
            else:
                n_ok += 1
            w.writerow([row.path, row.face, *(f"{v:.1f}" if v != "" else "" for v in box),
                        "" if row.det_score is None else f"{row.det_score:.4f}",
                        "" if row.drift is None else f"{row.drift:.6f}",
                        "" if row.quality is None else f"{row.quality:.6f}", row.error or "",
                        *(_calibrated(cal, row.quality) if cal else []),
                        *(_combined(cal, det_ref, row, comb_bands) if det_ref else [])])
    sidecar = out.with_name(out.name + ".json")
    record = dict(calibration=cal.summary() | dict(file=str(args.calibration or "shipped")) if cal else None,
                  detector_reference=det_ref.summary() | dict(file=str(args.detector_reference or "shipped"))
                  if det_ref else None)
    if cal is None:
        record["calibration_absent"] = why
    if det_ref is None:
        record["combined_absent"] = why_no_combined
    elif comb_bands is None:
        record["combined_expected_fnmr_absent"] = why_no_comb_fnmr
    sidecar.write_text(json.dumps(scorer.config() | record | dict(faces=n_ok, skipped=n_err), indent=1) + "\n")
    print(f"scored {n_ok} faces from {len(paths)} files ({n_err} skipped) -> {out} (settings: {sidecar.name})",
          file=sys.stderr)
    return 0 if n_ok else 1


def calibration_for(scorer, path=None):
    """``(table, None)`` when a calibration table applies to this scorer (the file ``path``, else the
    shipped one), else ``(None, why)``. A named file that does not apply raises: it never converts."""
    from .calibration import resolve

    bb = scorer.backbone
    return resolve(bb.name, scorer.spec_string, bb.source_sha256, path)


def _calibrated(cal, quality) -> list[str]:
    if quality is None:
        return ["", ""]
    return [f"{float(cal.percentile(quality)):.2f}", f"{float(cal.expected_fnmr(quality)):.5f}"]


def _combined(cal, det_ref, row, comb_bands=None) -> list[str]:
    """The combined cell, the distinctiveness cell where the table has that reference, and the
    combined value's expected FNMR where ``comb_bands`` is given."""
    import math

    from .combined import combined_with_distinctiveness

    distinct = cal.distinctiveness is not None
    tail = [""] if comb_bands is not None else []
    if row.quality is None:
        return (["", ""] if distinct else [""]) + tail
    det = math.nan if row.det_score is None else row.det_score  # no detector score: no combined value
    comb, pct = combined_with_distinctiveness(cal, det_ref, [row.quality], [det], row.dense[None] if distinct else None)
    c = float(comb[0])
    cells = ["" if math.isnan(c) else f"{c:.2f}"] + ([f"{float(pct[0]):.2f}"] if distinct else [])
    if comb_bands is not None:
        cells.append("" if math.isnan(c) else f"{float(comb_bands.expected_fnmr(c)):.5f}")
    return cells


# ---- commands that measure on an identity folder (calibrate, detector-reference) --------------

def _identity_folder(args) -> Path | None:
    """``--identity-folder``, or None after a one-line error when it is not a folder."""
    folder = Path(args.identity_folder)
    if not folder.is_dir():
        why = "is a file, not a folder of <Name>/<images>" if folder.exists() else "not found"
        print(f"error: identity folder {folder} {why}", file=sys.stderr)
        return None
    return folder


def _bar(args):
    from tqdm import tqdm

    def bar(it, total=None, desc=None):
        return tqdm(it, total=total, desc=desc, disable=args.quiet, file=sys.stderr, mininterval=10)

    return bar


def _half_mask(args, labels):
    """The faces of ``--half`` (A or B of the seeded people split), or None for all."""
    from .evaluation.lfw import people_halves

    if args.half == "all":
        return None
    a, b = people_halves(labels, args.split_seed)
    return a if args.half == "A" else b


def _provenance(args, folder: Path, **extra) -> dict:
    """The ``made`` record of a measured file: what it was measured on, when, by which command."""
    import datetime
    import shlex

    return dict(source=Path(args.out).name, folder=folder.name, half=args.half, split_seed=args.split_seed,
                max_per_person=args.max_per_person, **extra,
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                command="python -m prefiqs_core " + shlex.join(args.argv))


def _add_identity_args(p: argparse.ArgumentParser, what: str, cached: str):
    p.add_argument("--identity-folder", required=True, metavar="DIR",
                   help="one folder per person, <Name>/<images>; people with fewer than 2 images are left out")
    p.add_argument("--out", required=True, help=f"the {what} to write (JSON)")
    p.add_argument("--half", choices=("all", "A", "B"), default="all",
                   help="all people, or one of the two seeded people-disjoint halves (fit on A, check on B)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the halves")
    p.add_argument("--max-per-person", type=int, default=20, help="a seeded sample of at most N images per person")
    p.add_argument("--cache", default="out/calibrate/cache", help=f"where {cached} are cached")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_detector_reference(args) -> int:
    """The detector's scores on an identity folder's faces, as 101 percentiles (prefiqs_core.combined)."""
    import numpy as np

    from .combined import fit_detector_reference
    from .evaluation.lfw import FaceSet

    folder = _identity_folder(args)
    if folder is None:
        return 1
    faces = FaceSet.load(folder, args.cache, args.max_per_person, progress=_bar(args), workers=args.workers)
    scores = np.asarray(faces.detections["scores"], np.float64)
    half = _half_mask(args, faces.labels)
    if half is not None:
        scores = scores[half]
    made = _provenance(args, folder, missed=int(np.isnan(scores).sum()))
    try:
        ref = fit_detector_reference(scores, made)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    ref.save(args.out)
    q = ref.quantiles
    print(f"wrote {args.out}: {ref.made['n_faces']} detected faces ({made['missed']} missed, left out); "
          f"score at percentile 5 / 50 / 95: {q[5]:.3f} / {q[50]:.3f} / {q[95]:.3f}", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    """A calibration table from an identity folder (``<Name>/<images>``): see prefiqs_core.calibration."""
    from .calibration import Reference, fit, reference_scores
    from .evaluation.lfw import FaceSet

    det_ref = None
    if args.combined != "no":  # a reference that cannot be read is refused before any face is
        from .combined import DETECTOR, resolve_detector_reference
        try:
            det_ref, _ = resolve_detector_reference(args.detector_reference, calibrated=True, detector=DETECTOR)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: --detector-reference: {e}", file=sys.stderr)
            return 1
    folder = _identity_folder(args)
    if folder is None:
        return 1
    scorer = _scorer_or_none(args)
    if scorer is None:
        return 1
    bar = _bar(args)
    bb = scorer.backbone
    print(f"calibrating {bb.name} ({scorer.spec_string}) on {folder}", file=sys.stderr)
    try:
        faces = FaceSet.load(folder, args.cache, args.max_per_person, progress=bar, workers=args.workers)
        dense, quality = reference_scores(faces, scorer, args.batch_size, progress=bar)
        ref = Reference.build(dense, quality, faces.labels, _half_mask(args, faces.labels))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    made = _provenance(args, folder)
    distinct = args.distinctiveness == "yes" or (args.distinctiveness == "auto" and
                                                 bb.name in COMBINED_DISTINCTIVENESS)
    try:
        cal = fit(ref, bb.name, scorer.spec_string, bb.source_sha256, made, n_bands=args.bands,
                  min_errors=args.min_errors, reps=args.reps, distinctiveness=distinct)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if det_ref is not None:
        cal = _fit_combined_or_none(args, cal, det_ref, faces, dense, quality)
        if cal is None:
            return 1
    cal.save(args.out)
    m = cal.made
    print(f"{m['faces']} faces of {m['people']} people, {m['genuine_pairs']} genuine / {m['impostor_pairs']} "
          f"impostor pairs, {m['false_non_matches']} false non-matches at FMR {cal.fmr:g} (threshold "
          f"{m['threshold']:.4f})", file=sys.stderr)
    for b in cal.bands:
        print(f"  pair quality [{b.lo:.4f}, {b.hi:.4f}): {b.pairs:6d} pairs, FNMR {b.fnmr_raw:.4f} -> "
              f"expected {b.fnmr:.4f} [{b.fnmr_lo:.4f}, {b.fnmr_hi:.4f}]", file=sys.stderr)
    if cal.combined is not None:
        for b in cal.combined.bands:
            print(f"  pair combined [{b.lo:6.2f}, {b.hi:6.2f}): {b.pairs:6d} pairs, FNMR {b.fnmr_raw:.4f} -> "
                  f"expected {b.fnmr:.4f} [{b.fnmr_lo:.4f}, {b.fnmr_hi:.4f}]", file=sys.stderr)

    def bands(n):
        return f"{n} band" + ("" if n == 1 else "s")

    print(f"wrote {args.out}: {bands(len(cal.bands))}" + (", and the distinctiveness reference" if distinct else "")
          + (f"; {bands(len(cal.combined.bands))} of combined" if cal.combined is not None else ""), file=sys.stderr)
    if len(cal.bands) == 1:
        print(f"warning: one band only ({m['false_non_matches']} false non-matches; a band needs {args.min_errors}): "
              f"expected_fnmr is the same for every quality. More people give bands that tell faces apart",
              file=sys.stderr)
    return 0


def _fit_combined_or_none(args, cal, det_ref, faces, dense, quality):
    """``cal`` with bands of the combined value (``--combined``); with ``auto`` a folder too small
    for them leaves them out with a warning, with ``yes`` it is an error (None)."""
    import numpy as np

    from .calibration import fit_combined

    try:
        return fit_combined(cal, det_ref, dense, quality, np.asarray(faces.detections["scores"], np.float64),
                            faces.labels, _half_mask(args, faces.labels), n_bands=args.bands,
                            min_errors=args.min_errors, reps=args.reps)
    except ValueError as e:
        if args.combined == "yes":
            print(f"error: bands of combined: {e}", file=sys.stderr)
            return None
        print(f"warning: no bands of combined ({e}); the table gives expected_fnmr of the quality only",
              file=sys.stderr)
        return cal


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
    s.add_argument("--calibration", metavar="FILE", help="calibration table (python -m prefiqs_core calibrate); "
                   "default: the shipped table when it applies to the backbone, weights and pruning")
    s.add_argument("--detector-reference", metavar="FILE", help="detector reference for the combined column "
                   "(python -m prefiqs_core detector-reference); default: the shipped one (dlib HOG, LFW-dev)")
    _add_model_args(s)
    c = sub.add_parser("calibrate", help="measure a calibration table (quality -> percentile, expected FNMR) "
                       "on an identity folder")
    _add_identity_args(c, "table", "detections, chips and scores")
    c.add_argument("--bands", type=int, default=16, help="quality bands before merging")
    c.add_argument("--min-errors", type=int, default=10, help="false non-matches a band must hold")
    c.add_argument("--reps", type=int, default=1000, help="people-level bootstrap replicates")
    c.add_argument("--distinctiveness", choices=("auto", "yes", "no"), default="auto",
                   help="also store the reference faces' distinctiveness, which combined then averages in "
                        "(auto: where the project measured that it helps, dlib_resnet29)")
    c.add_argument("--combined", choices=("auto", "yes", "no"), default="auto",
                   help="also fit expected-FNMR bands of the combined value (the reference faces' detector "
                        "scores and the detector reference; auto: unless the folder is too small for them)")
    c.add_argument("--detector-reference", metavar="FILE",
                   help="detector reference the combined values are made with (default: the shipped one)")
    _add_model_args(c)
    r = sub.add_parser("detector-reference", help="measure the face detector's score percentiles on an identity "
                       "folder (for the combined column)")
    _add_identity_args(r, "reference", "detections")
    r.add_argument("--workers", type=int, default=None, help="detection processes (default: one per core)")
    sp = sub.add_parser("splits", help="list a backbone's split points (where --prune-from may start)")
    sp.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=NAMES)
    sp.add_argument("--checkpoint")
    d = sub.add_parser("demo", help="score the bundled real photos, print the ranking, write a contact sheet")
    d.add_argument("--out-dir", default="out/demo")
    d.add_argument("--device", default="cpu")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    args.argv = argv
    return {"score": cmd_score, "demo": cmd_demo, "splits": cmd_splits, "calibrate": cmd_calibrate,
            "detector-reference": cmd_detector_reference}[args.cmd](args)
