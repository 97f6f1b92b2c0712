"""The demo's identity-labelled part: the ORL / AT&T faces, scored and evaluated by their EDC.

The ORL faces (``assets.orl_photos()``: 40 people × 10 greyscale 92×112 studio photos, "courtesy of
AT&T Laboratories Cambridge") become samples of the demo dataset with ``kind="orl"``, the tag
``orl`` and an ``identity`` Classification (``s1`` .. ``s40``). Then, through the operators, as on
a user's own dataset:

1.  ``detect_faces`` into the demo's ``faces`` / ``faces_landmarks`` fields. Each photo shows one
    person, so only the detector's best face of a photo is kept (a second box would be labelled
    with that person's identity and make a false genuine pair);
2.  ``compute_prefiqs`` run ``prefiqs_orl`` on those faces. A photo where no face was found keeps
    no box and gets the run's reason in ``prefiqs_orl_error``: it is reported, never dropped;
3.  two reference qualities on the same aligned chips, as face attributes: ``sharpness``
    (variance of the Laplacian) and ``random`` (a seeded hash of the chip: no information);
4.  ``evaluate_face_quality`` (``orl_eval``): every genuine pair, every impostor pair, FNM-EDC of
    the three at FMR 1e-3 (or the lowest FMR the impostor pairs can resolve), pair quality = the
    lower of the two faces'. It names ``prefiqs_orl`` as its quality run, so the Face Quality
    panel draws its curves beside that run, the newest (and last by name) on the dataset.
"""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np
import fiftyone as fo
import fiftyone.operators as foo
from fiftyone import ViewField as F

from ..prefiqs_core import assets
from ..prefiqs_core.evaluation.baselines import RandomQuality, Sharpness
from ..prefiqs_core.evaluation import fnmr_at
from ..prefiqs_core.evaluation.pairs import count_impostor_pairs
from . import runs
from .evaluation import load_evaluation
from .faces import match_keypoints, patch_chips
from .scoring import DEFAULT_BACKBONE, get_scorer

PLUGIN = "@prefiqs/prefiqs"
ORL_RUN, EVAL_KEY = "prefiqs_orl", "orl_eval"
BASELINES = ("sharpness", "random")
TARGET_FMR = 1e-3
DISCARDS = (0.0, 0.1, 0.2)
CREDIT = "ORL faces, courtesy of AT&T Laboratories Cambridge"


def _op(name):
    return foo.get_operator(f"{PLUGIN}/{name}")


def orl_view(dataset):
    return dataset.match(F("kind") == "orl")


def lowest_supported_fmr(num_impostors: int, wanted: float = TARGET_FMR) -> float:
    """``wanted`` when at least ``1 / wanted`` impostor pairs exist; otherwise the lowest power of
    ten that the impostor pairs can resolve (one false match among them)."""
    if num_impostors < 1:
        raise ValueError("no impostor pair: no FMR can be set")
    if num_impostors * wanted >= 1:
        return wanted
    return 10.0 ** math.ceil(math.log10(1.0 / num_impostors))


def browser_copies(photos, png_dir: Path) -> list[Path]:
    """PNG copies of the ORL photos, pixel for pixel: ORL ships PGM, which browsers cannot show, so
    the App's grid would show broken images. Copies older than their photo are remade."""
    from PIL import Image

    out = []
    for p, who in photos:
        q = Path(png_dir) / who / (Path(p).stem + ".png")
        if not q.exists() or q.stat().st_mtime < Path(p).stat().st_mtime:
            q.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(p) as im:
                im.save(q.with_suffix(".part.png"))
            q.with_suffix(".part.png").replace(q)
        out.append(q)
    return out


