"""Sample or face patch → aligned chip: the one place where FiftyOne labels meet the engine's alignment.

FiftyOne stores boxes as relative ``[x, y, w, h]`` and keypoints as relative ``[x, y]``; the engine
works in image pixels (``prefiqs_core.alignment``). Whole images go through the engine's own
``ChipDataset`` (the same decode → detect/resize → align as the CLI); face patches are aligned here,
from their box and, when a Keypoints field is linked to them, their 5 landmarks.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from ..prefiqs_core.alignment import CONVENTIONS, Face, align_face, get_template
from ..prefiqs_core.images import ImageError, load_rgb
from ..prefiqs_core.pipeline import ChipDataset, ImageFaces, iter_images

# Point names, in each convention's order ("left"/"right" as seen in the image, see alignment.py).
LANDMARK_NAMES = {
    "dlib5": ["right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose_base"],
    "arcface5": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
}
SKELETON_EDGES = {
    "dlib5": [[0, 1], [2, 3], [1, 4], [3, 4]],
    "arcface5": [[0, 1], [0, 2], [1, 2], [2, 3], [2, 4], [3, 4]],
}
DEFAULT_CONVENTION = "arcface5"  # what RetinaFace/MTCNN/YuNet/insightface write
MIN_BOX_PIXELS = 2.0


def whole_images(paths, mode: str, preprocess, detector=None, num_workers: int = 0) -> Iterator[ImageFaces]:
    """Chips of whole images: ``mode="aligned"`` (the image is a chip) or ``"detect"`` (all faces, best first)."""
    yield from iter_images(ChipDataset(paths, preprocess, mode, detector), num_workers)


def box_to_pixels(bbox, width: int, height: int) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    return (x * width, y * height, (x + w) * width, (y + h) * height)


def box_to_relative(box, width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]


def points_to_relative(points, width: int, height: int) -> list[list[float]]:
    return [[float(x) / width, float(y) / height] for x, y in np.asarray(points, dtype=np.float64)]


def check_box(box, width: int, height: int):
    """Raise ``ValueError`` for a box no chip can be cut from."""
    x0, y0, x1, y1 = box
    if not np.isfinite(box).all():
        raise ValueError("degenerate box (non-finite coordinates)")
    if x1 - x0 < MIN_BOX_PIXELS or y1 - y0 < MIN_BOX_PIXELS:
        raise ValueError(f"degenerate box ({x1 - x0:.1f}x{y1 - y0:.1f} pixels)")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError("degenerate box (outside the image)")


def convention_of(keypoint, default: Optional[str] = None) -> str:
    """A keypoint's landmark convention: its own ``convention`` attribute, else ``default``."""
    conv = keypoint.get_field("convention") if keypoint.has_field("convention") else None
    conv = conv or default or DEFAULT_CONVENTION
    if conv not in CONVENTIONS:
        raise ValueError(f"unknown landmark convention {conv!r}; use one of {CONVENTIONS}")
    return conv


def match_keypoints(detections, keypoints, default_convention: Optional[str] = None) -> list:
    """For each Detection, its ``(points, convention)`` from ``keypoints`` or ``None``.

    Keypoints are linked to boxes by a shared ``fo.Instance``; without instances, by position,
    but only when both lists have the same length (anything else would be a guess).
    """
    kps = [k for k in (keypoints or []) if k.points is not None and len(k.points) == 5]
    by_instance = {_instance_id(k): k for k in kps if _instance_id(k) is not None}
    out = []
    for i, det in enumerate(detections):
        kp = by_instance.get(_instance_id(det))
        if kp is None and not by_instance and len(kps) == len(detections):
            kp = kps[i]
        out.append(None if kp is None else (np.asarray(kp.points, dtype=np.float64),
                                            convention_of(kp, default_convention)))
    return out


def _instance_id(label):
    inst = getattr(label, "instance", None)  # absent, not None, on labels created without one
    return inst.id if inst is not None else None


def _dlib_shape(box, points):
    # A dlib shape rebuilt from integer landmarks lets align_face cut dlib's own chip
    # (dlib.get_face_chip), so faces found by detect_faces score exactly as with detect=True.
    import dlib

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    rect = dlib.rectangle(x0, y0, max(x1 - 1, x0), max(y1 - 1, y0))
    return dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in points])


def face_from_label(bbox, landmarks, width: int, height: int) -> Face:
    """A pixel-space ``Face`` from a relative box and optional ``(relative points, convention)``."""
    box = box_to_pixels(bbox, width, height)
    check_box(np.asarray(box), width, height)
    if landmarks is None:
        return Face(box, 1.0)
    rel, conv = landmarks
    pts = rel * np.array([width, height], dtype=np.float64)
    if not np.isfinite(pts).all():  # FiftyOne marks invisible points with NaN: box alignment instead
        return Face(box, 1.0)
    shape = None
    if conv == "dlib5" and np.allclose(pts, np.rint(pts), atol=1e-3):
        pts = np.rint(pts)
        shape = _dlib_shape(box, pts)
    return Face(box, 1.0, landmarks=pts, convention=conv, shape=shape)


def patch_chips(filepath: str, boxes, landmarks, preprocess) -> list[tuple[Optional[np.ndarray], Optional[str]]]:
    """Per face ``(chip, None)`` or ``(None, reason)``; raises ``ImageError`` if the image is unusable."""
    img = load_rgb(filepath)
    height, width = img.shape[:2]
    template = get_template(preprocess.template)
    out = []
    for bbox, lm in zip(boxes, landmarks):
        try:
            face = face_from_label(bbox, lm, width, height)
            try:
                chip = align_face(img, face, template)
            except ValueError:  # coincident landmarks: fall back to the box
                chip = align_face(img, Face(face.box, 1.0), template)
            out.append((chip, None))
        except (ValueError, TypeError) as e:
            out.append((None, str(e)))
    return out


__all__ = ["ImageError", "whole_images", "patch_chips", "match_keypoints", "box_to_relative",
           "points_to_relative", "LANDMARK_NAMES", "SKELETON_EDGES", "DEFAULT_CONVENTION"]
