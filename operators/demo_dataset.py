"""The demo dataset ``prefiqs-demo``: the engine's real photos and aligned chips of their faces, scored.

Two kinds of samples (field ``kind`` and the tags ``photo`` / ``chip``):

-   **photos**: the whole demo photos (``assets.demo_photos()`` and the obama partial-face crops),
    with faces and 5 landmarks found by ``detect_faces`` and a patch-level PreFIQs run ``prefiqs``
    on the ``faces`` Detections;
-   **chips**: the aligned chip of each person's face, cut from those very detections, saved as a
    PNG, plus synthetic degradations of it (``prefiqs_core.evaluation.degrade``: every kind at every level),
    with a sample-level run ``prefiqs_chips`` (``aligned=True``). Each chip carries ``identity``
    (``fo.Classification``), ``degradation`` (``"clean"`` for the original), ``severity`` (the
    degradation's own parameter: blur sigma, pixels wide, noise sigma, JPEG quality, occluded
    fraction, brightness factor; ``None`` when clean) and ``level`` (0 clean, 1 mild, 2 strong).
-   **ORL photos** (``kind="orl"``, tag ``orl``): 40 people × 10 real photos with an ``identity``,
    a patch-level run ``prefiqs_orl`` on the same ``faces`` field and an evaluation ``orl_eval``
    of it against sharpness and random (``operators/demo_orl.py``): the real identity variation
    the chips lack, and the EDC curve the Face Quality panel draws.

The App shows only the face boxes and the identities by default (``app_config.active_fields``),
not the landmarks: on grid thumbnails the App's keypoint dots do not shrink with the image, so the
5 points (four of them eye corners a few pixels apart) would cover the small faces; tick
``faces_landmarks`` in the sidebar to see them.

Every score is computed *through the operators* (``foo.get_operator(...)(view, ...)``), as a user's
own dataset would be, so the demo also exercises the plugin's public path.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import fiftyone as fo
import fiftyone.operators as foo
from fiftyone import ViewField as F
from PIL import Image

from ..prefiqs_core import assets
from ..prefiqs_core.evaluation.degrade import DEGRADATIONS, degrade
from .demo_orl import add_orl, orl_view
from .faces import match_keypoints, patch_chips
from .scoring import DEFAULT_BACKBONE, get_scorer

DATASET_NAME = "prefiqs-demo"
PLUGIN = "@prefiqs/prefiqs"
PHOTO_RUN, CHIP_RUN = "prefiqs", "prefiqs_chips"
FACES, LANDMARKS = "faces", "faces_landmarks"
# Photos of several different people: each face is its own identity. Every other photo shows one
# person, whose face is the detector's best one (other detections, e.g. the astronaut's mission
# patch, are kept on the photo but are not that person, so they get no chip).
MULTI_PERSON = {"friends_t1"}
_CHIP_NAME = re.compile(r".+_f\d+_(clean|[a-z]+\d)\.png$")


def demo_photo_paths() -> list[Path]:
    """The demo's real photos, in a fixed order (the same list as ``prefiqs_core.demo``)."""
    return assets.demo_photos() + sorted(assets.extra_dir().glob("obama_partial_face*.jpg"))


def default_chips_dir() -> Path:
    return assets.data_dir() / "demo_chips"


def identity_of(stem: str, face_index: int) -> str:
    """Who a face is: the photo's stem without numbering or crop suffix (obama3, obama_partial_face2
    → obama); in a multi-person photo, ``<stem>_face<k>``."""
    if stem in MULTI_PERSON:
        return f"{stem}_face{face_index}"
    return re.sub(r"(_partial_face)?\d*$", "", stem) or stem


def chip_faces(stem: str, num_faces: int) -> list[int]:
    """Indices of the faces that become chips (detections come best first)."""
    if stem in MULTI_PERSON:
        return list(range(num_faces))
    return [0] if num_faces else []


def _op(name):
    return foo.get_operator(f"{PLUGIN}/{name}")


def photos_view(dataset):
    return dataset.match(F("kind") == "photo")


def chips_view(dataset):
    return dataset.match(F("kind") == "chip")


