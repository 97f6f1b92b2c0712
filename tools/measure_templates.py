"""Measure the alignment-template constants in ``prefiqs_core.alignment.TEMPLATES`` on real photos.

Usage: ``python tools/measure_templates.py`` (needs ``make assets``: the demo photos, YuNet).

Samples: every face that both dlib (HOG + 5-point predictor) and YuNet find in a demo photo
and in its mirror image, keeping the near-frontal ones (both views; see ``matched_faces``).
For each:

(a) dlib150/dlib5: dlib's 5 predictor points mapped into the chip through the exact transform
    ``dlib.get_face_chip`` used (rebuilt from ``get_face_chip_details``' rect and angle), and,
    the constant we keep, dlib's own template points as that transform places them (dlib's
    chip geometry depends a little on the face's size, so they are not a fixed multiple of its
    normalised template);
(b) dlib150/arcface5: YuNet's 5 points mapped through the same transform;
(c) arcface112/arcface5: insightface's published ``arcface_src`` (not measured);
(d) arcface112/dlib5: dlib's points mapped through the similarity that puts YuNet's points on
    (c), i.e. the transform ArcFace-style alignment would use for that face;
and for both templates, where the dlib HOG box lands (centre and sqrt(w*h) side), for faces
that have a box but no landmarks.

It prints each template's mean points with their per-point spread (std over faces, px), checks
the rebuilt dlib transform against ``dlib.get_face_chip``'s pixels, and ends with the block to
paste into ``prefiqs_core/alignment.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dlib  # noqa: E402
import numpy as np  # noqa: E402

from prefiqs_core import alignment as al  # noqa: E402
from prefiqs_core import assets  # noqa: E402
from prefiqs_core.images import load_rgb  # noqa: E402

DLIB_SIZE, DLIB_PADDING = 150, 0.25
# Faces turned further than this (nose offset in eye distances) are left out: a template
# describes a frontal face, and dlib's predictor is unreliable on turned ones.
MAX_YAW = 0.2


def dlib_chip_matrix(details) -> np.ndarray:
    """The (2, 3) image → chip transform of a dlib ``chip_details``.

    dlib's extract_image_chip sends the corners of ``rect``, rotated by ``angle`` about its centre,
    to the chip's corner pixels: top-left → (0, 0), top-right → (cols-1, 0), bottom-right →
    (cols-1, rows-1). Three point pairs fix the affine map.
    """
    r = details.rect
    c = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]])
    img_pts = (corners - c) @ rot.T + c
    chip_pts = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]],
                        dtype=np.float64)
    # Solve chip = A @ img + t for the 6 unknowns from the 3 pairs.
    a = np.hstack([img_pts, np.ones((3, 1))])
    return np.linalg.solve(a, chip_pts).T


# dlib's normalised 5-point template (get_face_chip_details in dlib/image_transforms/
# interpolation.h), in the predictor's point order, before padding.
DLIB_UNIT_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475]])


def dlib_fit_points(size=DLIB_SIZE, padding=DLIB_PADDING) -> np.ndarray:
    """The points dlib fits a face's landmarks to, in its ``size``-wide fitting frame.

    They are not quite chip pixels: dlib turns the fit into a rect of ``size * scale - 1`` photo
    pixels spread over chip pixels 0..size-1, so where they land in the chip depends slightly
    (< 0.5 px) on the face's size in the photo. ``measure`` maps them into each real chip.
    """
    return (padding + DLIB_UNIT_TEMPLATE) / (2 * padding + 1) * size


def box_in_chip(m: np.ndarray, box) -> np.ndarray:
    """(cx, cy, side) of a face box's square after the similarity ``m`` (rotation ignored)."""
    x0, y0, x1, y1 = box
    centre = al.apply_transform(m, [[(x0 + x1) / 2, (y0 + y1) / 2]])[0]
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    return np.array([centre[0], centre[1], scale * np.sqrt((x1 - x0) * (y1 - y0))])


def _detect_both(dlib_det, yunet, img):
    """(dlib Face, YuNet Face) for every face both detectors find in ``img``."""
    ys = yunet.detect(img)
    out = []
    for f in dlib_det.detect(img):
        best = min(ys, default=None, key=lambda y: _dist(y, f))
        # An unmatched dlib box is a false positive (the astronaut's badge, for one).
        if best is not None and _dist(best, f) < 0.5 * (f.box[2] - f.box[0]):
            out.append((f, best))
    return out


