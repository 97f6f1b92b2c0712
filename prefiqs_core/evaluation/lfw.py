"""Real recognition errors for choosing and proving quality settings: LFW-style identity folders.

The folder holds ``<Name>/<Name>_NNNN.jpg`` (or ``images/<Name>/...``). Every image is detected and
aligned once with the project's own pipeline (dlib HOG + 5 points, the face nearest the image
centre); when no face is found, the 5 points are placed in a fixed box (the median of the boxes
found in the same folder) and that is counted. Chips for every template are cached, so a sweep
over pruning settings never detects twice.

The recognition system is the dense network: its similarities and its FMR threshold are the same
for every quality measure, so each measure only changes the order in which genuine pairs are
discarded. That makes the fixed-threshold FNM-EDC cheap to evaluate for many settings, and lets a
people-level bootstrap resample identities with weights instead of recomputing embeddings.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..assets import IMAGE_EXTENSIONS

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # every image kind the CLI reads (the ORL faces are .pgm)


# --------------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------------

def read_people(root, max_per_person: int = 20, min_per_person: int = 2, seed: int = 0,
                max_people: int | None = None):
    """``(paths, labels)`` of an identity folder, at most ``max_per_person`` images per person
    (a seeded sample, so a few people with hundreds of photos do not dominate the genuine pairs);
    ``max_people`` keeps the first people in name order (quick runs)."""
    root = Path(root)
    base = root / "images" if (root / "images").is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"identity folder not found: {root}")
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for person in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < min_per_person:
            continue
        if max_per_person and len(files) > max_per_person:
            keep = np.sort(rng.choice(len(files), max_per_person, replace=False))
            files = [files[i] for i in keep]
        paths += [str(f) for f in files]
        labels += [person.name] * len(files)
        if max_people and len(set(labels)) >= max_people:
            break
    if not paths:
        raise ValueError(f"{base}: no person folder with at least {min_per_person} images")
    return paths, labels


def people_halves(labels, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean face masks over people-disjoint halves (seeded): choose on one, report on the other."""
    people = np.array(sorted(set(labels)))
    rng = np.random.default_rng(seed)
    first = set(rng.permutation(people)[: len(people) // 2].tolist())
    a = np.array([lab in first for lab in labels])
    return a, ~a


# --------------------------------------------------------------------------------------------
# detection and alignment, once per folder
# --------------------------------------------------------------------------------------------

_DETECTOR = None


def _detect_one(path: str):
    """Centre-most face of one image: (box, score, 5 points in dlib order) or None; chips later."""
    from ..images import load_rgb

    global _DETECTOR
    if _DETECTOR is None:
        from ..alignment import DlibDetector
        _DETECTOR = DlibDetector()
    img = load_rgb(path)
    faces = _DETECTOR.detect(img)
    if not faces:
        return None, len(faces)
    h, w = img.shape[:2]
    f = min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - w / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2)
    return (f.box, f.score, f.landmarks), len(faces)


def _init_worker():
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(0)


def detect_folder(paths, workers: int | None = None, progress=None) -> dict:
    """Boxes and 5 points for every image; images with no face get the median box's points."""
    from multiprocessing import get_context

    from ..alignment import DlibDetector
    from ..images import load_rgb

    workers = workers if workers is not None else max(1, os.cpu_count() or 1)
    if workers > 1:
        with get_context("fork").Pool(workers, initializer=_init_worker) as pool:
            found = list(_progress(pool.imap(_detect_one, paths, chunksize=16), len(paths), progress))
    else:
        found = list(_progress(map(_detect_one, paths), len(paths), progress))
    boxes = np.array([f[0][0] for f in found if f[0] is not None], np.float64)
    fixed = np.median(boxes, axis=0) if len(boxes) else None
    det = DlibDetector()
    out_box, out_pts, out_score, fallback, n_faces = [], [], [], [], []
    for p, (hit, n) in zip(paths, found):
        n_faces.append(n)
        if hit is None:
            img = load_rgb(p)
            h, w = img.shape[:2]
            box = fixed if fixed is not None else np.array([0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h])
            face = det.face_in_box(img, box)
            hit = (face.box, math.nan, face.landmarks)
            fallback.append(True)
        else:
            fallback.append(False)
        out_box.append(hit[0])
        out_score.append(hit[1])
        out_pts.append(hit[2])
    return dict(boxes=np.array(out_box, np.float64), scores=np.array(out_score, np.float64),
                landmarks=np.array(out_pts, np.float64), fallback=np.array(fallback),
                n_faces=np.array(n_faces), fixed_box=None if fixed is None else fixed.tolist())


def align_folder(paths, detections: dict, template) -> np.ndarray:
    """Aligned chips ``(N, S, S, 3)`` for ``template``, from :func:`detect_folder`'s points
    (dlib's own chip extractor for its 150 px template, a similarity warp otherwise)."""
    import dlib

    from ..alignment import Face, align_face, get_template
    from ..images import load_rgb

    t = get_template(template)
    chips = np.zeros((len(paths), t.size, t.size, 3), np.uint8)
    for i, p in enumerate(paths):
        box, pts = detections["boxes"][i], detections["landmarks"][i]
        rect = dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
        shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in pts])
        chips[i] = align_face(load_rgb(p), Face(box, 0.0, pts, "dlib5", shape=shape), t)
    return chips


