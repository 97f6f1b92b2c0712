"""Tests for prefiqs_core.alignment on the real demo photos (``make assets``).

A missing asset fails with assets.require's message (how to fetch it); nothing is skipped.
"""
from __future__ import annotations

import multiprocessing as mp
import pickle

import cv2
import dlib
import numpy as np
import pytest

from prefiqs_core import alignment as al
from prefiqs_core import assets
from prefiqs_core.images import load_rgb

ARC = al.TEMPLATES["arcface112"]
DLIB = al.TEMPLATES["dlib150"]


def photo(name: str) -> np.ndarray:
    return load_rgb(assets.require(assets.photos_dir() / name, f"demo photo {name}"))


@pytest.fixture(scope="module")
def dlib_det():
    return al.DlibDetector()


@pytest.fixture(scope="module")
def yunet():
    return al.YuNetDetector()


# --- similarity_transform ---------------------------------------------------------------------


def random_similarity(rng):
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.1, 5.0)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, rng.uniform(-500, 500)],
                     [scale * s, scale * c, rng.uniform(-500, 500)]])


@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_recovers_a_known_similarity(seed):
    rng = np.random.default_rng(seed)
    m = random_similarity(rng)
    src = rng.uniform(0, 1000, size=(5, 2))
    got = al.similarity_transform(src, al.apply_transform(m, src))
    np.testing.assert_allclose(got, m, atol=1e-6)


def test_similarity_transform_from_two_points_and_never_a_reflection():
    m = al.similarity_transform([[0, 0], [1, 0]], [[10, 10], [10, 12]])  # 90° turn, scale 2
    np.testing.assert_allclose(m, [[0, -2, 10], [2, 0, 10]], atol=1e-12)
    # Mirror-image points: the best similarity is still a proper rotation (det > 0).
    src = np.array([[0, 0], [4, 0], [0, 2], [3, 3]], float)
    m = al.similarity_transform(src, src * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_similarity_transform_rejects_non_finite_points(bad):
    src = np.arange(10, dtype=float).reshape(5, 2)
    broken = src.copy()
    broken[2, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        al.similarity_transform(broken, src)
    with pytest.raises(ValueError, match="NaN or infinite"):
        al.similarity_transform(src, broken)


def test_similarity_transform_rejects_degenerate_points():
    pts = np.arange(10, dtype=float).reshape(5, 2)
    same = np.full((5, 2), 1234.5)
    with pytest.raises(ValueError, match="degenerate"):
        al.similarity_transform(same, pts)
    with pytest.raises(ValueError, match="degenerate"):
        al.similarity_transform(pts, same)
    with pytest.raises(ValueError, match="shape"):
        al.similarity_transform(pts, pts[:4])
    with pytest.raises(ValueError):
        al.similarity_transform(pts[:1], pts[:1])


# --- templates ---------------------------------------------------------------------------------


def test_templates_have_both_conventions_and_are_read_only():
    for name, t in al.TEMPLATES.items():
        assert al.get_template(name) is t
        for conv in al.CONVENTIONS:
            pts = t.landmarks(conv)
            assert pts.shape == (5, 2) and (pts > 0).all() and (pts < t.size).all()
            with pytest.raises(ValueError):
                pts[0, 0] = 0.0
    np.testing.assert_allclose(ARC.landmarks("arcface5")[0], [38.2946, 51.6963])


def test_get_template_error_lists_the_names():
    with pytest.raises(ValueError, match=r"arcface112.*dlib150"):
        al.get_template("arcface128")


def test_warp_puts_landmarks_exactly_on_the_template():
    """Pixel geometry, without any detector noise: dots drawn at 5 points land on the template."""
    for t in al.TEMPLATES.values():
        # Landmarks: the arcface5 template, turned 20°, scaled 3x and moved into a large canvas.
        m = np.array([[3 * np.cos(0.35), -3 * np.sin(0.35), 400],
                      [3 * np.sin(0.35), 3 * np.cos(0.35), 100]])
        pts = al.apply_transform(m, t.landmarks("arcface5"))
        img = np.zeros((1000, 1000, 3), np.uint8)
        for x, y in pts:
            cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 5 * 16, (255, 255, 255),
                       -1, cv2.LINE_AA, shift=4)
        chip = al.warp_to_template(img, pts, "arcface5", t)
        assert chip.shape == (t.size, t.size, 3) and chip.dtype == np.uint8
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(
            (chip[..., 0] > 0).astype(np.uint8))
        found = centroids[1:]
        for want in t.landmarks("arcface5"):
            # intensity-weighted centroid of the blob nearest to the template point
            k = 1 + np.argmin(np.hypot(*(found - want).T))
            ys, xs = np.nonzero(labels == k)
            w = chip[ys, xs, 0].astype(float)
            got = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
            assert np.hypot(*(got - want)) < 0.25, (t.name, want, got)


# --- DlibDetector ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,count", [("obama.jpg", 1), ("obama2.jpg", 1), ("obama3.jpg", 1),
                                        ("biden.jpg", 1), ("friends_t1.jpg", 6)])
