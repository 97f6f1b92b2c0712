"""Files → aligned chips → scores, streaming in batches.

The network runs in the main process on full batches. Face detection (hundreds of ms per photo, the
network a few ms per face) runs in DataLoader worker processes, one per core. Aligned chips and
landmark warps are cheap next to the network, so they are decoded by threads of the main process
(OpenCV and Pillow decode without the GIL): on the CPU only a few images ahead, so that decoding
fills the gaps between forwards instead of taking a core from the network's threads mid-batch (see
:func:`iter_images`). Images that cannot be used yield an error row and never stop the run.
"""
from __future__ import annotations

import io
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .assets import IMAGE_EXTENSIONS
from .images import ImageError, load_rgb

MODES = ("detect", "aligned", "landmarks")

# Detectors scan every pixel (dlib also upsamples 2x), so a 10,000 x 10,000 scan would take minutes
# and gigabytes; faces are found on a copy whose longer side is at most this, then mapped back and
# cut from the full-resolution image, so the chip loses nothing.
MAX_DETECT_SIDE = 2560


def detect_bounded(detector, img: np.ndarray, max_side: int = MAX_DETECT_SIDE) -> list:
    """``detector.detect(img)``, run on a down-scaled copy when ``img`` is larger than ``max_side``.

    Boxes and landmarks come back in ``img``'s pixels. A dlib face keeps a dlib shape (rebuilt at
    full resolution) so that the alignment still cuts dlib's own chip.
    """
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return detector.detect(img)
    import cv2

    f = max_side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    sx, sy = w / small.shape[1], h / small.shape[0]
    return [_rescaled(face, sx, sy) for face in detector.detect(small)]


def _rescaled(face, sx: float, sy: float):
    from .alignment import Face

    x0, y0, x1, y1 = face.box
    box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    if face.landmarks is None:
        return Face(box, face.score)
    pts = face.landmarks * np.array([sx, sy])
    shape = None
    if face.shape is not None:
        import dlib

        pts = np.rint(pts)  # dlib points are integers; align_face checks the shape matches them
        rect = dlib.rectangle(*(int(round(v)) for v in (box[0], box[1], box[2] - 1, box[3] - 1)))
        shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in pts])
    return Face(box, face.score, landmarks=pts, convention=face.convention, shape=shape)


def _plain_jpeg_rgb(path) -> np.ndarray | None:
    """The pixels of a complete, plain JPEG (RGB or grey, upright) decoded by OpenCV, else ``None``.

    OpenCV decodes a 150 px chip in about half the CPU time Pillow takes (no per-image plugin and
    buffer work), and both run the same libjpeg-turbo, so the pixels are the same (tests compare
    them on the real chips and photos). Everything this does not vouch for returns ``None`` and goes
    through :func:`load_rgb`, the reference path with its conversions and error messages: other
    formats, CMYK, an EXIF rotation, a decompression bomb, a degenerate size, and a file that does
    not end in the JPEG end-of-image marker: libjpeg pads a truncated file with grey, and whether
    OpenCV returns that image depends on its version (4.14 refuses it), where Pillow raises; a
    truncated chip must be an error row, not a score.
    """
    import cv2
    from PIL import Image

    try:
        data = Path(path).read_bytes()
        if len(data) < 4 or data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
            return None
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:  # header only: no pixels decoded
            w, h = im.size
            if (im.mode not in ("RGB", "L") or w < 2 or h < 2 or w * h > Image.MAX_IMAGE_PIXELS
                    or ("exif" in im.info and im.getexif().get(0x0112, 1) not in (1, None))):
                return None
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except Exception:  # any doubt: the reference path decides, and names the problem
        return None
    if a is None or a.shape != (h, w, 3):
        return None
    return a


def decode_rgb(path) -> np.ndarray:
    """:func:`load_rgb`, with plain JPEGs decoded by OpenCV (same pixels, half the CPU time)."""
    a = _plain_jpeg_rgb(path)
    return a if a is not None else load_rgb(path)


