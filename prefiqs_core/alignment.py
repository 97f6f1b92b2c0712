"""Face detection and alignment: from a photo to the aligned chip a backbone expects.

Two things must agree for a face-recognition network to see what it was trained on: the
*landmarks* a detector gives and the *template* those landmarks are moved onto.

Landmark conventions (always 5 points, ``(5, 2)`` float ``(x, y)`` image pixels):

* ``"arcface5"``: left eye centre, right eye centre, nose tip, left mouth corner, right mouth
  corner, where "left" means *image*-left (the subject's right). RetinaFace, MTCNN, YuNet and
  insightface all give this order.
* ``"dlib5"``: dlib's 5-point shape predictor order: image-right eye outer corner, image-right
  eye inner corner, image-left eye outer corner, image-left eye inner corner, nose base
  (the point under the nose, between the nostrils).

Templates (where the 5 points should land in the chip, in chip pixels, one set per convention):

* ``"dlib150"``: dlib's own 150x150 chip, ``dlib.get_face_chip(img, shape, size=150,
  padding=0.25)``; the chip dlib's ResNet-29 was trained on.
* ``"arcface112"``: insightface's 112x112 ArcFace template (``arcface_src``).

Pixel coordinates follow OpenCV and dlib: integer coordinates are pixel centres.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

CONVENTIONS = ("dlib5", "arcface5")

# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


@dataclass
class Face:
    """One detected face.

    ``box`` is ``(x0, y0, x1, y1)`` in image pixels (``x1``/``y1`` exclusive, as in slicing);
    ``landmarks`` is ``(5, 2)`` float pixels in ``convention`` order, or ``None`` for a detector
    that gives boxes only. ``shape`` is the dlib ``full_object_detection`` when the face came from
    :class:`DlibDetector`, so that :func:`align_face` can cut dlib's exact chip.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: Optional[np.ndarray] = None
    convention: Optional[str] = None
    shape: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.box = tuple(float(v) for v in self.box)
        if len(self.box) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1), got {self.box}")
        self.score = float(self.score)
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float64)
            if self.landmarks.shape != (5, 2):
                raise ValueError(f"landmarks must be (5, 2), got {self.landmarks.shape}")
            _check_convention(self.convention)


@dataclass(frozen=True, eq=False)
class Template:
    """Where the 5 landmarks land in a ``size`` x ``size`` chip, for each landmark convention.

    ``box`` is ``(cx, cy, side)``: where the square of a dlib HOG face box (side
    ``sqrt(w * h)``) lands in the chip, on average. It is used only for faces without landmarks.

    ``fit`` is the direction in which the training pipeline fitted its similarity, which matters
    because a least-squares fit and the inverse of the reverse fit differ (in scale, mostly) when
    the 5 points do not match the template exactly, i.e. always:
    ``"landmarks_to_template"`` (insightface's norm_crop: residuals measured in the chip) or
    ``"template_to_landmarks"`` (dlib's get_face_chip_details: residuals measured in the photo).
    """

    name: str
    size: int
    points: dict
    box: tuple[float, float, float]
    fit: str = "landmarks_to_template"

    def __post_init__(self):
        frozen = {}
        for conv, pts in self.points.items():
            _check_convention(conv)
            a = np.array(pts, dtype=np.float64)
            if a.shape != (5, 2):
                raise ValueError(f"template {self.name!r}/{conv}: points must be (5, 2)")
            a.setflags(write=False)  # template constants must not be edited in place by accident
            frozen[conv] = a
        object.__setattr__(self, "points", frozen)
        if self.fit not in ("landmarks_to_template", "template_to_landmarks"):
            raise ValueError(f"template {self.name!r}: unknown fit direction {self.fit!r}")

    def transform(self, landmarks, convention: str) -> np.ndarray:
        """The ``(2, 3)`` photo → chip similarity for ``landmarks`` given in ``convention``."""
        dst = self.landmarks(convention)
        if self.fit == "template_to_landmarks":
            return cv2.invertAffineTransform(similarity_transform(dst, landmarks))
        return similarity_transform(landmarks, dst)

    def landmarks(self, convention: str) -> np.ndarray:
        _check_convention(convention)
        return self.points[convention]


def _check_convention(convention):
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown landmark convention {convention!r}; use one of {CONVENTIONS}")


