"""The embedded default job: score the real photos fetched from PyPI packages, rank them, draw them.

Real faces are detected and aligned; a few of them are also degraded synthetically (blur,
down-scaling, noise, occlusion, darkening) so the ranking has known-bad faces to find.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

from . import assets
from .defaults import DEFAULT_BACKBONE
from .evaluation.degrade import degrade
from .pipeline import ChipDataset, iter_images

DEMO_DEGRADATIONS = [("blur", 4.0), ("downscale", 24), ("noise", 40.0), ("occlusion", 0.5), ("darken", 0.25)]


def collect_demo_chips(preprocess, num_workers=0):
    """Aligned chips of every real face in the demo photos, with captions."""
    paths = assets.demo_photos() + sorted(assets.extra_dir().glob("obama_partial_face*.jpg"))
    chips, captions, sources = [], [], []
    for im in iter_images(ChipDataset(paths, preprocess, "detect"), num_workers):
        if im.error:
            print(f"  {Path(im.path).name}: {im.error}", file=sys.stderr)
            continue
        for k, chip in enumerate(im.chips):
            chips.append(chip)
            captions.append(f"{Path(im.path).stem}#{k}")
            sources.append((im.path, k, "clean"))
    return chips, captions, sources


def run_demo(out_dir: Path = Path("out/demo"), device: str = "cpu") -> int:
    from .backbones import load_backbone
    from .report import contact_sheet
    from .scoring import PreFIQs

    t0 = time.time()
    backbone = load_backbone(DEFAULT_BACKBONE)
    scorer = PreFIQs(backbone, device=device)
    print(f"backbone {backbone.name} ({backbone.source}); pruning "
          + ", ".join(f"{r.spec.label()} (achieved {r.achieved:.3f})" for r in scorer.reports))
    chips, captions, sources = collect_demo_chips(backbone.preprocess)
    if not chips:
        print("error: no face found in the demo photos", file=sys.stderr)
        return 1
    # degrade the first face of a few photos, so known-bad faces are in the ranking
    picks = [i for i, (_, k, _) in enumerate(sources) if k == 0][:4]
    for i in picks:
        for kind, sev in DEMO_DEGRADATIONS:
            chips.append(degrade(chips[i], kind, sev))
            captions.append(f"{captions[i]} {kind}")
            sources.append((sources[i][0], sources[i][1], f"{kind}={sev}"))
    res = scorer.score(np.stack(chips))
    order = np.argsort(res.quality, kind="stable")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "path", "face", "variant", "drift", "quality"])
        for rank, i in enumerate(order, 1):
            w.writerow([rank, sources[i][0], sources[i][1], sources[i][2], f"{res.drift[i]:.6f}",
                        f"{res.quality[i]:.6f}"])
    print(f"\n{len(chips)} faces ranked worst first (quality = 1 - drift/2, higher is better):")
    print(f"{'rank':>4}  {'quality':>8}  {'drift':>7}  face")
    for rank, i in enumerate(order, 1):
        print(f"{rank:>4}  {res.quality[i]:8.4f}  {res.drift[i]:7.4f}  {captions[i]}")
    sheet = contact_sheet(chips, res.quality, captions, out_dir / "contact_sheet.png",
                          title=f"PreFIQs on {backbone.name}, worst first")
    clean = np.array([s[2] == "clean" for s in sources])
    print(f"\nmean quality: clean real faces {res.quality[clean].mean():.4f}, "
          f"synthetically degraded {res.quality[~clean].mean():.4f}")
    print(f"wrote {out_dir / 'scores.csv'} and {sheet} in {time.time() - t0:.1f} s")
    return 0