def _dist(a, b) -> float:
    return float(np.hypot(*(_centre(a) - _centre(b))))


def _centre(face):
    return np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])


def matched_faces():
    """Pairs of records, (label, image, dlib Face, YuNet Face), for each face and its mirror image.

    Every photo is also used mirrored left-right: a mirrored face is a new, equally valid sample,
    and averaging each face with its mirror image cancels the head turns (yaw) of the few faces
    we have, which would otherwise pull the template sideways. A face only counts when both
    detectors find it both ways round.
    """
    dlib_det, yunet = al.DlibDetector(upsample=1), al.YuNetDetector()
    pairs = []
    for path in assets.demo_photos():
        photo = load_rgb(path)
        mirror = np.ascontiguousarray(photo[:, ::-1])
        width = photo.shape[1]
        mirrored = _detect_both(dlib_det, yunet, mirror)
        for f, y in _detect_both(dlib_det, yunet, photo):
            x0, y0, x1, y1 = f.box
            ghost = al.Face(box=(width - x1, y0, width - x0, y1), score=0.0)  # f, mirrored
            partner = min(mirrored, default=None, key=lambda r: _dist(r[0], ghost))
            if partner is not None and _dist(partner[0], ghost) < 0.5 * (x1 - x0):
                pairs.append(((path.name, photo, f, y),
                              (path.name + " (mirrored)", mirror, *partner)))
    return pairs


def yaw_ratio(face) -> float:
    """Sideways offset of the nose tip from the eyes' midpoint, in eye distances (0 = frontal)."""
    p = face.landmarks
    return float((p[2, 0] - (p[0, 0] + p[1, 0]) / 2) / np.linalg.norm(p[1] - p[0]))


def yunet_order_check(faces):
    """Confirm that YuNet's points come image-left first (arcface5 order) on every face."""
    for name, _, _, y in faces:
        p = y.landmarks
        if not (p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0] and p[0, 1] < p[2, 1] < p[3, 1]):
            raise SystemExit(f"{name}: YuNet points are not in arcface5 order: {p.tolist()}")
    print(f"YuNet point order checked on {len(faces)} faces: eye (image-left), eye (image-right), "
          "nose, mouth corner (image-left), mouth corner (image-right) = arcface5.")


def measure(faces):
    arc = al.TEMPLATES["arcface112"].landmarks("arcface5")
    rows = {k: [] for k in ("dlib150/dlib5", "dlib150/dlib5 placed", "dlib150/arcface5",
                            "arcface112/dlib5", "dlib150/box", "arcface112/box")}
    fidelity = []
    for name, img, f, y in faces:
        details = dlib.get_face_chip_details(f.shape, size=DLIB_SIZE, padding=DLIB_PADDING)
        m_dlib = dlib_chip_matrix(details)
        m_arc = al.similarity_transform(y.landmarks, arc)
        rows["dlib150/dlib5"].append(al.apply_transform(m_dlib, f.landmarks))
        # Where dlib's own template points land in this chip: its fit (template → photo,
        # least squares in the photo) followed by the chip transform.
        fit = al.similarity_transform(dlib_fit_points(), f.landmarks)
        rows["dlib150/dlib5 placed"].append(
            al.apply_transform(m_dlib, al.apply_transform(fit, dlib_fit_points())))
        rows["dlib150/arcface5"].append(al.apply_transform(m_dlib, y.landmarks))
        rows["arcface112/dlib5"].append(al.apply_transform(m_arc, f.landmarks))
        rows["dlib150/box"].append(box_in_chip(m_dlib, f.box))
        rows["arcface112/box"].append(box_in_chip(m_arc, f.box))
        # Check the rebuilt transform against dlib's own chip pixels.
        ref = np.asarray(dlib.get_face_chip(img, f.shape, size=DLIB_SIZE, padding=DLIB_PADDING),
                         dtype=np.float64)
        mine = al._warp(img, m_dlib, DLIB_SIZE).astype(np.float64)
        fidelity.append((name, np.abs(ref - mine).mean()))
    return {k: np.array(v) for k, v in rows.items()}, fidelity