# All constants but insightface's published arcface112/arcface5 (arcface_src) were measured by
# tools/measure_templates.py on the demo photos (8 near-frontal faces, each also mirrored: 16
# samples), rounded to 0.01 px; run it to reproduce them and to see the per-point spreads.
# * dlib150/dlib5: dlib's own template points (get_face_chip_details) as they land in its chips;
#   the mean of the 5 predictor points mapped into the chips agrees within 1 px.
# * dlib150/arcface5: YuNet's points mapped into dlib's chips (std over faces 3-8 px).
# * arcface112/dlib5: dlib's points mapped through the YuNet → arcface_src alignment (std 2-5 px).
# * box: a dlib HOG box's centre and sqrt(w*h) side in the chip (std 3-6 px, side 8-11 px).
# The cross-convention points carry the detectors' disagreement about where eyes and noses are,
# so aligning with the template's own convention is always the more precise choice.
TEMPLATES: dict[str, Template] = {
    "dlib150": Template(
        name="dlib150",
        size=150,
        points={
            "dlib5": [[110.45, 45.86], [89.10, 47.40], [36.57, 45.88], [57.91, 47.41],
                      [73.51, 87.28]],
            "arcface5": [[43.43, 44.36], [100.58, 43.47], [70.65, 74.69], [47.70, 101.03],
                         [97.38, 101.19]],
        },
        box=(72.82, 71.98, 131.33),
        fit="template_to_landmarks",  # as dlib's get_face_chip_details fits
    ),
    "arcface112": Template(
        name="arcface112",
        size=112,
        points={
            "arcface5": [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]],
            "dlib5": [[80.86, 54.96], [67.44, 55.05], [32.94, 55.21], [46.43, 55.09],
                      [57.04, 81.10]],
        },
        box=(56.5, 71.31, 85.54),
        fit="landmarks_to_template",  # as insightface's norm_crop fits
    ),
}


def get_template(name: Union[str, Template]) -> Template:
    """The template called ``name`` (a :class:`Template` is passed through)."""
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"unknown alignment template {name!r}; known templates: {sorted(TEMPLATES)}") from None


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _as_points(a, what: str) -> np.ndarray:
    p = np.asarray(a, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2:
        raise ValueError(f"{what} must be (N, 2) with N >= 2, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError(f"{what} contain NaN or infinite coordinates")
    return p


def similarity_transform(src, dst) -> np.ndarray:
    """The ``(2, 3)`` rotation + uniform scale + translation taking ``src`` closest to ``dst``.

    Least squares over the points (Umeyama 1991), reflections excluded: a mirrored face is never
    the right answer for alignment. ``src`` and ``dst`` are ``(N, 2)``, ``N >= 2``.
    Raises ``ValueError`` for NaN/inf coordinates or for degenerate input (all ``src`` points,
    or all ``dst`` points, coincident), where no meaningful transform exists.
    """
    src = _as_points(src, "source points")
    dst = _as_points(dst, "destination points")
    if src.shape != dst.shape:
        raise ValueError(f"source and destination shapes differ: {src.shape} vs {dst.shape}")

    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c ** 2).sum() / len(src)
    var_d = (d_c ** 2).sum() / len(dst)
    # Relative tolerance, so that points far from the origin are judged by their spread.
    if var_s <= 1e-12 * (1.0 + (mu_s ** 2).sum()):
        raise ValueError("source points are degenerate (all coincident)")
    if var_d <= 1e-12 * (1.0 + (mu_d ** 2).sum()):
        raise ValueError("destination points are degenerate (all coincident)")

    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    # Flip the weakest axis when the best orthogonal map would be a reflection.
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply_transform(m: np.ndarray, points) -> np.ndarray:
    """Map ``(N, 2)`` points through a ``(2, 3)`` affine transform."""
    p = np.asarray(points, dtype=np.float64)
    return p @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def _check_image(image) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``, contiguous (dlib and OpenCV need that); grey ``(H, W)`` is expanded."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image must be RGB (H, W, 3), got shape {a.shape}")
    return np.ascontiguousarray(a)


def _warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine`` of ``image`` by ``m`` into a ``size`` x ``size`` chip, without aliasing.

    Bilinear interpolation only looks at 4 source pixels, so when the chip is more than 2x smaller
    than the face in the photo it would skip pixels and alias. Like dlib's extract_image_chip, we
    first halve the image with a Gaussian pyramid until the remaining reduction is at most 2x.
    Only the part of the image under the chip (plus a margin for the pyramid filter) is processed.

    Pixels outside the photo become black (constant 0): that is what both training pipelines did
    (dlib's extract_image_chip zero-fills, insightface's norm_crop uses borderValue 0), and
    replicating edge pixels would smear texture the networks never saw.
    """
    m = np.array(m, dtype=np.float64)
    inv = cv2.invertAffineTransform(m)
    corners = apply_transform(inv, [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]])
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    margin = 4.0 / scale + 8  # bilinear support plus the pyramid filters' reach, in photo pixels
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(corners[:, 0].min() - margin), 0, w))
    x1 = int(np.clip(np.ceil(corners[:, 0].max() + margin) + 1, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min() - margin), 0, h))
    y1 = int(np.clip(np.ceil(corners[:, 1].max() + margin) + 1, 0, h))
    if x1 <= x0 or y1 <= y0:  # the chip lies wholly outside the photo
        return np.zeros((size, size, 3), np.uint8)
    img = image[y0:y1, x0:x1]
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)  # crop offset
    while scale < 0.5 and min(img.shape[:2]) >= 4:
        img = cv2.pyrDown(img)
        m[:, :2] *= 2.0  # pyrDown's pixel i sits on the input's pixel 2i
        scale *= 2.0
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_to_template(image_rgb, landmarks, convention: str, template) -> np.ndarray:
    """The aligned uint8 chip ``(size, size, 3)``: ``landmarks`` moved onto ``template``'s points."""
    t = get_template(template)
    img = _check_image(image_rgb)
    return _warp(img, t.transform(landmarks, convention), t.size)