def expand_paths(inputs: Iterable) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files stay as given; folders are walked for image files (sorted). Returns (paths, missing)."""
    paths, missing = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            missing.append((p, "no such file or folder"))
    return paths, missing


@dataclass
class ImageFaces:
    """What one image yields: aligned chips (possibly none) or an error."""

    path: str
    chips: np.ndarray  # (n, S, S, 3) uint8
    boxes: list = field(default_factory=list)  # per face (x0, y0, x1, y1) pixels, or None when aligned
    scores: list = field(default_factory=list)  # detector scores, or None
    size: tuple = (0, 0)  # (width, height) of the image
    error: str | None = None


class ChipDataset(Dataset):
    """Per image: decode, then resize (``"aligned"``: already-aligned chips), detect + align each
    face (``"detect"``), or align the one face whose 5 points are given (``"landmarks"``: an
    ``(N, 5, 2)`` array in ``convention`` order, image pixels, e.g. a benchmark's own points)."""

    def __init__(self, paths, backbone_preprocess, mode: str = "detect", detector=None,
                 landmarks=None, convention: str = "arcface5"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.paths = [str(p) for p in paths]
        self.pre = backbone_preprocess
        self.mode = mode
        self.detector = detector
        self.landmarks = None
        self.convention = convention
        if mode == "landmarks":
            lm = np.asarray(landmarks, dtype=np.float64) if landmarks is not None else None
            if lm is None or lm.shape != (len(self.paths), 5, 2):
                raise ValueError(f"mode 'landmarks' needs landmarks of shape ({len(self.paths)}, 5, 2), got "
                                 f"{None if lm is None else lm.shape}")
            self.landmarks = lm
        if mode == "detect" and detector is None:
            from .alignment import DlibDetector
            self.detector = DlibDetector()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i) -> ImageFaces:
        from .alignment import align_face, get_template, resize_chip

        path = self.paths[i]
        empty = np.zeros((0, self.pre.size, self.pre.size, 3), np.uint8)
        try:
            img = decode_rgb(path)
        except ImageError as e:
            return ImageFaces(path, empty, error=str(e))
        size = (img.shape[1], img.shape[0])
        if self.mode == "aligned":
            return ImageFaces(path, resize_chip(img, self.pre.size)[None], [None], [None], size)
        if self.mode == "landmarks":
            from .alignment import warp_to_template

            try:
                chip = warp_to_template(img, self.landmarks[i], self.convention, get_template(self.pre.template))
            except (ValueError, RuntimeError) as e:
                return ImageFaces(path, empty, size=size, error=f"alignment to the given points failed ({e})")
            return ImageFaces(path, chip[None], [None], [None], size)
        try:
            faces = detect_bounded(self.detector, img)
            if not faces:
                return ImageFaces(path, empty, size=size, error="no face detected")
            template = get_template(self.pre.template)
            chips = np.stack([align_face(img, f, template) for f in faces])
        except (ValueError, RuntimeError, MemoryError) as e:  # one odd image must not end the run
            return ImageFaces(path, empty, size=size, error=f"face detection/alignment failed ({e})")
        return ImageFaces(path, chips, [tuple(map(float, f.box)) for f in faces],
                          [float(f.score) for f in faces], size)


def _worker_init(_):
    # Each worker decodes and detects on one core; letting torch/OpenCV spawn threads there only
    # oversubscribes the CPU the main process needs for the network. OpenCV must run with 0 threads
    # (not 1): a forked worker inherits the parent's OpenCV thread pool in a broken state, and any
    # call that still goes through the pool deadlocks once the parent has used it.
    torch.set_num_threads(1)
    try:
        import cv2
        cv2.setNumThreads(0)
    except ImportError:
        pass


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Workers :func:`iter_images` uses when none are asked for: one per usable core, at most 4.

    Detection costs a few hundred ms of CPU per photo against a few ms per face for the network, so
    the main process is mostly idle and every core should detect. Chips and landmark warps are
    decoded by threads of the main process between forwards, so threads on every core make the
    decoding of a batch short without taking cores from the network.
    """
    return min(4, usable_cores())


def iter_images(dataset: ChipDataset, num_workers: int | None = None, batch_size: int = 64,
                model_device=None) -> Iterator[ImageFaces]:
    """Decoded, aligned images in order; ``num_workers`` workers prepare them (0: the caller's thread;
    default :func:`default_workers`).

    ``"detect"``: DataLoader worker processes keep about two scoring batches (``batch_size`` faces)
    decoded in advance: while the network runs on one batch they fill the next.

    ``"aligned"`` and ``"landmarks"``: threads of this process. ``model_device`` is where the
    consumer's network runs. On the CPU (the default) it uses every core; a decoder working ahead in
    parallel preempts one of the network's threads, and every other thread then waits for it
    at the next layer, so decoding costs the network far more than its own CPU time (end to end fell
    to 68 % of the model-only rate with one worker process working ahead). The threads therefore
    work only a few images ahead: they decode the next batch while the consumer collects it, at
    full width, and are idle while the network runs. On a GPU the cores are free while it computes,
    so they keep two batches ahead.
    """
    if num_workers is None:
        num_workers = default_workers()
    if num_workers < 0:
        raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
    if num_workers == 0:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    if dataset.mode != "detect":
        on_cpu = model_device is None or torch.device(model_device).type == "cpu"
        yield from _threaded(dataset, num_workers, 2 * num_workers if on_cpu else 2 * max(batch_size, 1))
        return
    prefetch = max(8, -(-2 * batch_size // num_workers))
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                        worker_init_fn=_worker_init, prefetch_factor=prefetch, persistent_workers=False)
    yield from loader


def _threaded(dataset, threads: int, ahead: int) -> Iterator:
    """``dataset[i]`` in order, computed by ``threads`` threads at most ``ahead`` items in advance."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="prefiqs-decode")
    pending: deque = deque()
    try:
        nxt = 0
        while nxt < len(dataset) or pending:
            while nxt < len(dataset) and len(pending) < max(ahead, 1):
                pending.append(pool.submit(dataset.__getitem__, nxt))
                nxt += 1
            yield pending.popleft().result()
    finally:  # also when the consumer stops early: drop what is queued, finish what runs
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class FaceRow:
    path: str
    face: int  # index of the face in its image; -1 for an image-level error
    box: tuple | None
    det_score: float | None
    drift: float | None
    quality: float | None
    error: str | None = None
    dense: np.ndarray | None = None
    pruned: np.ndarray | None = None


def score_images(scorer, images: Iterable[ImageFaces], batch_size: int = 64,
                 keep_embeddings: bool = False) -> Iterator[FaceRow]:
    """Score faces from ``images`` in full batches, yielding rows in input order."""
    pending: list[ImageFaces] = []
    n_chips = 0

    def flush():
        nonlocal pending, n_chips
        chips = [im.chips for im in pending if im.error is None]
        res = scorer.score(np.concatenate(chips), batch_size=max(batch_size, 1)) if chips else None
        j = 0
        for im in pending:
            if im.error is not None:
                yield FaceRow(im.path, -1, None, None, None, None, im.error)
                continue
            for k in range(len(im.chips)):
                yield FaceRow(im.path, k, im.boxes[k], im.scores[k], float(res.drift[j]), float(res.quality[j]),
                              None, res.dense[j] if keep_embeddings else None,
                              res.pruned[j] if keep_embeddings else None)
                j += 1
        pending, n_chips = [], 0

    for im in images:
        pending.append(im)
        n_chips += len(im.chips)
        if n_chips >= batch_size:
            yield from flush()
    if pending:
        yield from flush()