def test_dlib_detector_counts_faces(dlib_det, name, count):
    faces = dlib_det.detect(photo(name))
    assert len(faces) == count
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    for f in faces:
        assert f.convention == "dlib5" and f.landmarks.shape == (5, 2)
        x0, y0, x1, y1 = f.box
        assert x1 > x0 and y1 > y0
        # dlib5 order: image-right eye (outer, inner), image-left eye (outer, inner), nose base
        p = f.landmarks
        assert p[0, 0] > p[1, 0] > p[3, 0] > p[2, 0]
        assert p[4, 1] > p[:4, 1].max()


@pytest.mark.parametrize("kind", ["noise", "grey", "black", "tiny"])
def test_no_face_gives_an_empty_list(dlib_det, yunet, kind):
    rng = np.random.default_rng(0)
    img = {"noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
           "grey": np.full((480, 640, 3), 128, np.uint8),
           "black": np.zeros((300, 200, 3), np.uint8),
           "tiny": np.full((3, 3, 3), 200, np.uint8)}[kind]
    assert dlib_det.detect(img) == []
    assert yunet.detect(img) == []


@pytest.mark.parametrize("shape", [(1, 1), (9, 9), (9, 640), (480, 9)])
def test_yunet_ignores_images_below_its_smallest_anchor(yunet, shape):
    assert yunet.detect(np.full(shape + (3,), 200, np.uint8)) == []


def test_box_centre_inside():
    assert al.box_centre_inside((-5, -5, 10, 10), 20, 20)      # overhangs the edge: kept
    assert not al.box_centre_inside((-6, 4, 29, 39), 3, 3)     # centred in the padding
    assert not al.box_centre_inside((15, 0, 30, 10), 20, 20)   # centre at x = 22.5
    assert not al.box_centre_inside((0, 0, 40, 40), 20, 20)    # centre exactly on the border


def test_yunet_keeps_a_face_cut_by_the_image_edge(yunet):
    img = photo("obama.jpg")
    (face,) = yunet.detect(img)
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    cut = np.ascontiguousarray(img[:, (x0 + x1) // 2 - (x1 - x0) // 3:])  # drop a sixth of it
    found = yunet.detect(cut)
    assert len(found) >= 1 and found[0].box[0] < (x1 - x0) / 3


def test_dlib150_alignment_of_dlib_faces_is_dlibs_own_chip(dlib_det):
    img = photo("friends_t1.jpg")
    for face in dlib_det.detect(img):
        ref = np.asarray(dlib.get_face_chip(img, face.shape, size=150, padding=0.25))
        assert np.array_equal(dlib_det.align(img, face, "dlib150"), ref)


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg",
                                  "friends_t1.jpg", "astronaut.png"])