def box_to_template(image_rgb, box, template) -> np.ndarray:
    """A chip for a face known only by its box: an approximation, for landmark-less detectors.

    The box's square (side ``sqrt(w * h)``, same centre) is scaled and shifted to where a dlib HOG
    box lands in the template on average (``Template.box``). No rotation is corrected, and a box
    from another detector (YuNet's, for instance, is taller and reaches the forehead) will be
    framed somewhat differently; prefer landmarks whenever they are available.
    """
    t = get_template(template)
    img = _check_image(image_rgb)
    x0, y0, x1, y1 = (float(v) for v in box)
    side = np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))
    if not np.isfinite(side) or side <= 0:
        raise ValueError(f"face box {box} is empty")
    cx, cy, chip_side = t.box
    s = chip_side / side
    m = np.array([[s, 0.0, cx - s * (x0 + x1) / 2], [0.0, s, cy - s * (y0 + y1) / 2]])
    return _warp(img, m, t.size)


def resize_chip(image_rgb, size: int) -> np.ndarray:
    """Resize an image that is *already* an aligned chip to ``size`` x ``size``.

    A non-square chip is padded with black, symmetrically, to a square on its longer side before
    resizing, never cropped or stretched: the common non-square case, SphereFace/CosFace 96x112
    chips, is exactly the ArcFace 112x112 template with 8 px cut from each side, so padding
    restores that geometry. Shrinking uses area averaging (no aliasing), enlarging bicubic.

    Note that this keeps the chip's own template: a 112x112 ArcFace chip resized to 150 is not a
    dlib chip (the face is framed differently); see :func:`convert_chip` for that.
    """
    img = _check_image(image_rgb)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    h, w = img.shape[:2]
    if h != w:
        n = max(h, w)
        top, left = (n - h) // 2, (n - w) // 2
        img = cv2.copyMakeBorder(img, top, n - h - top, left, n - w - left,
                                 cv2.BORDER_CONSTANT, value=0)
    n = img.shape[0]
    if n == size:
        return img.copy()
    interp = cv2.INTER_AREA if size < n else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def convert_chip(chip_rgb, from_template, to_template) -> np.ndarray:
    """Re-frame an aligned chip from one template to another (e.g. arcface112 → dlib150).

    The chip is warped by the similarity between the two templates' arcface5 points. Parts of the
    target chip that the source chip does not cover come out black; a dlib150 chip shows more
    of the head than an arcface112 one, so converting arcface112 → dlib150 leaves a black rim.
    """
    src_t, dst_t = get_template(from_template), get_template(to_template)
    img = _check_image(chip_rgb)
    if img.shape[:2] != (src_t.size, src_t.size):
        img = resize_chip(img, src_t.size)
    m = similarity_transform(src_t.landmarks("arcface5"), dst_t.landmarks("arcface5"))
    return _warp(img, m, dst_t.size)


def align_face(image_rgb, face: Face, template) -> np.ndarray:
    """The aligned chip for ``face`` in ``image_rgb`` under ``template`` (name or Template).

    * dlib150 and a face from :class:`DlibDetector`: ``dlib.get_face_chip`` itself, exactly the
      chips dlib's ResNet-29 was trained on.
    * any face with landmarks: :func:`warp_to_template`.
    * a face with a box only: :func:`box_to_template` (an approximation; see there).
    """
    t = get_template(template)
    img = _check_image(image_rgb)
    if t.name == "dlib150" and face.shape is not None and _shape_matches(face):
        import dlib

        return np.asarray(dlib.get_face_chip(img, face.shape, size=t.size, padding=0.25),
                          dtype=np.uint8)
    if face.landmarks is not None:
        return warp_to_template(img, face.landmarks, face.convention, t)
    return box_to_template(img, face.box, t)