def _progress(it, total, progress):
    return progress(it, total=total) if progress else it


@dataclass
class FaceSet:
    """A cached identity folder: paths, labels and detections (chips per template on demand)."""

    root: Path
    cache: Path
    paths: list
    labels: list
    detections: dict

    @classmethod
    def load(cls, root, cache_dir, max_per_person: int = 20, seed: int = 0, progress=None, workers=None,
             max_people: int | None = None):
        paths, labels = read_people(root, max_per_person, seed=seed, max_people=max_people)
        cache = Path(cache_dir) / (f"faces_m{max_per_person}_s{seed}" + (f"_p{max_people}" if max_people else ""))
        cache.mkdir(parents=True, exist_ok=True)
        index = cache / "faces.json"
        det_file = cache / "detections.npz"
        rel = [os.path.relpath(p, root) for p in paths]
        if index.exists() and det_file.exists() and json.loads(index.read_text()).get("paths") == rel:
            with np.load(det_file) as z:
                det = {k: z[k] for k in z.files}
        else:
            det = detect_folder(paths, workers, progress)
            np.savez(det_file, **{k: np.asarray(v if v is not None else []) for k, v in det.items()})
            index.write_text(json.dumps(dict(root=str(root), paths=rel, labels=labels)))
        return cls(Path(root), cache, paths, labels, det)

    def chips(self, template) -> np.ndarray:
        from ..alignment import get_template

        name = get_template(template).name
        f = self.cache / f"chips_{name}.npy"
        if f.exists():
            c = np.load(f)
            if len(c) == len(self.paths):
                return c
        c = align_folder(self.paths, self.detections, template)
        np.save(f, c)
        return c

    @property
    def n_fallback(self) -> int:
        return int(np.sum(self.detections["fallback"]))


# --------------------------------------------------------------------------------------------
# pairs and the fixed-threshold FNM-EDC, fast enough for sweeps and bootstraps
# --------------------------------------------------------------------------------------------

def _impostor_values(matrix, codes: np.ndarray, block: int) -> np.ndarray:
    """``matrix(lo, hi)`` gives rows ``lo:hi`` x columns ``lo:`` of a pairwise matrix; returns its
    different-identity upper-triangle entries, row block by row block (bounded memory)."""
    out = []
    n = len(codes)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        cols = np.arange(lo, n)[None, :]
        keep = (cols > np.arange(lo, hi)[:, None]) & (codes[lo:hi, None] != codes[None, lo:])
        out.append(matrix(lo, hi)[keep].astype(np.float32))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


COMPARATORS = ("cosine", "euclidean")


def _check_comparator(comparator: str) -> None:
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator is one of {', '.join(COMPARATORS)}, not {comparator!r}")