def fmt(a) -> str:
    return "[" + ", ".join(f"[{x:.2f}, {y:.2f}]" for x, y in np.round(a, 2)) + "]"


def template_fidelity(faces, points) -> float:
    """Mean |pixel difference| between warp_to_template(dlib5 → ``points``) and dlib's chip."""
    t = al.Template("candidate", DLIB_SIZE, {"dlib5": points}, (0.0, 0.0, 1.0),
                    fit="template_to_landmarks")
    diffs = []
    for _, img, f, _ in faces:
        ref = np.asarray(dlib.get_face_chip(img, f.shape, size=DLIB_SIZE, padding=DLIB_PADDING))
        mine = al.warp_to_template(img, f.landmarks, "dlib5", t)
        diffs.append(np.abs(ref.astype(np.float64) - mine).mean())
    return float(np.mean(diffs))


def main():
    pairs = matched_faces()
    print(f"{len(pairs)} faces found by both dlib and YuNet, in the photo and mirrored")
    yunet_order_check([r for pair in pairs for r in pair])
    # Judge each face by its mean |yaw| over both views: YuNet's nose is noisy enough that a face
    # and its mirror image can land on opposite sides of the threshold.
    def pair_yaw(pair):
        return float(np.mean([abs(yaw_ratio(r[3])) for r in pair]))

    faces = [r for pair in pairs if pair_yaw(pair) <= MAX_YAW for r in pair]
    dropped = [f"{pair[0][0]} yaw {pair_yaw(pair):.2f}"
               for pair in pairs if pair_yaw(pair) > MAX_YAW]
    print(f"Using the {len(faces) // 2} near-frontal ones (mean |yaw ratio| <= {MAX_YAW}), each "
          f"with its mirror image: {len(faces)} samples; left out: {'; '.join(dropped)}")
    rows, fidelity = measure(faces)

    print("\nRebuilt dlib chip transform vs dlib.get_face_chip, mean |pixel difference| (0..255):")
    print("  " + ", ".join(f"{d:.2f}" for _, d in fidelity))
    print("  (dlib truncates instead of rounding, about -0.5 per resampling, and its image pyramid\n"
          "   samples half a source pixel off (x-0.5, y+0.5); the geometry is otherwise identical)")

    for key in ("dlib150/dlib5", "dlib150/arcface5", "arcface112/dlib5"):
        a = rows[key]
        print(f"\n{key}: mean over {len(a)} faces  [per-point std x, y]")
        for mean, std in zip(a.mean(0), a.std(0)):
            print(f"  ({mean[0]:7.2f}, {mean[1]:7.2f})   [{std[0]:.2f}, {std[1]:.2f}]")
    placed, measured = rows["dlib150/dlib5 placed"], rows["dlib150/dlib5"].mean(0)
    print(f"\ndlib150/dlib5, dlib's own template points as placed in these chips (std over faces "
          f"<= {placed.std(0).max():.2f} px):\n  {fmt(placed.mean(0))}")
    print(f"  largest difference from the landmark mean above: "
          f"{np.abs(measured - placed.mean(0)).max():.2f} px")
    print(f"  warp_to_template vs dlib.get_face_chip, mean |diff| per chip: template as placed "
          f"{template_fidelity(faces, placed.mean(0)):.2f}, landmark mean "
          f"{template_fidelity(faces, measured):.2f}")
    for key in ("dlib150/box", "arcface112/box"):
        a = rows[key]
        print(f"\n{key} (cx, cy, side): mean {np.round(a.mean(0), 2).tolist()}, "
              f"std {np.round(a.std(0), 2).tolist()}")

    print("\nPaste into prefiqs_core/alignment.py TEMPLATES (dlib150/dlib5: dlib's own template as"
          " placed, which is what get_face_chip fits to; the landmark mean confirms it):")
    print(f'  "dlib150": dlib5={fmt(placed.mean(0))}')
    print(f'             arcface5={fmt(rows["dlib150/arcface5"].mean(0))}')
    print(f'             box={tuple(np.round(rows["dlib150/box"].mean(0), 2).tolist())}')
    print(f'  "arcface112": dlib5={fmt(rows["arcface112/dlib5"].mean(0))}')
    print(f'                box={tuple(np.round(rows["arcface112/box"].mean(0), 2).tolist())}')


if __name__ == "__main__":
    main()