def _shape_matches(face: Face) -> bool:
    """Whether the kept dlib shape still describes the face (landmarks not edited since)."""
    if face.landmarks is None or face.convention != "dlib5":
        return False
    parts = np.array([[p.x, p.y] for p in face.shape.parts()], dtype=np.float64)
    return parts.shape == (5, 2) and np.allclose(parts, face.landmarks)


# --------------------------------------------------------------------------------------------
# Detectors
# --------------------------------------------------------------------------------------------


class DlibDetector:
    """dlib's HOG face detector plus its 5-point shape predictor.

    The models load on first use, and are dropped when the object is pickled, so a detector made
    in a parent process can be handed to DataLoader workers (forked or spawned); each worker loads
    its own copy.
    """

    def __init__(self, upsample: int = 1, min_score: float = 0.0,
                 predictor_path: Union[str, Path, None] = None):
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.predictor_path = predictor_path
        self._detector = None
        self._predictor = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_detector"] = state["_predictor"] = None  # dlib objects do not pickle
        return state

    def _load(self):
        if self._detector is None:
            import dlib

            from . import assets

            path = self.predictor_path or assets.dlib_shape_predictor_5()
            path = assets.require(Path(path), "dlib 5-point shape predictor")
            self._predictor = dlib.shape_predictor(str(path))
            self._detector = dlib.get_frontal_face_detector()

    def detect(self, image_rgb) -> list[Face]:
        """All faces scoring above ``min_score``, best first; ``[]`` when there are none."""
        self._load()
        img = _check_image(image_rgb)
        rects, scores, _ = self._detector.run(img, self.upsample, self.min_score)
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(img, rect)
            pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            faces.append(Face(box=box, score=score, landmarks=pts, convention="dlib5", shape=shape))
        faces.sort(key=lambda f: -f.score)
        return faces

    def face_in_box(self, image_rgb, box) -> Face:
        """The 5 points dlib's shape predictor places in a given ``box`` (x0, y0, x1, y1): for an
        image whose face the detector misses but whose position is known (score NaN)."""
        import dlib

        self._load()
        img = _check_image(image_rgb)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        shape = self._predictor(img, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        return Face(box=(x0, y0, x1, y1), score=float("nan"), landmarks=pts, convention="dlib5", shape=shape)

    def align(self, image_rgb, face: Face, template) -> np.ndarray:
        """See :func:`align_face`."""
        return align_face(image_rgb, face, template)


# YuNet's smallest anchor is 10 px: a smaller image cannot hold a face it can find, and what it
# reports there comes from the zero padding OpenCV adds up to a multiple of 32 px, whose output
# differs between CPUs.
YUNET_MIN_SIDE = 10


def box_centre_inside(box, width: int, height: int) -> bool:
    """Whether the centre of ``box`` (x0, y0, x1, y1) lies in a ``width`` x ``height`` image.

    Detectors that pad their input can report "faces" centred in the padding; those are not in
    the image and are dropped.
    """
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return 0 <= cx < width and 0 <= cy < height


class YuNetDetector:
    """OpenCV's YuNet face detector (``cv2.FaceDetectorYN``): boxes and arcface5 landmarks.

    YuNet's 5 points come image-left first (subject's right eye, subject's left eye, nose tip,
    subject's right mouth corner, subject's left mouth corner), which is the arcface5 order, so no
    reordering is needed. Loaded lazily and dropped on pickling, like :class:`DlibDetector`.
    """

    def __init__(self, score_threshold: float = 0.7, nms_threshold: float = 0.3,
                 model_path: Union[str, Path, None] = None):
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.model_path = model_path
        self._net = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_net"] = None
        return state

    def _load(self):
        if self._net is None:
            from . import assets

            path = self.model_path or assets.yunet_model()
            path = assets.require(Path(path), "YuNet ONNX model")
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320),
                                                  self.score_threshold, self.nms_threshold)

    def detect(self, image_rgb) -> list[Face]:
        """All faces scoring above ``score_threshold``, best first; ``[]`` when there are none."""
        self._load()
        img = _check_image(image_rgb)
        h, w = img.shape[:2]
        if min(h, w) < YUNET_MIN_SIDE:
            return []
        self._net.setInputSize((w, h))
        _, rows = self._net.detect(np.ascontiguousarray(img[..., ::-1]))  # YuNet wants BGR
        faces = []
        for r in ([] if rows is None else rows):
            x, y, bw, bh = (float(v) for v in r[:4])
            face = Face(box=(x, y, x + bw, y + bh), score=float(r[14]),
                        landmarks=np.asarray(r[4:14], np.float64).reshape(5, 2),
                        convention="arcface5")
            if box_centre_inside(face.box, w, h):
                faces.append(face)
        faces.sort(key=lambda f: -f.score)
        return faces

    def align(self, image_rgb, face: Face, template) -> np.ndarray:
        """See :func:`align_face`."""
        return align_face(image_rgb, face, template)