def build_demo_dataset(name: str = DATASET_NAME, chips_dir=None, backbone: str = DEFAULT_BACKBONE,
                       device: Optional[str] = None, photos=None, orl_people: Optional[int] = None,
                       log: Callable[[str], None] = lambda s: None):
    """Build (or rebuild from scratch) the persistent demo dataset and score it through the operators.

    An existing dataset ``name`` is deleted first and the chip PNGs are rewritten, so that a re-run
    gives the same samples, never duplicates.

    Args:
        name ("prefiqs-demo"): the dataset name
        chips_dir (None): where the chip PNGs go (default ``$PREFIQS_DATA/demo_chips``); PNGs of an
            earlier build that are not rewritten are removed from it
        backbone ("sface"), device (None): passed to ``compute_prefiqs``
        photos (None): photo paths (default :func:`demo_photo_paths`)
        orl_people (None): how many ORL people to add (the first ones; default all 40; 0: none)
        log: a callable receiving one line per step

    Returns:
        the ``fo.Dataset``
    """
    photos = [Path(p) for p in (photos if photos is not None else demo_photo_paths())]
    chips_dir = Path(chips_dir) if chips_dir else default_chips_dir()
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    ds.info = dict(description="PreFIQs demo: real photos (patch-level run 'prefiqs'), aligned chips with "
                               "synthetic degradations (sample-level run 'prefiqs_chips') and the ORL faces "
                               "with identities (run 'prefiqs_orl', evaluation 'orl_eval')")
    ds.save()
    ds.add_samples([fo.Sample(filepath=str(p.resolve()), kind="photo", tags=["photo"]) for p in photos])
    photos_v = photos_view(ds)

    log(f"detect_faces on {len(photos)} photos")
    _op("detect_faces")(photos_v, label_field=FACES, keypoints_field=LANDMARKS)
    log("compute_prefiqs on the photos' faces (patch level)")
    _op("compute_prefiqs")(photos_v, run_key=PHOTO_RUN, patches_field=FACES, keypoints_field=LANDMARKS,
                           backbone=backbone, device=device, overwrite=True)

    # the scorer the operator just built (cached per process): its preprocessing cuts the chips
    preprocess = get_scorer(backbone, device=device).backbone.preprocess
    samples = _write_chips(photos_v, chips_dir, preprocess)
    log(f"wrote {len(samples)} chip PNGs to {chips_dir}")
    ds.add_samples(samples)
    chips_v = chips_view(ds)
    log("compute_prefiqs on the chips (sample level, aligned=True)")
    _op("compute_prefiqs")(chips_v, run_key=CHIP_RUN, aligned=True, backbone=backbone, device=device,
                           overwrite=True)

    log("compute_prefiqs_visualization (one joint UMAP per run)")
    _op("compute_prefiqs_visualization")(photos_v, run_key=PHOTO_RUN, overwrite=True)
    _op("compute_prefiqs_visualization")(chips_v, run_key=CHIP_RUN, overwrite=True)
    if orl_people != 0:
        add_orl(ds, FACES, LANDMARKS, people=orl_people, backbone=backbone, device=device, log=log)
        ds.save_view("orl", orl_view(ds), description="ORL faces: 40 people x 10 photos, with identities")
    # the grid draws the face boxes and who each face is; not the landmarks (see the module docstring)
    ds.app_config.active_fields = fo.ActiveFields(paths=[FACES, "identity"])
    ds.save()
    ds.save_view("photos", photos_v, description="Whole photos with detected faces, scored per face")
    ds.save_view("chips", chips_v, description="Aligned chips: clean and synthetically degraded")
    ds.save_view("chips_worst_first", chips_v.sort_by(f"{CHIP_RUN}_quality"),
                 description="Chips sorted by PreFIQs quality, worst first")
    return ds


def _write_chips(photos_v, chips_dir: Path, preprocess) -> list:
    """Cut each person's chip from the detections, save it and its degradations; returns chip samples."""
    chips_dir.mkdir(parents=True, exist_ok=True)
    conv = (photos_v._dataset.get_field(LANDMARKS).info or {}).get("landmark_convention")
    written, samples = set(), []
    for path, dets, kps in zip(*photos_v.values(["filepath", FACES, LANDMARKS])):
        stem = Path(path).stem
        detections = list(dets.detections) if dets is not None else []
        picks = chip_faces(stem, len(detections))
        if not picks:
            continue
        chosen = [detections[k] for k in picks]
        landmarks = match_keypoints(chosen, kps.keypoints if kps is not None else [], conv)
        # the same alignment as compute_prefiqs' patch mode: a clean chip scores as its face does
        cut = patch_chips(path, [d.bounding_box for d in chosen], landmarks, preprocess)
        for k, (chip, reason) in zip(picks, cut):
            if chip is None:
                continue
            identity = identity_of(stem, k)
            variants = [("clean", None, 0, chip)] + [
                (kind, sev, level, degrade(chip, kind, sev))
                for kind, (_, sevs) in DEGRADATIONS.items() for level, sev in enumerate(sevs, start=1)]
            for kind, sev, level, img in variants:
                out = chips_dir / f"{stem}_f{k}_{kind if level == 0 else f'{kind}{level}'}.png"
                Image.fromarray(np.ascontiguousarray(img)).save(out)  # PNG: lossless, so clean = the patch
                written.add(out.name)
                samples.append(fo.Sample(
                    filepath=str(out.resolve()), kind="chip", tags=["chip"],
                    identity=fo.Classification(label=identity), degradation=kind,
                    severity=None if sev is None else float(sev), level=level,
                    source_filepath=path, source_face=k))
    # chips of an earlier build that this one did not rewrite (other photos, other degradations)
    for old in chips_dir.glob("*.png"):
        if old.name not in written and _CHIP_NAME.match(old.name):
            old.unlink()
    return samples