def test_warp_with_the_dlib150_template_matches_dlib(dlib_det, name):
    """warp_to_template(dlib5 → dlib150) is dlib.get_face_chip up to rounding: validates the template.

    Measured mean |difference| per chip (0..255): 0.5-0.9 where dlib resamples the photo directly,
    2.0-2.4 for the large faces where it first halves the photo (its pyramid truncates and samples
    half a pixel off). The template shifted or scaled by 1 px gives 1.7-8.8, above 3.5 on most
    faces, and fitting in insightface's direction instead of dlib's gives up to 15. Bound: 3.5.
    """
    img = photo(name)
    for face in dlib_det.detect(img):
        ref = np.asarray(dlib.get_face_chip(img, face.shape, size=150, padding=0.25), np.float64)
        chip = al.warp_to_template(img, face.landmarks, "dlib5", DLIB)
        assert np.abs(chip - ref).mean() < 3.5


def test_align_with_edited_landmarks_does_not_use_the_stale_dlib_shape(dlib_det):
    img = photo("obama.jpg")
    face = dlib_det.detect(img)[0]
    moved = al.Face(box=face.box, score=face.score, landmarks=face.landmarks + [40, 0],
                    convention="dlib5", shape=face.shape)
    assert np.array_equal(al.align_face(img, moved, "dlib150"),
                          al.warp_to_template(img, moved.landmarks, "dlib5", DLIB))


def test_dlib_faces_align_to_arcface112(dlib_det, yunet):
    """dlib5 → arcface112 through the measured cross-convention template lands near YuNet's."""
    img = photo("obama.jpg")
    chip = dlib_det.align(img, dlib_det.detect(img)[0], "arcface112")
    assert chip.shape == (112, 112, 3)
    found = yunet.detect(chip)
    assert len(found) == 1
    # measured: eyes within 1.7 px, all points within 3.7 px (YuNet's own jitter is 1-4 px)
    assert np.abs(found[0].landmarks - ARC.landmarks("arcface5")).max() < 6


_INHERITED = {}


def _count_faces(args):
    det, name = args
    return len(det.detect(photo(name)))


def _count_faces_inherited(name):
    return len(_INHERITED["det"].detect(photo(name)))


@pytest.mark.parametrize("load_first", [False, True])
def test_detector_pickles_and_works_in_forked_workers(load_first):
    img = photo("obama.jpg")
    det = al.DlibDetector()
    if load_first:
        det.detect(img)  # models loaded in the parent
    clone = pickle.loads(pickle.dumps(det))  # models dropped on pickling, reloaded on use
    assert clone._detector is None and len(clone.detect(img)) == 1
    names = ["obama.jpg", "friends_t1.jpg"]
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:  # handed over by pickling, as with a spawned DataLoader worker
        assert pool.map(_count_faces, [(det, n) for n in names]) == [1, 6]
    _INHERITED["det"] = det
    try:
        with ctx.Pool(2) as pool:  # inherited through fork, as a Dataset is by forked workers
            assert pool.map(_count_faces_inherited, names) == [1, 6]
    finally:
        _INHERITED.clear()


# --- YuNet / arcface112 ------------------------------------------------------------------------


def test_yunet_points_are_arcface5_order(yunet):
    (face,) = yunet.detect(photo("obama.jpg"))
    p = face.landmarks
    assert face.convention == "arcface5"
    assert p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0]  # image-left eye / mouth corner first
    assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()


def test_arcface112_alignment_puts_the_eyes_on_the_template(yunet):
    img = photo("obama.jpg")
    (face,) = yunet.detect(img)
    chip = yunet.align(img, face, "arcface112")
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    found = yunet.detect(chip)  # re-detect on the chip itself
    assert len(found) == 1
    # measured: 2.1 px at most per coordinate (fit residual ~1.5 px plus YuNet's jitter)
    assert np.abs(found[0].landmarks[:2] - ARC.landmarks("arcface5")[:2]).max() < 3


def test_yunet_faces_align_to_dlib150(yunet, dlib_det):
    """arcface5 → dlib150 through the measured cross-convention template lands near dlib's points."""
    img = photo("obama.jpg")
    chip = yunet.align(img, yunet.detect(img)[0], "dlib150")
    found = dlib_det.detect(chip)
    assert len(found) == 1
    # measured: 3.9 px at most
    assert np.abs(found[0].landmarks - DLIB.landmarks("dlib5")).max() < 6