def add_orl(dataset, faces: str, landmarks: str, people: Optional[int] = None, backbone: str = DEFAULT_BACKBONE,
            device: Optional[str] = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Add the ORL photos to ``dataset``, detect, score, add the baselines and evaluate.

    Args:
        dataset: the demo dataset (any dataset works)
        faces, landmarks: the Detections and Keypoints fields ``detect_faces`` writes
        people (None): the first ``people`` persons only (all 40 by default)
        backbone, device: passed to ``compute_prefiqs``
        log: a callable receiving one line per step

    Returns:
        :func:`load_evaluation` of ``orl_eval``
    """
    photos = assets.orl_photos(people)
    shown = browser_copies(photos, assets.data_dir() / "orl_png")
    dataset.add_samples([fo.Sample(filepath=str(q.resolve()), kind="orl", tags=["orl"], orl_photo="/".join(p.parts[-2:]),
                                   identity=fo.Classification(label=who)) for (p, who), q in zip(photos, shown)])
    view = orl_view(dataset)
    log(f"detect_faces on {len(photos)} ORL photos ({len({w for _, w in photos})} people)")
    _op("detect_faces")(view, label_field=faces, keypoints_field=landmarks)
    _keep_best_face(view, faces, landmarks)
    log(f"compute_prefiqs on the ORL faces (run {ORL_RUN!r})")
    _op("compute_prefiqs")(view, run_key=ORL_RUN, patches_field=faces, keypoints_field=landmarks,
                           backbone=backbone, device=device, overwrite=True)
    _add_baselines(view, faces, landmarks, get_scorer(backbone, device=device).backbone.preprocess)
    _op("compute_prefiqs_visualization")(view, run_key=ORL_RUN, overwrite=True)

    ident, quality = view.values(["identity.label", runs.fields_of(dataset, ORL_RUN).quality])
    face_labels = [who for who, qs in zip(ident, quality) for q in (qs or []) if q is not None]
    fmr = lowest_supported_fmr(count_impostor_pairs(face_labels))
    log(f"evaluate_face_quality ({EVAL_KEY!r}: {ORL_RUN}, {', '.join(BASELINES)} at FMR {fmr:g})")
    return _op("evaluate_face_quality")(view, identity_field="identity", quality_fields=[ORL_RUN, *BASELINES],
                                        patches_field=faces, eval_key=EVAL_KEY, target_fmr=fmr, overwrite=True)


def _keep_best_face(view, faces, landmarks):
    """One person per ORL photo: drop all but the most confident box and its linked landmarks."""
    many = view.match(F(f"{faces}.detections").length() > 1)
    for sample in many.iter_samples(autosave=True):
        dets = sample[faces].detections
        best = max(dets, key=lambda d: d.confidence or 0.0)
        sample[faces].detections = [best]
        kps = sample[landmarks]
        if kps is not None:
            inst = best.instance.id if best.instance is not None else None
            kps.keypoints = [k for k in kps.keypoints if k.instance is not None and k.instance.id == inst]


def _add_baselines(view, faces, landmarks, preprocess):
    """``sharpness`` and ``random`` on each face, from the aligned chip PreFIQs scored."""
    conv = (view._dataset.get_field(landmarks).info or {}).get("landmark_convention")
    sharp, rand = Sharpness(), RandomQuality(seed=0)
    values = {name: [] for name in BASELINES}
    for path, dets, kps in zip(*view.values(["filepath", faces, landmarks])):
        detections = list(dets.detections) if dets is not None else []
        marks = match_keypoints(detections, kps.keypoints if kps is not None else [], conv)
        cut = patch_chips(path, [d.bounding_box for d in detections], marks, preprocess) if detections else []
        chips = [c for c, _ in cut if c is not None]
        s = iter(sharp.score(np.stack(chips)).tolist() if chips else [])
        r = iter(rand.score(np.stack(chips)).tolist() if chips else [])
        values["sharpness"].append([next(s) if c is not None else None for c, _ in cut])
        values["random"].append([next(r) if c is not None else None for c, _ in cut])
    for name in BASELINES:
        path = f"{faces}.detections.{name}"
        if not view._dataset.has_field(path):
            view._dataset.add_sample_field(path, fo.FloatField)
        view.set_values(path, values[name])


# ------------------------------------------------------------------------------------------------
# summary: read back from the dataset and the stored evaluation
# ------------------------------------------------------------------------------------------------


def orl_summary(dataset) -> dict:
    """What ``make demo`` prints about ORL: counts, the photos without a scored face and why, and
    each quality's FNMR at the evaluation's FMR with 0 / 10 / 20 % of genuine pairs discarded."""
    view = orl_view(dataset)
    fields = runs.fields_of(dataset, ORL_RUN)
    paths, errors, boxes = view.values(["orl_photo", fields.sample_error, F(f"{fields.patches_field}.detections").length()])
    failed = [dict(photo=p, error=e, detected=int(n or 0))
              for p, e, n in zip(paths, errors, boxes) if e]
    rec = load_evaluation(view, EVAL_KEY)
    methods = []
    for name in rec["config"]["quality_fields"]:
        c = rec["curves"][name]
        curve = SimpleNamespace(convention=c["convention"], discard_fractions=np.asarray(c["discard_fractions"], float),
                                fnmr=np.asarray(c["fnmr"], float))
        methods.append(dict(name=name, pauc_20=c["pauc_20"],
                            fnmr={d: fnmr_at(curve, d) for d in DISCARDS}))
    return dict(photos=len(view), people=len(set(view.values("identity.label"))),
                faces=view.count(fields.quality), failed=failed, num_mated=rec["num_mated"],
                num_nonmated=rec["num_nonmated"], num_impostors_total=rec["num_impostors_total"],
                target_fmr=rec["config"]["target_fmr"], achieved_fmr=rec["achieved_fmr"],
                threshold=rec["similarity_threshold"], methods=methods, plot_path=rec["plot_path"])


# below this many false non-matches an EDC over ORL is a handful of pairs, not a ranking
FEW_FAILURES = 20


def format_orl_summary(s: dict) -> str:
    """The ORL summary as the text ``make demo`` prints."""
    fmr = s["target_fmr"]
    if fmr == TARGET_FMR:
        fmr_note = f"FMR {fmr:g}"
    else:
        fmr_note = (f"FMR {fmr:g}: the lowest these {s['num_nonmated']} impostor pairs can resolve "
                    f"({TARGET_FMR:g} would need at least {round(1 / TARGET_FMR)})")
    n_failed = len(s["failed"])
    lines = [f"{CREDIT}: {s['photos']} photos of {s['people']} people, {s['faces']} faces scored "
             f"(run {ORL_RUN!r}), {n_failed} photo{'' if n_failed == 1 else 's'} without a scored face"
             + (":" if n_failed else "")]
    lines += [f"  {f['photo']}: {'no face detected' if f['detected'] == 0 else 'face not scored'} "
              f"({ORL_RUN}_error: {f['error']!r})" for f in s["failed"]]
    sampled = "" if s["num_nonmated"] == s["num_impostors_total"] else f" (sampled from {s['num_impostors_total']})"
    lines += ["", f"evaluation {EVAL_KEY!r}: {s['num_mated']} genuine and {s['num_nonmated']} impostor pairs"
                  f"{sampled}; threshold set at {fmr_note} (cosine {s['threshold']:.4f}, achieved FMR "
                  f"{s['achieved_fmr']:.2e})",
              f"FNMR at {fmr_note}, after discarding the lowest-quality genuine pairs "
              "(pair quality = the lower of the two faces):",
              "  quality                " + "  ".join(f"{'none' if d == 0 else f'{d:.0%}':>7}" for d in DISCARDS)
              + "   pAUC@20%"]
    for m in s["methods"]:
        label = f"PreFIQs ({m['name']})" if m["name"] == ORL_RUN else m["name"]
        pauc = "   n/a" if m["pauc_20"] is None else f"{m['pauc_20']:.4f}"
        lines.append(f"  {label:<22} " + "  ".join(f"{m['fnmr'][d]:7.4f}" for d in DISCARDS) + f"   {pauc}")
    # FNMR with nothing discarded is the same for every method
    n_fail = round(s["methods"][0]["fnmr"][0.0] * s["num_mated"]) if s["methods"] else None
    if n_fail is not None and n_fail < FEW_FAILURES:
        # equal columns here are the data's, not the score's: say so before a reader concludes otherwise
        lines.append(f"Only {n_fail} of the {s['num_mated']} genuine pairs fail to match: too few errors for the "
                     "qualities to differ here (README: 'The ORL faces and the demo's EDC'). How PreFIQs ranks "
                     "faces on real web photos: README, 'How well it ranks, in one table'.")
    lines.append(f"EDC curves: {s['plot_path']} (and the Face Quality panel, run {ORL_RUN!r})")
    return "\n".join(lines)