def _neg_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """−‖x_i − y_j‖ for every row pair (a similarity: higher = more alike)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return -np.sqrt(np.maximum(d2, 0.0))


def impostor_similarities(emb: np.ndarray, codes: np.ndarray, block: int = 1024,
                          comparator: str = "cosine") -> np.ndarray:
    """Similarity of every different-identity pair (upper triangle), ``block`` rows at a time so
    that memory stays at one block of the similarity matrix plus the result. ``"cosine"``: the dot
    product of unit rows; ``"euclidean"``: minus the distance between the rows as given (dlib's own
    comparison uses the distance of its raw, un-normalised descriptors)."""
    _check_comparator(comparator)
    if comparator == "euclidean":
        return _impostor_values(lambda lo, hi: _neg_distances(emb[lo:hi], emb[lo:]), codes, block)
    return _impostor_values(lambda lo, hi: emb[lo:hi] @ emb[lo:].T, codes, block)


def impostor_qualities(quality: np.ndarray, pairs: "PairSet", block: int = 1024) -> np.ndarray:
    """Pair quality (the lower of the two) of the impostor pairs of ``pairs``, in the same order
    as ``pairs.impostor``."""
    q = np.asarray(quality, np.float64)[pairs.faces]
    return _impostor_values(lambda lo, hi: np.minimum(q[lo:hi, None], q[None, lo:]), pairs.codes, block)


@dataclass
class PairSet:
    """Genuine pairs (indices into the faces), their similarities, and the impostor similarities."""

    a: np.ndarray
    b: np.ndarray
    genuine: np.ndarray  # similarity of each genuine pair
    impostor: np.ndarray  # similarity of every impostor pair
    person: np.ndarray  # person code of each genuine pair (for people-level bootstrap)
    n_people: int
    faces: np.ndarray  # the faces of this set (indices into all faces)
    codes: np.ndarray  # their person codes

    @classmethod
    def build(cls, emb: np.ndarray, labels, mask=None, comparator: str = "cosine") -> "PairSet":
        """Pairs among the faces where ``mask`` is true (all faces when None); ``emb`` unit rows
        for ``"cosine"``, the descriptors as the recogniser compares them for ``"euclidean"``
        (similarity = −distance; see :func:`impostor_similarities`)."""
        from .pairs import genuine_pairs

        _check_comparator(comparator)
        idx = np.flatnonzero(mask) if mask is not None else np.arange(len(labels))
        sub = [labels[i] for i in idx]
        people = sorted(set(sub))
        code = _codes(sub, people)
        g = genuine_pairs(sub)
        e = emb[idx]
        if comparator == "euclidean":
            gen = -np.linalg.norm(e[g[:, 0]].astype(np.float64) - e[g[:, 1]], axis=1)
        else:
            gen = np.einsum("ij,ij->i", e[g[:, 0]], e[g[:, 1]]).astype(np.float64)
        imp = impostor_similarities(e, code, comparator=comparator)
        return cls(idx[g[:, 0]], idx[g[:, 1]], gen, imp, code[g[:, 0]], len(people), idx, code)


def _codes(sub, people):
    pos = {p: i for i, p in enumerate(people)}
    return np.array([pos[x] for x in sub])


def threshold_at(impostor: np.ndarray, target_fmr: float) -> float:
    """The project's FMR threshold rule (:func:`prefiqs_core.evaluation.fmr_threshold`) without
    a full sort: the (k+1)-th highest impostor score, nudged up."""
    n = len(impostor)
    k = min(int(math.floor(target_fmr * n + 1e-9)), n - 1)
    s = np.partition(impostor, n - 1 - k)[n - 1 - k]
    return float(np.nextafter(np.float64(s), np.inf))


def weighted_pauc(quality: np.ndarray, errors: np.ndarray, weights: np.ndarray, limit: float = 0.2) -> np.ndarray:
    """Fixed-threshold FNM-EDC pAUC up to ``limit`` for one or many weightings of the genuine pairs.

    ``quality`` and ``errors`` (1 = false non-match at the fixed threshold) are per genuine pair;
    ``weights`` is ``(P,)`` or ``(B, P)`` (a bootstrap: how often each pair's person was drawn).
    Pairs are discarded lowest quality first; the curve is a step function as in
    :func:`prefiqs_core.evaluation.pauc`. Tied qualities are discarded one by one in a fixed order
    (continuous qualities rarely tie; :func:`prefiqs_core.evaluation.edc` groups them).
    Returns ``(B,)`` areas (a scalar array for 1-D weights) and the FNMR at 0 discard.
    """
    order = np.argsort(quality, kind="stable")
    w_all = np.atleast_2d(np.asarray(weights))
    err = np.asarray(errors, np.float64)[order]
    # a few replicates at a time: each step holds several (rows, P) temporaries, which over all
    # replicates of a folder with every photo kept (200k pairs x 1000) would take tens of GiB
    rows = max(1, WEIGHTED_PAUC_ELEMENTS // max(1, w_all.shape[1]))
    parts = [_weighted_pauc_rows(w_all[i:i + rows][:, order].astype(np.float64), err, limit)
             for i in range(0, len(w_all), rows)]
    return np.concatenate([a for a, _ in parts]), np.concatenate([e for _, e in parts])


WEIGHTED_PAUC_ELEMENTS = 1 << 22  # weights per chunk of replicates in weighted_pauc (32 MiB of float64)


def _weighted_pauc_rows(w: np.ndarray, err: np.ndarray, limit: float):
    """:func:`weighted_pauc` for rows of weights already in discard order."""
    total = w.sum(1, keepdims=True)
    kept_w = total - np.concatenate([np.zeros((len(w), 1)), np.cumsum(w, 1)], 1)  # before each step
    kept_e = (w * err).sum(1, keepdims=True) - np.concatenate([np.zeros((len(w), 1)), np.cumsum(w * err, 1)], 1)
    x = 1 - kept_w / total  # discard fraction after discarding i pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(kept_w > 0, kept_e / np.where(kept_w > 0, kept_w, 1), 0.0)
    # step area: y[i] holds on [x[i], x[i+1]) ; clip the steps at the limit
    x_next = np.concatenate([x[:, 1:], np.ones((len(w), 1))], 1)
    seg = np.clip(np.minimum(x_next, limit) - np.minimum(x, limit), 0, None)
    area = (seg * y).sum(1)
    return area, y[:, 0].copy()  # not a view: it would keep every chunk's (rows, P) curve alive


def people_counts(n_people: int, reps: int = 1000, seed: int = 0) -> np.ndarray:
    """``(reps, n_people)``: how often each person is drawn when each replicate draws ``n_people``
    people with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_people, (reps, n_people))
    return np.stack([np.bincount(d, minlength=n_people) for d in draws])


def people_bootstrap(person: np.ndarray, n_people: int, reps: int = 1000, seed: int = 0) -> np.ndarray:
    """``(reps, P)`` pair weights: each replicate draws ``n_people`` people with replacement and
    weights every genuine pair by how often its person was drawn (float32 holds these counts
    exactly, at half the memory of float64)."""
    return people_counts(n_people, reps, seed).astype(np.float32)[:, person]
