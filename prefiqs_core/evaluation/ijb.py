"""IJB-B / IJB-C 1:1 template verification in the layout insightface distributes, with no FiftyOne.

The ``IJB_release`` archive holds, for each of ``IJBB`` and ``IJBC``::

    IJBC/
      loose_crop/<name>.jpg                 loosely cropped faces (one face per file)
      meta/ijbc_name_5pts_score.txt         <name> x1 y1 ... x5 y5 <detector score>
      meta/ijbc_face_tid_mid.txt            <name> <template id> <media id>     (same order)
      meta/ijbc_template_pair_label.txt     <template id> <template id> <1 = same person, 0 = not>

The 5 points are in loose-crop pixels, in the ArcFace order (image-left eye first: the
``arcface5`` convention of :mod:`prefiqs_core.alignment`). IJB-C has 227,630 faces in 23,124
templates and 15.7 M template pairs (19,557 genuine); :meth:`IJBProtocol.subset` samples pairs
for a quicker run and keeps only the faces their templates need.

Templates are compared through :func:`prefiqs_core.evaluation.pairs.aggregate_templates` (media averaged,
then summed; template quality = min over its faces).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

TARGETS = ("IJBC", "IJBB")


class IJBFormatError(ValueError):
    """The folder is not an IJB-B/C release in the expected layout, or a meta file is malformed."""


@dataclass
class IJBProtocol:
    """One IJB 1:1 protocol: per face its file, 5 points, detector score, template and media; per
    template pair its two template ids and whether they show the same person."""

    name: str  # "IJBC" or "IJBB" (or a subset's name)
    image_dir: Path
    image_names: list[str]
    landmarks: np.ndarray  # (N, 5, 2) float, arcface5 order, loose-crop pixels
    face_scores: np.ndarray  # (N,) detector scores
    template_ids: np.ndarray  # (N,) int64
    media_ids: np.ndarray  # (N,) int64
    pair_t1: np.ndarray  # (P,) int64
    pair_t2: np.ndarray  # (P,) int64
    pair_label: np.ndarray  # (P,) bool: True = same person
    n_pairs_total: int = -1  # pairs in the full protocol (a subset holds fewer)

    def __len__(self):
        return len(self.image_names)

    @property
    def paths(self) -> list[str]:
        return [str(self.image_dir / n) for n in self.image_names]

    def subset(self, max_pairs: int | None = None, seed: int = 0,
               max_templates: int | None = None) -> "IJBProtocol":
        """A smaller protocol for a quicker run, keeping only the faces its pairs need.

        ``max_templates``: a seeded uniform sample of that many templates, and the pairs among them
        (about ``P * (k / T)^2`` pairs, but only the sampled templates' faces are decoded).
        ``max_pairs``: then a seeded uniform sample of that many of the remaining pairs (random pairs
        touch most templates, so this alone saves little decoding). Pair order is kept.
        """
        for name, v in (("max_pairs", max_pairs), ("max_templates", max_templates)):
            if v is not None and (int(v) != v or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        rng = np.random.default_rng(seed)
        keep = np.arange(len(self.pair_label))
        parts = []
        if max_templates is not None:
            all_t = np.unique(self.template_ids)
            if max_templates < len(all_t):
                chosen = rng.choice(all_t, int(max_templates), replace=False)
                keep = keep[np.isin(self.pair_t1, chosen) & np.isin(self.pair_t2, chosen)]
                parts.append(f"{int(max_templates)} templates")
        if max_pairs is not None and max_pairs < len(keep):
            keep = np.sort(rng.choice(keep, int(max_pairs), replace=False))
            parts.append(f"{int(max_pairs)} pairs")
        if not parts:
            return self
        t1, t2 = self.pair_t1[keep], self.pair_t2[keep]
        faces = np.flatnonzero(np.isin(self.template_ids, np.union1d(t1, t2)))
        return replace(self, name=f"{self.name} ({', '.join(parts)})",
                       image_names=[self.image_names[i] for i in faces], landmarks=self.landmarks[faces],
                       face_scores=self.face_scores[faces], template_ids=self.template_ids[faces],
                       media_ids=self.media_ids[faces], pair_t1=t1, pair_t2=t2,
                       pair_label=self.pair_label[keep])


def find_release(root, target: str | None = None) -> tuple[Path, str]:
    """The folder holding ``meta/`` and the target name, from ``root`` = that folder (e.g.
    ``IJB_release/IJBC``) or its parent (``IJB_release``). ``target`` (``"IJBC"``, ``"IJB-B"``…)
    picks one; by default IJB-C when both are there."""
    root = Path(root)
    if not root.is_dir():
        raise IJBFormatError(f"{root} is not a directory")
    if target is not None:
        target = target.upper().replace("-", "")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    for t in (target,) if target else TARGETS:
        for folder in (root, root / t):
            if (folder / "meta" / f"{t.lower()}_face_tid_mid.txt").is_file():
                return folder, t
    want = target or "IJB"
    raise IJBFormatError(
        f"no {want} release under {root}: expected meta/{(target or 'IJBC').lower()}_face_tid_mid.txt in {root} "
        f"or in {root / (target or 'IJBC')}; the layout is IJBC/{{loose_crop,meta}} as in insightface's IJB_release")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise IJBFormatError(f"missing {path}") from None
    except UnicodeDecodeError as e:
        raise IJBFormatError(f"{path} is not a text file ({e})") from None
    return [ln for ln in text.splitlines() if ln.strip()]


def _bad_line(path: Path, lineno: int, line: str, want: str) -> IJBFormatError:
    return IJBFormatError(f"{path.name} line {lineno}: expected {want}, got {line[:120]!r}")


def _read_faces(meta: Path, target: str):
    tid_path = meta / f"{target.lower()}_face_tid_mid.txt"
    pts_path = meta / f"{target.lower()}_name_5pts_score.txt"
    names, tids, mids = [], [], []
    for k, line in enumerate(_lines(tid_path), 1):
        f = line.split()
        if len(f) != 3 or not (_is_int(f[1]) and _is_int(f[2])):
            raise _bad_line(tid_path, k, line, "'<image name> <template id> <media id>'")
        names.append(f[0])
        tids.append(int(f[1]))
        mids.append(int(f[2]))
    pts_lines = _lines(pts_path)
    if len(pts_lines) != len(names):
        raise IJBFormatError(f"{pts_path.name} has {len(pts_lines)} faces but {tid_path.name} has {len(names)}: "
                             "the two files must list the same faces in the same order")
    lm = np.empty((len(names), 10))
    score = np.empty(len(names))
    for k, line in enumerate(pts_lines):
        f = line.split()
        try:
            if len(f) != 12:
                raise ValueError
            vals = [float(v) for v in f[1:]]
        except ValueError:
            raise _bad_line(pts_path, k + 1, line, "'<image name>' and 11 numbers (x1 y1 ... x5 y5 score)") from None
        if f[0] != names[k]:
            raise IJBFormatError(f"{pts_path.name} line {k + 1} is {f[0]!r} but {tid_path.name} line {k + 1} is "
                                 f"{names[k]!r}: the two files must list the same faces in the same order")
        lm[k] = vals[:10]
        score[k] = vals[10]
    if not np.isfinite(lm).all() or not np.isfinite(score).all():
        raise IJBFormatError(f"{pts_path.name} holds NaN or inf")
    return (names, lm.reshape(-1, 5, 2), score, np.asarray(tids, np.int64), np.asarray(mids, np.int64))


def _is_int(s: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", s) is not None


def _read_pairs(path: Path):
    # 15.7 M lines for IJB-C: numpy parses the whole text in C; a line is only looked at on error
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise IJBFormatError(f"missing {path}") from None
    # the first non-blank line that is not three integers, found by the regex engine in one pass
    bad = re.search(r"^(?![ \t]*[+-]?\d+[ \t]+[+-]?\d+[ \t]+[+-]?\d+[ \t\r]*$)(?=.*\S).*$", text, re.M)
    if bad:
        raise _bad_line(path, text.count("\n", 0, bad.start()) + 1, bad.group(0),
                        "'<template id> <template id> <label 0/1>'")
    if not text.strip():  # np.fromstring reads an empty text as one -1
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vals = np.fromstring(text, dtype=np.int64, sep=" ")
    vals = vals.reshape(-1, 3)
    bad = np.flatnonzero((vals[:, 2] != 0) & (vals[:, 2] != 1))
    if len(bad):
        raise IJBFormatError(f"{path.name} line {bad[0] + 1}: label {vals[bad[0], 2]} is not 0 or 1")
    return vals[:, 0].copy(), vals[:, 1].copy(), vals[:, 2].astype(bool)


def read_ijb(root, target: str | None = None) -> IJBProtocol:
    """Read an IJB-B or IJB-C 1:1 protocol from insightface's ``IJB_release`` layout.

    ``root`` is the ``IJBC`` (or ``IJBB``) folder or the ``IJB_release`` folder above it;
    ``target`` picks ``"IJBC"`` or ``"IJBB"`` when ``root`` holds both (default: IJB-C). Checks
    that the two face files agree line by line, that every number parses, that labels are 0/1 and
    that every template of a pair has at least one face. Image files are not opened here: a
    missing or broken one becomes an error row when the faces are decoded. Raises
    :class:`IJBFormatError` (a ``ValueError``) with the file and line on malformed input.
    """
    folder, target = find_release(root, target)
    meta = folder / "meta"
    names, lm, score, tids, mids = _read_faces(meta, target)
    t1, t2, label = _read_pairs(meta / f"{target.lower()}_template_pair_label.txt")
    if not names:
        raise IJBFormatError(f"{meta} lists no faces")
    if not len(label):
        raise IJBFormatError(f"{meta} lists no template pairs")
    unknown = np.setdiff1d(np.union1d(t1, t2), tids)
    if len(unknown):
        raise IJBFormatError(f"{len(unknown)} template(s) in the pair list have no face in the face list "
                             f"(first: {unknown[0]})")
    image_dir = folder / "loose_crop"
    if not image_dir.is_dir():
        raise IJBFormatError(f"missing {image_dir} (the loosely cropped face images)")
    return IJBProtocol(target, image_dir, names, lm, score, tids, mids, t1, t2, label, len(label))