def test_box_only_faces_are_framed_approximately(dlib_det, yunet):
    img = photo("obama.jpg")
    face = dlib_det.detect(img)[0]
    boxed = al.Face(box=face.box, score=face.score)
    chip = al.align_face(img, boxed, "arcface112")
    assert chip.shape == (112, 112, 3)
    (found,) = yunet.detect(chip)
    # an approximation: measured 4 px here; the box's spread over faces is 3-6 px
    assert np.abs(found.landmarks[:2] - ARC.landmarks("arcface5")[:2]).max() < 8
    assert al.align_face(img, boxed, "dlib150").shape == (150, 150, 3)


def test_box_chip_outside_the_photo_is_black():
    img = np.full((100, 100, 3), 200, np.uint8)
    chip = al.box_to_template(img, (1000, 1000, 1100, 1100), "arcface112")
    assert chip.shape == (112, 112, 3) and not chip.any()


# --- already aligned chips ---------------------------------------------------------------------


@pytest.mark.parametrize("h,w,size", [(112, 112, 150), (150, 150, 112), (112, 112, 112),
                                      (112, 96, 112), (96, 112, 150), (250, 250, 150)])
def test_resize_chip_shapes(h, w, size):
    img = np.random.default_rng(0).integers(1, 256, (h, w, 3), dtype=np.uint8)
    out = al.resize_chip(img, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    if (h, w) == (112, 96):  # SphereFace-style chip: padded 8 px each side, not stretched
        assert not out[:, :8].any() and not out[:, -8:].any() and out[:, 8:-8].all()


def test_resize_chip_rejects_bad_input():
    with pytest.raises(ValueError):
        al.resize_chip(np.zeros((112, 112, 3), np.float32), 150)
    with pytest.raises(ValueError):
        al.resize_chip(np.zeros((112, 112, 3), np.uint8), 0)


def test_aligned_112_chip_resizes_for_the_dlib_template(dlib_det):
    path = assets.require(assets.extra_dir() / "tom_hanks_aligned112.png", "aligned test chip")
    chip = load_rgb(path)
    assert chip.shape == (112, 112, 3)
    resized = al.resize_chip(chip, DLIB.size)
    assert resized.shape == (150, 150, 3) and resized.dtype == np.uint8
    assert len(dlib_det.detect(resized)) == 1
    # Re-framing it onto the dlib template brings dlib's own points closer to that template.
    converted = al.convert_chip(chip, "arcface112", "dlib150")
    assert converted.shape == (150, 150, 3)

    def error(c):
        (f,) = dlib_det.detect(c)
        return np.hypot(*(f.landmarks - DLIB.landmarks("dlib5")).T).mean()

    # measured mean point error: 22.5 px resized, 7.1 px converted (this face is tilted down)
    assert error(converted) < 10 < error(resized)


# --- inputs and missing assets -----------------------------------------------------------------


def test_face_validates_its_landmarks():
    with pytest.raises(ValueError):
        al.Face(box=(0, 0, 10, 10), score=1.0, landmarks=np.zeros((4, 2)), convention="dlib5")
    with pytest.raises(ValueError):
        al.Face(box=(0, 0, 10, 10), score=1.0, landmarks=np.zeros((5, 2)), convention="mtcnn")
    with pytest.raises(ValueError):
        al.warp_to_template(np.zeros((50, 50, 3), np.uint8), np.zeros((5, 2)), "dlib6", ARC)


def test_grey_images_are_accepted(dlib_det):
    grey = cv2.cvtColor(photo("obama.jpg"), cv2.COLOR_RGB2GRAY)
    (face,) = dlib_det.detect(grey)
    assert dlib_det.align(grey, face, "dlib150").shape == (150, 150, 3)


def test_missing_models_fail_with_the_fetch_instructions(tmp_path, monkeypatch):
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(FileNotFoundError, match="make assets"):
        al.DlibDetector(predictor_path=tmp_path / "nothing.dat").detect(img)
    monkeypatch.setenv("PREFIQS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make assets"):
        al.YuNetDetector().detect(img)
