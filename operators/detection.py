"""Built-in face detection: dlib's HOG detector and 5-point shape predictor → Detections + Keypoints.

Each face becomes a ``Detection`` in ``label_field`` and a ``Keypoint`` (5 points, ``dlib5`` order,
recorded in the keypoint's ``convention`` attribute and in the field's ``info``) in
``keypoints_field``, both carrying the same ``fo.Instance`` so that the App and
``compute_prefiqs(keypoints_field=...)`` can tell which landmarks belong to which box.
"""
from __future__ import annotations

import fiftyone as fo
from fiftyone import ViewField as F

from ..prefiqs_core.alignment import DlibDetector
from ..prefiqs_core.images import load_rgb
from ..prefiqs_core.pipeline import detect_bounded
from .faces import LANDMARK_NAMES, SKELETON_EDGES, ImageError, box_to_relative, points_to_relative
from .progress import Progress, chunks, drive

CONVENTION = "dlib5"


def default_keypoints_field(label_field: str) -> str:
    return f"{label_field}_landmarks"


def detect_faces(samples, label_field="faces", keypoints_field=None, confidence_thresh=0.0, upsample=1,
                 overwrite=False, batch_size=16, progress=None) -> dict:
    """Detect faces and their 5 landmarks in every image of ``samples``.

    Args:
        samples: a dataset or a view of it
        label_field ("faces"): the ``fo.Detections`` field to write (label ``"face"``, confidence =
            dlib's detector score)
        keypoints_field (None): the ``fo.Keypoints`` field to write; ``<label_field>_landmarks`` by default
        confidence_thresh (0.0): keep faces whose detector score exceeds this (dlib scores are
            roughly -1..3; raise it to drop doubtful faces)
        upsample (1): times the image is upsampled before detection (finds smaller faces, slower)
        overwrite (False): re-detect samples whose ``label_field`` is already set; otherwise they
            are skipped (a sample where no face was found holds an empty ``Detections`` and counts as done)
        batch_size (16): samples written per bulk update
        progress (None): a callable ``progress(fraction, label)``

    Returns:
        a dict with ``num_samples`` (processed), ``num_skipped``, ``num_faces`` and ``num_errors``
        (unreadable images, left unset so that a later call retries them) and ``errors``
        (``{filepath: reason}``)
    """
    return drive(iter_detect_faces(samples, label_field, keypoints_field, confidence_thresh, upsample,
                                   overwrite, batch_size), progress)


def iter_detect_faces(samples, label_field="faces", keypoints_field=None, confidence_thresh=0.0, upsample=1,
                      overwrite=False, batch_size=16):
    """:func:`detect_faces` as a generator of :class:`Progress`; its return value is the summary."""
    keypoints_field = keypoints_field or default_keypoints_field(label_field)
    dataset = samples._dataset
    _declare(dataset, label_field, keypoints_field)
    _record_detector(samples, label_field, upsample, overwrite)
    todo = samples if overwrite else samples.match(~F(label_field).exists())
    ids = todo.values("id")
    total = len(ids)
    detector = DlibDetector(upsample=upsample, min_score=confidence_thresh)
    out = dict(num_samples=0, num_skipped=len(samples) - total, num_faces=0, num_errors=0, errors={})
    yield Progress(0.0, f"detecting faces in {total} images")
    for chunk in chunks(ids, batch_size):
        view = dataset.select(chunk, ordered=True)
        dets, kps = [], []
        for path in view.values("filepath"):
            try:
                img = load_rgb(path)
            except ImageError as e:
                out["num_errors"] += 1
                out["errors"][path] = str(e)
                dets.append(None)
                kps.append(None)
                continue
            faces = detect_bounded(detector, img)
            d, k = _labels(faces, img.shape[1], img.shape[0])
            dets.append(d)
            kps.append(k)
            out["num_faces"] += len(faces)
        # the Detections field marks a sample as done, so it is written last: a kill between the
        # two writes must not leave boxes without their landmarks
        view.set_values(keypoints_field, kps)
        view.set_values(label_field, dets)
        out["num_samples"] += len(chunk)
        yield Progress(out["num_samples"] / max(total, 1), f"detected faces in {out['num_samples']}/{total} images")
    return out


def _labels(faces, width, height):
    dets, kps = [], []
    for f in faces:
        inst = fo.Instance()
        # dlib boxes of faces at the border reach outside the image; FiftyOne boxes should not
        x0, y0, x1, y1 = f.box
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, width), min(y1, height))
        dets.append(fo.Detection(label="face", bounding_box=box_to_relative(box, width, height),
                                 confidence=float(f.score), instance=inst))
        kps.append(fo.Keypoint(label="face", points=points_to_relative(f.landmarks, width, height),
                               instance=inst, convention=f.convention))
    return fo.Detections(detections=dets), fo.Keypoints(keypoints=kps)


def _record_detector(samples, label_field, upsample, overwrite):
    """Which detector's scores the ``confidence`` of ``label_field`` holds, in the field's info:
    ``compute_prefiqs`` writes ``K_combined`` only for faces on the shipped reference's scale. A
    field that already holds faces found otherwise (another upsample, or no record) is marked mixed."""
    from ..prefiqs_core.combined import DETECTOR

    dataset = samples._dataset
    field = dataset.get_field(label_field)
    info = dict(field.info or {})
    mine = dict(detector=DETECTOR, upsample=int(upsample))
    # faces this call leaves as they are: with overwrite, those outside ``samples`` (counted, not
    # listed: a million ids in one exclude() would exceed MongoDB's 16 MB command limit)
    with_faces = len(dataset.exists(label_field))
    had_faces = with_faces > (len(samples.exists(label_field)) if overwrite else 0)
    if had_faces and {k: info.get(k) for k in mine} != mine:
        mine["detector"] = "mixed"
    if {k: info.get(k) for k in mine} != mine:
        field.info = info | mine
        field.save()


def _declare(dataset, label_field, keypoints_field):
    if not dataset.has_sample_field(label_field):
        dataset.add_sample_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    if not dataset.has_sample_field(keypoints_field):
        dataset.add_sample_field(keypoints_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints)
    field = dataset.get_field(keypoints_field)
    field.info = dict(field.info or {}, landmark_convention=CONVENTION, detections_field=label_field)
    field.description = "5 face landmarks (dlib5 order) from PreFIQs detect_faces"
    field.save()
    dataset.skeletons = dict(dataset.skeletons or {}, **{keypoints_field: fo.KeypointSkeleton(
        labels=LANDMARK_NAMES[CONVENTION], edges=SKELETON_EDGES[CONVENTION])})
    dataset.save()