# ------------------------------------------------------------------------------------------------
# summary: read back from the dataset, so it reports what is stored, not what was meant to be
# ------------------------------------------------------------------------------------------------

_CONFIG_KEYS = ("backbone", "pruning_method", "sparsity", "achieved_sparsity", "device", "checkpoint_sha256")


def demo_summary(dataset, worst: int = 10) -> dict:
    """Counts, run configuration, the ``worst`` faces and the mean quality per degradation.

    Returns a JSON-friendly dict: ``counts``, ``config`` (of the photo run; the chip run uses the
    same backbone and pruning), ``worst`` (rows ``kind, name, quality``, photo faces and chips
    together, worst first), ``mean_quality`` (``{"clean": m, "blur": m, ...}`` over chips) and
    ``mean_quality_by_level`` (``{"blur": {1: m, 2: m}, ...}``).
    """
    from . import runs

    photos, chips = photos_view(dataset), chips_view(dataset)
    paths, face_q = photos.values(["filepath", f"{FACES}.detections.{PHOTO_RUN}_quality"])
    rows = [dict(kind="photo", name=f"{Path(p).name} face {k}", quality=q)
            for p, qs in zip(paths, face_q) for k, q in enumerate(qs or []) if q is not None]
    ident, deg, level, sev, chip_q = chips.values(["identity.label", "degradation", "level", "severity",
                                                   f"{CHIP_RUN}_quality"])
    rows += [dict(kind="chip", name=f"{i} {d}" + ("" if lv == 0 else f" L{lv} ({s:g})"), quality=q)
             for i, d, lv, s, q in zip(ident, deg, level, sev, chip_q) if q is not None]
    rows.sort(key=lambda r: r["quality"])

    by_kind, by_level = {}, {}
    for d, lv, q in zip(deg, level, chip_q):
        if q is not None:
            by_kind.setdefault(d, []).append(q)
            by_level.setdefault(d, {}).setdefault(lv, []).append(q)
    # clean first, then the degradations in the engine's order
    order = ["clean"] + list(DEGRADATIONS) + sorted(set(by_kind) - set(DEGRADATIONS) - {"clean"})
    config = runs.load_config(dataset, PHOTO_RUN)
    return dict(
        dataset=dataset.name,
        counts=dict(photos=len(photos), faces=photos.count(f"{FACES}.detections"),
                    landmarks=photos.count(f"{LANDMARKS}.keypoints"), chips=len(chips),
                    clean_chips=len(chips.match(F("degradation") == "clean")),
                    identities=len(set(ident)),
                    scored_faces=sum(q is not None for qs in face_q for q in (qs or [])),
                    scored_chips=sum(q is not None for q in chip_q)),
        config={k: config.get(k) for k in _CONFIG_KEYS},
        runs=[PHOTO_RUN, CHIP_RUN],
        brain_keys=sorted(dataset.list_brain_runs(type="visualization")),
        worst=rows[:worst],
        mean_quality={k: float(np.mean(by_kind[k])) for k in order if k in by_kind},
        mean_quality_by_level={k: {lv: float(np.mean(v)) for lv, v in sorted(by_level[k].items())}
                               for k in order if k in by_level and k != "clean"},
    )


def format_summary(summary: dict) -> str:
    """The summary as the text ``make demo`` prints."""
    c, cfg = summary["counts"], summary["config"]
    sparsity = ", ".join(f"{s:g}" for s in cfg.get("sparsity") or [])
    achieved = ", ".join(f"{s:.3f}" for s in cfg.get("achieved_sparsity") or [])
    lines = [
        f"dataset {summary['dataset']!r}: {c['photos']} photos with {c['faces']} faces "
        f"({c['landmarks']} with 5 landmarks), {c['chips']} chips ({c['clean_chips']} clean, "
        f"{c['chips'] - c['clean_chips']} degraded) of {c['identities']} identities",
        f"runs {', '.join(summary['runs'])}: backbone {cfg.get('backbone')}, pruning {cfg.get('pruning_method')} "
        f"sparsity {sparsity} (achieved {achieved}), device {cfg.get('device')}, "
        f"weights sha256 {str(cfg.get('checkpoint_sha256'))[:12]}",
        f"UMAP maps: {', '.join(summary['brain_keys'])}",
        "",
        f"worst {len(summary['worst'])} faces (quality = 1 - drift/2, higher is better):",
    ]
    lines += [f"  {r['quality']:.4f}  {r['kind']:5}  {r['name']}" for r in summary["worst"]]
    clean = summary["mean_quality"].get("clean")
    lines += ["", "mean chip quality, clean vs each degradation (levels 1, 2):"]
    for kind, m in summary["mean_quality"].items():
        levels = summary["mean_quality_by_level"].get(kind, {})
        extra = "" if kind == "clean" or clean is None else f"  ({m - clean:+.4f} vs clean)"
        per = "" if not levels else "   " + ", ".join(f"L{lv} {v:.4f}" for lv, v in levels.items())
        lines.append(f"  {kind:10} {m:.4f}{extra}{per}")
    return "\n".join(lines)
