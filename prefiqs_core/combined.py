"""PreFIQs combined with the face detector's own score: one percentile per face.

The face detector's score (dlib's HOG detector: the SVM margin) is a quality signal of its own, free
with detection and nearly independent of the pruning drift (Spearman 0.14 with dlib's, 0.37 with
SFace's on LFW-dev). Their ranks add up: on LFW-dev the sum of the two ranks removes more
recognition errors than either alone (README, "The face detector's own score"). A rank needs a
population, so the per-face form ranks each signal against reference faces instead:

    combined = (percentile of the quality + percentile of the detector score) / 2     ∈ [0, 100]

the first from the backbone's calibration table (:mod:`prefiqs_core.calibration`), the second from a
:class:`DetectorReference`: the detector's scores on the same kind of reference faces, as 101
percentiles. Higher is better. A face with no detector score (an aligned chip, a face from another
detector) has no combined value: another detector's scores are on another scale.

Where the calibration table carries a distinctiveness reference (dlib's does), a third percentile is
averaged in: how far the face's dense embedding sits from the average reference face's direction
(:class:`prefiqs_core.calibration.Distinctiveness`). On dlib's network the faces nearest that
direction fail more often, and the three together rank LFW-dev faces better than any two (README,
"How far a face's embedding sits from the average face's"); on SFace the relation is reversed, so
its table has none.

The shipped reference (``calibrations/detector_dlib_hog.json``) is the project's measurement on
the LFW development people of half A (a list of 101 numbers, no LFW data);
``python -m prefiqs_core detector-reference FOLDER`` makes one for any identity folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .calibration import PERCENTILE_LEVELS, SHIPPED_DIR, read_json, reference_percentile, write_json

SCHEMA = 1
DETECTOR = "dlib_hog"


@dataclass
class DetectorReference:
    """The detector's scores on reference faces: ``quantiles[i]`` is the score at percentile ``i``
    (i = 0..100), for ``detector`` run with ``upsample`` (dlib's HOG scores shift with it)."""

    quantiles: list
    detector: str = DETECTOR
    upsample: int = 1
    made: dict = field(default_factory=dict)
    schema: int = SCHEMA

    def __post_init__(self):
        q = np.asarray(self.quantiles, np.float64)
        if q.shape != PERCENTILE_LEVELS.shape or np.any(np.diff(q) < 0) or not np.all(np.isfinite(q)):
            raise ValueError("detector reference: 'quantiles' must be 101 non-decreasing finite scores "
                             "(percentiles 0..100)")
        self._q = q

    def percentile(self, scores):
        """Share (0–100) of the reference faces whose detector score is lower; linear between the
        stored percentiles, 0 below the lowest, 100 above the highest; NaN (no score) stays NaN."""
        return reference_percentile(scores, self._q)

    def mismatch(self, detector: str, upsample: int) -> str | None:
        """Why this reference does not apply to faces found this way, or None when it does."""
        if detector != self.detector:
            return f"faces from detector {detector!r} (the reference is for {self.detector!r})"
        if int(upsample) != self.upsample:
            return f"detector upsample {upsample} (the reference is for upsample {self.upsample})"
        return None

    def summary(self) -> dict:
        return dict(detector=self.detector, upsample=self.upsample, made=self.made)

    def digest(self) -> str:
        """A short fingerprint of what the percentiles depend on (detector, upsample, quantiles):
        tables fitted on combined values record it (``Calibration.combined``). Computed once: a run
        checks it for every batch it scores."""
        if getattr(self, "_digest", None) is None:
            import hashlib
            import json

            key = json.dumps([self.detector, int(self.upsample), [round(float(v), 9) for v in self.quantiles]])
            self._digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self._digest

    def to_dict(self) -> dict:
        return dict(schema=self.schema, detector=self.detector, upsample=self.upsample, made=self.made,
                    quantiles=[float(v) for v in self.quantiles])

    def save(self, path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "DetectorReference":
        path = Path(path)
        d = read_json(path, "detector reference")
        if d.get("schema") != SCHEMA:
            raise ValueError(f"{path}: detector reference schema {d.get('schema')!r}; this version reads {SCHEMA}")
        if "quantiles" not in d:
            raise ValueError(f"{path}: detector reference lacks quantiles")
        keys = ("quantiles", "detector", "upsample", "made", "schema")
        return cls(**{k: d[k] for k in keys if k in d})


def fit_detector_reference(scores, made: dict | None = None, detector: str = DETECTOR,
                           upsample: int = 1) -> DetectorReference:
    """The reference of the detector's scores of faces it found (NaN, a face it missed, is left out)."""
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if len(s) < 100:
        raise ValueError(f"a detector reference needs at least 100 detected faces, got {len(s)}")
    return DetectorReference(np.percentile(s, PERCENTILE_LEVELS).tolist(), detector, int(upsample),
                             dict(made or {}, n_faces=int(len(s))))


def shipped_detector_reference() -> DetectorReference:
    return DetectorReference.load(SHIPPED_DIR / f"detector_{DETECTOR}.json")


NO_CALIBRATION = "no calibration table applies (the combined value averages the quality's percentile)"


def resolve_detector_reference(path=None, *, calibrated: bool, detector: str | None, upsample: int = 1,
                               no_detector: str = "the faces have no face detector score"):
    """The detector reference for a run, as ``(reference, None)``, or ``(None, why)`` when the run
    has no combined value.

    ``detector`` / ``upsample`` say how the faces were found (``detector=None``: they have no
    detector score, for the reason ``no_detector``); ``calibrated``: whether the quality has a
    percentile (a calibration table applies). ``path`` names a reference file (``detector-reference``
    command); without it the shipped one is used where it fits. A named reference that cannot be
    applied raises ``ValueError``: asked for, it is refused rather than silently left out.
    """
    ref = DetectorReference.load(path) if path else shipped_detector_reference()
    why = NO_CALIBRATION if not calibrated else no_detector if detector is None else ref.mismatch(detector, upsample)
    if why is None:
        return ref, None
    if path:
        raise ValueError(f"detector reference {path}: cannot be used here: {why}")
    return None, why


def combined_bands_for(cal, ref: DetectorReference | None):
    """``(bands, None)`` when the table's bands of combined (``cal.combined``) hold for combined values
    made with the detector reference ``ref``, else ``(None, why)`` (also when there is no combined
    value at all: ``ref`` None)."""
    if ref is None or cal is None:
        return None, "no combined value"
    if cal.combined is None:
        return None, "the calibration table has no bands of combined (python -m prefiqs_core calibrate makes them)"
    why = cal.combined.mismatch(ref)
    return (None, why) if why else (cal.combined, None)


def combined(quality_percentile, detector_percentile, distinctiveness_percentile=None):
    """The combined percentile (0–100, higher is better): the mean of the two (three with a
    distinctiveness percentile); NaN where any is."""
    parts = [quality_percentile, detector_percentile]
    if distinctiveness_percentile is not None:
        parts.append(distinctiveness_percentile)
    return sum(np.asarray(p, np.float64) for p in parts) / len(parts)


def combined_values(cal, ref: DetectorReference, quality, det_scores, dense=None) -> np.ndarray:
    """``combined`` of faces from their qualities, detector scores (NaN: none) and, when the table
    ``cal`` has a distinctiveness reference, their unit dense embeddings ``(N, D)`` (needed then)."""
    return combined_with_distinctiveness(cal, ref, quality, det_scores, dense)[0]


def combined_with_distinctiveness(cal, ref: DetectorReference, quality, det_scores, dense=None):
    """``(combined, distinctiveness percentile)`` of faces, as :func:`combined_values`; the second is
    None when the table has no distinctiveness reference (what a run writes beside ``combined``)."""
    q = cal.percentile(np.asarray(quality, np.float64))
    d = ref.percentile(np.asarray(det_scores, np.float64))
    if cal.distinctiveness is None:
        return combined(q, d), None
    if dense is None:
        raise ValueError("this calibration table averages in distinctiveness: the dense embeddings are needed")
    distinct = cal.distinctiveness.percentile(dense)
    return combined(q, d, distinct), distinct


def describe(cal) -> str:
    """What ``combined`` averages for a run with this calibration table (for messages and records)."""
    parts = "quality, detector-score and distinctiveness" if cal.distinctiveness is not None else \
        "quality and detector-score"
    return f"{parts} percentiles averaged"
