"""Reading the score: a calibration table per backbone + pruning spec.

Raw PreFIQs quality (``1 − drift/2``) sits in a narrow band that depends on the network and the
pruning, so a number such as 0.78 says nothing on its own. A calibration table, measured once on
identity-labelled reference faces, maps a raw quality to:

* ``percentile``: the share (0–100) of the reference faces whose quality is lower;
* ``expected_fnmr``: the false non-match rate at FMR 1e-3 of reference genuine pairs whose *pair
  quality* (the lower of the two faces' qualities) lies in the same band, i.e. how often a pair whose
  worse face looks like this one fails to match. The threshold is the dense network's at FMR 1e-3 on
  the reference impostor pairs. Band values are smoothed to decrease with quality (pool adjacent
  violators), and each band carries a 95 % interval (see :func:`fit`).

A table is only valid for the exact network weights and pruning it was measured with: a different
spec or a different weights file moves every quality, so :meth:`Calibration.applies_to` refuses
(naming what differs) rather than return a number that belongs to another setting.

A table may also carry a *distinctiveness* reference (:class:`Distinctiveness`): the mean direction
of the reference faces' dense embeddings and the percentiles of each face's distance from it. Where
it does, ``combined`` (:mod:`prefiqs_core.combined`) averages its percentile in too.

Tables for the shipped defaults live in ``prefiqs_core/calibrations/<backbone>.json``; they are the
project's own measurement on the LFW development people (half A), a few hundred numbers, no LFW data.
``python -m prefiqs_core calibrate`` makes a table for any backbone, pruning and identity folder.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = 1
FMR = 1e-3
SHIPPED_DIR = Path(__file__).resolve().parent / "calibrations"
PERCENTILE_LEVELS = np.arange(101, dtype=np.float64)  # the stored reference quantiles: 0, 1, ..., 100 %
INTERVAL_METHOD = ("confidence (fnmr_lo..fnmr_hi): 95 % people-level bootstrap percentile interval of the smoothed "
                   "band FNMR (people resampled with replacement; the FMR threshold re-set from each replicate's "
                   "impostor pairs; smoothing redone per replicate), widened where needed to contain the 95 % "
                   "Wilson score interval of the band's pair counts, so that a band with no failure still gets a "
                   "non-zero upper bound. prediction (pred_lo..pred_hi): where the band's FNMR measured on "
                   "another, independent set of as many people would fall (95 %): the smoothed value plus the "
                   "difference of two independent bootstrap replicates, one of the raw band FNMR (the new "
                   "sample's noise) and one of the smoothed value (the table's own error), also widened to the "
                   "Wilson interval")


def reference_percentile(values, quantiles: np.ndarray):
    """Share (0–100) of reference values below each value, from the reference's 101 percentiles
    ``quantiles``: linear between them, 0 below the lowest, 100 above the highest; NaN stays NaN."""
    v = np.asarray(values, np.float64)
    # equal stored quantiles (ties in the reference) would leave np.interp to pick an end:
    # interpolate between distinct values, each at the highest percentile it holds
    xp, first = np.unique(quantiles, return_index=True)
    last = np.r_[first[1:] - 1, len(quantiles) - 1]
    out = np.interp(np.nan_to_num(v), xp, PERCENTILE_LEVELS[last], left=0.0, right=100.0)
    return np.where(np.isnan(v), np.nan, out)


def write_json(path, d: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=1) + "\n")
    return path


def read_json(path: Path, what: str) -> dict:
    """A table file's JSON, with errors that name the file and what it should have been."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not JSON: {e}") from None


class CalibrationMismatch(ValueError):
    """A calibration table was asked to convert qualities of a setting it was not measured for."""


def normalise_spec(spec) -> str:
    """A pruning spec in its canonical spelling (``format_prune(parse_prune(...))``), so that
    equivalent spellings compare equal; a list of ``PruneSpec`` is accepted too."""
    from .pruning import format_prune, parse_prune

    if isinstance(spec, str):
        return format_prune(parse_prune(spec))
    return format_prune(spec)


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------

@dataclass
class Band:
    """Genuine pairs whose pair quality lies in ``[lo, hi)`` (the first band is open below, the last above)."""

    lo: float
    hi: float
    pairs: int  # genuine pairs in the band (reference half)
    errors: int  # false non-matches among them at the reference threshold
    fnmr_raw: float  # errors / pairs
    fnmr: float  # monotone-smoothed (non-increasing in quality): the value expected_fnmr returns
    fnmr_lo: float  # 95 % confidence interval of the smoothed value
    fnmr_hi: float
    pred_lo: float  # 95 % prediction interval: another set of as many people would measure this
    pred_hi: float


@dataclass
class Distinctiveness:
    """How far a face's dense embedding sits from the average reference face's direction:
    ``1 − cos(e, direction)`` for a unit embedding ``e`` (0 = the average face, 2 = its opposite).
    ``direction`` is the unit mean of the reference faces' unit embeddings; ``quantiles[i]`` the
    reference faces' distinctiveness at percentile ``i`` (i = 0..100). Label-free: no identity is
    needed to fit it."""

    direction: list
    quantiles: list

    def __post_init__(self):
        d = np.asarray(self.direction, np.float64)
        q = np.asarray(self.quantiles, np.float64)
        if d.ndim != 1 or not len(d) or not np.all(np.isfinite(d)) or abs(np.linalg.norm(d) - 1) > 1e-4:
            raise ValueError("distinctiveness: 'direction' must be a finite unit vector")
        if q.shape != PERCENTILE_LEVELS.shape or np.any(np.diff(q) < 0) or not np.all(np.isfinite(q)):
            raise ValueError("distinctiveness: 'quantiles' must be 101 non-decreasing finite values "
                             "(percentiles 0..100)")
        self._d, self._q = d, q

    @classmethod
    def fit(cls, dense) -> "Distinctiveness":
        """From the unit dense embeddings of reference faces (rows)."""
        e = np.asarray(dense, np.float64)
        if e.ndim != 2 or len(e) < 100:
            raise ValueError(f"a distinctiveness reference needs at least 100 faces, got {len(e)}")
        m = e.mean(axis=0)
        direction = m / np.linalg.norm(m)
        q = np.maximum.accumulate(np.percentile(1.0 - e @ direction, PERCENTILE_LEVELS))
        return cls([float(v) for v in direction], [float(v) for v in q])

    def of(self, dense) -> np.ndarray:
        """Distinctiveness of unit embeddings ``(N, D)`` (rows of NaN stay NaN)."""
        e = np.asarray(dense, np.float64)
        if e.ndim != 2 or e.shape[1] != len(self._d):
            raise ValueError(f"distinctiveness: embeddings of size {len(self._d)} expected, got shape {e.shape}")
        return 1.0 - e @ self._d

    def percentile(self, dense) -> np.ndarray:
        """Share (0–100) of the reference faces less distinctive than each embedding (higher = farther
        from the average face)."""
        return reference_percentile(self.of(dense), self._q)

    def to_dict(self) -> dict:
        return dict(direction=[float(v) for v in self.direction], quantiles=[float(v) for v in self.quantiles])


class Bands:
    """Expected FNMR by band of a per-face value (a pair's value = the lower of its two faces'):
    ``bands`` sorted by value, the first open below, the last above."""

    def __init__(self, bands, what: str = "quality"):
        self.bands = [b if isinstance(b, Band) else Band(**b) for b in bands]
        if not self.bands:
            raise ValueError(f"calibration table: no FNMR bands of {what}")
        fn = np.array([b.fnmr for b in self.bands])
        if np.any(np.diff(fn) > 1e-12):
            raise ValueError(f"calibration table: expected FNMR must not increase with {what}")
        self.what = what
        self.edges = np.array([b.hi for b in self.bands[:-1]], np.float64)  # inner band edges
        self.fnmr = fn
        self.lo = np.array([b.fnmr_lo for b in self.bands])
        self.hi = np.array([b.fnmr_hi for b in self.bands])
        self.pred_lo = np.array([b.pred_lo for b in self.bands])
        self.pred_hi = np.array([b.pred_hi for b in self.bands])

    def index(self, values):
        return np.searchsorted(self.edges, np.asarray(values, np.float64), side="right")

    def expected_fnmr(self, values):
        v = np.asarray(values, np.float64)
        return np.where(np.isnan(v), np.nan, self.fnmr[self.index(np.nan_to_num(v))])

    def interval(self, values, kind: str = "confidence"):
        i = self.index(np.nan_to_num(np.asarray(values, np.float64)))
        if kind == "confidence":
            return self.lo[i], self.hi[i]
        if kind == "prediction":
            return self.pred_lo[i], self.pred_hi[i]
        raise ValueError(f"kind is 'confidence' or 'prediction', not {kind!r}")

    def lowest_for(self, max_fnmr: float) -> float:
        """The lowest value from which on the expected FNMR is at most ``max_fnmr`` (−inf when every
        band is that good). Raises when no band is."""
        ok = np.flatnonzero(self.fnmr <= float(max_fnmr))
        if not len(ok):
            raise ValueError(f"no {self.what} band of this calibration has expected FNMR ≤ {max_fnmr:g} "
                             f"(the best band's is {self.fnmr[-1]:.4g})")
        i = int(ok[0])
        return -np.inf if i == 0 else float(self.bands[i].lo)


@dataclass
class CombinedBands:
    """Expected FNMR by band of the ``combined`` value (:mod:`prefiqs_core.combined`, 0–100), fitted
    on the same reference faces as the table that holds it. ``combined`` averages the detector
    score's percentile in, so the bands hold only with the detector reference they were made with
    (``detector``: its :meth:`~prefiqs_core.combined.DetectorReference.summary` and ``digest``)."""

    bands: list
    detector: dict
    made: dict = field(default_factory=dict)

    def __post_init__(self):
        self._b = Bands(self.bands, "combined value")
        self.bands = self._b.bands
        if "digest" not in self.detector:
            raise ValueError("calibration table: the combined bands lack their detector reference's digest")

    def expected_fnmr(self, combined):
        """Expected FNMR at the table's FMR of a pair whose worse face has this combined value."""
        return self._b.expected_fnmr(combined)

    def expected_fnmr_interval(self, combined, kind: str = "confidence"):
        return self._b.interval(combined, kind)

    def combined_for_fnmr(self, max_fnmr: float) -> float:
        """The lowest combined value from which on the expected FNMR is at most ``max_fnmr``."""
        return self._b.lowest_for(max_fnmr)

    def mismatch(self, detector_reference) -> str | None:
        """Why these bands do not hold for combined values made with ``detector_reference``, or None."""
        if detector_reference.digest() != self.detector["digest"]:
            return ("the combined bands were fitted with another detector reference "
                    f"({self.detector['digest']}, not {detector_reference.digest()})")
        return None

    def to_dict(self) -> dict:
        return dict(bands=[asdict(b) for b in self.bands], detector=dict(self.detector), made=dict(self.made))


@dataclass
class Calibration:
    """A calibration table (see the module docstring). ``quantiles[i]`` is the reference quality at
    percentile ``i`` (i = 0..100); ``bands`` are sorted by quality."""

    backbone: str
    prune: str
    weights_sha256: str
    quantiles: list
    bands: list
    fmr: float = FMR
    made: dict = field(default_factory=dict)
    schema: int = SCHEMA
    distinctiveness: Distinctiveness | None = None  # when set, ``combined`` averages its percentile in
    combined: CombinedBands | None = None  # when set, expected FNMR of the combined value too

    def __post_init__(self):
        if isinstance(self.distinctiveness, dict):
            self.distinctiveness = Distinctiveness(**self.distinctiveness)
        if isinstance(self.combined, dict):
            self.combined = CombinedBands(**self.combined)
        q = np.asarray(self.quantiles, np.float64)
        if q.shape != PERCENTILE_LEVELS.shape or np.any(np.diff(q) < 0) or not np.all(np.isfinite(q)):
            raise ValueError("calibration table: 'quantiles' must be 101 non-decreasing finite qualities "
                             "(percentiles 0..100)")
        self._q = q
        self._b = Bands(self.bands)
        self.bands = self._b.bands

    # ---- conversions -------------------------------------------------------------------------
    def percentile(self, quality):
        """Share (0–100) of the reference faces whose quality is lower than ``quality``;
        linear between the stored percentiles, 0 below the lowest and 100 above the highest.
        Non-decreasing in quality; arrays in, arrays out (NaN stays NaN)."""
        return reference_percentile(quality, self._q)

    def quality_at_percentile(self, percentile):
        """The raw quality at a reference percentile (inverse of :meth:`percentile`)."""
        p = np.asarray(percentile, np.float64)
        if np.any((p < 0) | (p > 100)):
            raise ValueError(f"a percentile lies in [0, 100], got {percentile}")
        return np.interp(p, PERCENTILE_LEVELS, self._q)

    def band_index(self, quality):
        return self._b.index(quality)

    def expected_fnmr(self, quality):
        """Expected FNMR at FMR ``fmr`` of a pair whose worse face has this quality (the band's
        smoothed value; constant within a band, non-increasing in quality)."""
        return self._b.expected_fnmr(quality)

    def expected_fnmr_interval(self, quality, kind: str = "confidence"):
        """``(lo, hi)`` arrays around :meth:`expected_fnmr`: the 95 % ``"confidence"`` interval of
        the reference rate, or the 95 % ``"prediction"`` interval of a rate measured on another set
        of as many people (wider: that set has sampling noise of its own)."""
        return self._b.interval(quality, kind)

    def quality_for_fnmr(self, max_fnmr: float) -> float:
        """The lowest raw quality from which on the expected FNMR is at most ``max_fnmr``: faces
        below it are those with expected FNMR above ``max_fnmr``. Raises when no band is that good."""
        return self._b.lowest_for(max_fnmr)

    # ---- which setting it belongs to -----------------------------------------------------------
    def mismatch(self, backbone: str, spec, weights_sha256: str) -> str | None:
        """Why this table does not apply to the setting, or None when it does."""
        why = []
        if backbone != self.backbone:
            why.append(f"backbone {backbone!r} (the table is for {self.backbone!r})")
        try:
            s = normalise_spec(spec)
        except ValueError:
            s = str(spec)
        if s != normalise_spec(self.prune):
            why.append(f"pruning {s!r} (the table is for {self.prune!r})")
        if weights_sha256 != self.weights_sha256:
            why.append(f"weights sha256 {str(weights_sha256)[:12]}… (the table is for {self.weights_sha256[:12]}…)")
        if not why:
            return None
        return "calibration table does not apply: " + "; ".join(why)

    def applies_to(self, backbone: str, spec, weights_sha256: str) -> bool:
        """True when the table was measured for exactly this backbone, pruning and weights file;
        otherwise raises :class:`CalibrationMismatch` naming what differs (never a wrong number)."""
        why = self.mismatch(backbone, spec, weights_sha256)
        if why:
            raise CalibrationMismatch(why)
        return True

    def summary(self) -> dict:
        """What a run record or a CSV sidecar keeps of the table it used."""
        return dict(backbone=self.backbone, prune=self.prune, weights_sha256=self.weights_sha256, fmr=self.fmr,
                    bands=len(self.bands), distinctiveness=self.distinctiveness is not None,
                    combined_bands=0 if self.combined is None else len(self.combined.bands), made=self.made)

    # ---- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dict(schema=self.schema, backbone=self.backbone, prune=self.prune,
                 weights_sha256=self.weights_sha256, fmr=self.fmr, made=self.made,
                 quantiles=[float(v) for v in self.quantiles], bands=[asdict(b) for b in self.bands])
        if self.distinctiveness is not None:
            d["distinctiveness"] = self.distinctiveness.to_dict()
        if self.combined is not None:
            d["combined"] = self.combined.to_dict()
        return d

    def save(self, path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"calibration table schema {d.get('schema')!r}; this version reads schema {SCHEMA}")
        keys = ("backbone", "prune", "weights_sha256", "quantiles", "bands", "fmr", "made", "schema",
                "distinctiveness", "combined")
        missing = [k for k in keys[:5] if k not in d]
        if missing:
            raise ValueError(f"calibration table lacks {', '.join(missing)}")
        return cls(**{k: d[k] for k in keys if k in d})

    @classmethod
    def load(cls, path) -> "Calibration":
        path = Path(path)
        d = read_json(path, "calibration table")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


def shipped_path(backbone: str) -> Path:
    return SHIPPED_DIR / f"{backbone}.json"


def shipped(backbone: str) -> Calibration | None:
    p = shipped_path(backbone)
    return Calibration.load(p) if p.exists() else None


def resolve(backbone: str, spec, weights_sha256: str, path=None) -> tuple[Calibration | None, str | None]:
    """The table for a setting: the file ``path`` when given (raises :class:`CalibrationMismatch`
    when it does not apply: the user asked for it), else the shipped table when it applies.
    Returns ``(table, None)`` or ``(None, one-line reason)``."""
    if path:
        cal = Calibration.load(path)
        cal.applies_to(backbone, spec, weights_sha256)
        return cal, None
    cal = shipped(backbone)
    if cal is None:
        return None, f"no calibration table for backbone {backbone!r} (make one: python -m prefiqs_core calibrate)"
    why = cal.mismatch(backbone, spec, weights_sha256)
    if why:
        return None, "shipped " + why + " (make one: python -m prefiqs_core calibrate)"
    return cal, None


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------

def pav_decreasing(values, weights) -> np.ndarray:
    """Weighted least-squares fit that does not increase along the array (pool adjacent
    violators): a block whose value exceeds the one before it is merged with it."""
    v = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    means, wts, sizes = [], [], []
    for x, wi in zip(v, w):
        means.append(x)
        wts.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-1] > means[-2]:
            m2, w2, s2 = means.pop(), wts.pop(), sizes.pop()
            tot = wts[-1] + w2
            means[-1] = (means[-1] * wts[-1] + m2 * w2) / tot if tot > 0 else (means[-1] + m2) / 2
            wts[-1], sizes[-1] = tot, sizes[-1] + s2
    return np.repeat(means, sizes)


def _pav_rows(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.stack([pav_decreasing(v, w) for v, w in zip(values, weights)])


def wilson(k, n, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of ``k`` successes in ``n`` trials (arrays)."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    p = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(mid - half, 0, 1), np.clip(mid + half, 0, 1)


def make_bands(pair_quality: np.ndarray, errors: np.ndarray, n_bands: int = 16, min_errors: int = 10,
               min_pairs: int = 200) -> np.ndarray:
    """Inner band edges (sorted): ``n_bands`` bands with equal numbers of genuine pairs, then
    neighbours merged, from the worst band up, until each holds at least ``min_errors`` false
    non-matches and ``min_pairs`` pairs. Bands with almost no failures would state a meaningless
    rate; failures are concentrated at low quality, so the low end keeps its narrow bands (where a
    threshold is chosen) and the good end gets fewer, wider ones."""
    order = np.argsort(pair_quality, kind="stable")
    q, e = pair_quality[order], errors[order]
    n = len(q)
    cuts = sorted({int(round(n * i / n_bands)) for i in range(1, n_bands)})
    # a cut inside a run of tied qualities would put equal values on both sides: move it past the run
    cuts = sorted({int(np.searchsorted(q, q[c], side="left")) for c in cuts} - {0, n})
    bounds = [0, *cuts, n]
    segs = [[bounds[i], bounds[i + 1]] for i in range(len(bounds) - 1)]

    def short(seg):
        return e[seg[0]:seg[1]].sum() < min_errors or seg[1] - seg[0] < min_pairs

    i = 0
    while i < len(segs) - 1:
        if short(segs[i]):  # take in the next better band
            segs[i][1] = segs[i + 1][1]
            del segs[i + 1]
        else:
            i += 1
    # the best band may still be short: merge it into the one below
    if len(segs) > 1 and short(segs[-1]):
        segs[-2][1] = segs[-1][1]
        del segs[-1]
    # an edge halfway between the neighbouring qualities
    return np.array([(q[s[0] - 1] + q[s[0]]) / 2 for s in segs[1:]], np.float64)


def _weighted_threshold(top_sim: np.ndarray, top_w: np.ndarray, total_w: np.ndarray, fmr: float) -> np.ndarray | None:
    """Per replicate, the threshold at ``fmr`` from weighted impostor scores: the smallest score
    above which the weighted share of impostor pairs is at most ``fmr`` (the project's rule,
    :func:`prefiqs_core.evaluation.lfw.threshold_at`, with weights). ``top_sim`` holds the highest
    impostor scores, sorted descending, ``top_w`` ``(B, T)`` their weights. None when some
    replicate's threshold lies below every score kept."""
    cum = np.cumsum(top_w, axis=1)
    allowed = fmr * total_w[:, None] + 1e-9
    # k = pairs strictly above the threshold: the largest prefix whose weight is within the allowance
    k = (cum <= allowed).sum(1)
    if np.any(k >= len(top_sim)):
        return None
    return np.nextafter(top_sim[k], np.inf)


@dataclass
class Reference:
    """Identity-labelled reference faces as a fit or a check needs them: their genuine and impostor
    pairs (:class:`prefiqs_core.evaluation.lfw.PairSet`, by the dense network), the faces'
    qualities and the dense network's threshold at ``fmr``."""

    pairs: object  # PairSet
    emb: np.ndarray  # unit dense embeddings of the faces of ``pairs`` (in ``pairs.faces`` order)
    quality: np.ndarray  # per face, indexed like the full embedding array
    threshold: float
    fmr: float

    @classmethod
    def build(cls, dense: np.ndarray, quality: np.ndarray, labels, mask=None, fmr: float = FMR) -> "Reference":
        from .evaluation.lfw import PairSet, threshold_at

        dense = np.asarray(dense, np.float32)
        ps = PairSet.build(dense, list(labels), mask)
        if not len(ps.genuine):
            raise ValueError("no genuine pairs: every person needs at least two faces")
        if len(ps.impostor) * fmr < 1:
            raise ValueError(f"{len(ps.impostor)} impostor pairs cannot resolve FMR {fmr:g}: more people are needed")
        return cls(ps, dense[ps.faces], np.asarray(quality, np.float64), threshold_at(ps.impostor, fmr), fmr)

    @property
    def face_quality(self) -> np.ndarray:
        return self.quality[self.pairs.faces]

    @property
    def pair_quality(self) -> np.ndarray:
        return np.minimum(self.quality[self.pairs.a], self.quality[self.pairs.b])

    @property
    def errors(self) -> np.ndarray:
        return (self.pairs.genuine < self.threshold).astype(np.float64)

    def band_counts(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Genuine pairs and false non-matches per band."""
        band = np.searchsorted(edges, self.pair_quality, side="right")
        nb = len(edges) + 1
        return (np.bincount(band, minlength=nb).astype(np.float64),
                np.bincount(band, weights=self.errors, minlength=nb))

    def bootstrap(self, edges: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(B, bands)`` weighted genuine pairs and false non-matches per band over people-level
        bootstrap replicates (people drawn with replacement; a pair counts as often as its person
        was drawn, as in :func:`prefiqs_core.evaluation.lfw.people_bootstrap`). Each replicate sets
        its own FMR threshold from its own impostor pairs: the threshold is an estimate too, and it
        moves every band together."""
        from .evaluation.lfw import people_counts

        ps = self.pairs
        counts = people_counts(ps.n_people, reps, seed).astype(np.float64)
        faces_per = np.bincount(ps.codes, minlength=ps.n_people).astype(np.float64)
        cn = counts * faces_per[None, :]
        total = (cn.sum(1) ** 2 - (cn ** 2).sum(1)) / 2  # impostor pairs of each replicate
        n_imp = len(ps.impostor)
        # only the highest impostor scores can hold a replicate's threshold: keep 5x the share. With
        # few people a replicate can draw none of the people behind them; then every score is kept
        for k in dict.fromkeys((min(n_imp, int(5 * self.fmr * n_imp) + 200), n_imp)):
            cut = np.partition(ps.impostor, n_imp - k)[n_imp - k]
            top_people, top_sim = _top_impostors(self.emb, ps.codes, cut)
            top_w = counts[:, top_people[:, 0]] * counts[:, top_people[:, 1]]
            thr = _weighted_threshold(top_sim, top_w, total, self.fmr)
            if thr is not None:
                break
        else:  # a replicate that drew a single person has no impostor pair at all
            raise ValueError(f"{ps.n_people} people are too few for the people-level bootstrap at FMR "
                             f"{self.fmr:g} (some resamples hold no impostor pair): calibrate on more people")
        band = np.searchsorted(edges, self.pair_quality, side="right")
        onehot = np.zeros((len(band), len(edges) + 1))
        onehot[np.arange(len(band)), band] = 1
        w_pairs = counts[:, ps.person]  # (B, P)
        err = ps.genuine[None, :] < thr[:, None]
        return w_pairs @ onehot, (w_pairs * err) @ onehot


def _top_impostors(emb: np.ndarray, codes: np.ndarray, cut: float, block: int = 1024):
    """Impostor pairs scoring at least ``cut``: ``(T, 2)`` person codes and their similarities,
    sorted by similarity, highest first (the same block products as
    :func:`prefiqs_core.evaluation.lfw.impostor_similarities`, so the values agree)."""
    people, sims = [], []
    n = len(codes)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        m = emb[lo:hi] @ emb[lo:].T
        keep = ((np.arange(lo, n)[None, :] > np.arange(lo, hi)[:, None])
                & (codes[lo:hi, None] != codes[None, lo:]) & (m >= cut))
        r, c = np.nonzero(keep)
        people.append(np.stack([codes[lo + r], codes[lo + c]], 1))
        sims.append(m[r, c].astype(np.float64))
    people, sims = np.concatenate(people), np.concatenate(sims)
    order = np.argsort(-sims, kind="stable")
    return people[order], sims[order]


def fit(ref: Reference, backbone: str, prune, weights_sha256: str, made: dict | None = None,
        n_bands: int = 16, min_errors: int = 10, min_pairs: int = 200, reps: int = 1000,
        seed: int = 0, distinctiveness: bool = False) -> Calibration:
    """A calibration table from reference faces (with a :class:`Distinctiveness` reference of the
    same faces when ``distinctiveness``).

    Percentiles: the 0..100 % quantiles of the reference faces' qualities. Expected FNMR: genuine
    pairs binned by pair quality (:func:`make_bands`), each band's FNMR at the reference threshold,
    smoothed to be non-increasing in quality (:func:`pav_decreasing`, weighted by pairs). Interval:
    :data:`INTERVAL_METHOD`. Pairs of one person share that person's photos and habits, so their
    failures are not independent draws; resampling people (not pairs) keeps that, and a
    pair-level binomial interval alone would be too narrow.
    """
    bands, info = _fit_bands(ref, made, n_bands, min_errors, min_pairs, reps, seed)
    fq = ref.face_quality
    quantiles = np.percentile(fq, PERCENTILE_LEVELS)
    quantiles = np.maximum.accumulate(quantiles)  # guard against rounding in np.percentile
    return Calibration(backbone=backbone, prune=normalise_spec(prune), weights_sha256=weights_sha256,
                       quantiles=[float(v) for v in quantiles], bands=bands, fmr=float(ref.fmr), made=info,
                       distinctiveness=Distinctiveness.fit(ref.emb) if distinctiveness else None)


def _fit_bands(ref: Reference, made, n_bands, min_errors, min_pairs, reps, seed, what: str = "quality"):
    """``(bands, record)``: the expected-FNMR bands of ``ref``'s per-face values (:func:`fit`)."""
    pq, err = ref.pair_quality, ref.errors
    edges = make_bands(pq, err, n_bands, min_errors, min_pairs)
    n, k = ref.band_counts(edges)
    raw = k / n
    smooth = pav_decreasing(raw, n)
    w, e = ref.bootstrap(edges, reps, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where(w > 0, e / np.where(w > 0, w, 1), np.nan)
    # a band no drawn person reached: take the replicate's neighbouring value (smoothing is monotone)
    boot = _fill_rows(boot)
    boot_s = _pav_rows(boot, w)
    lo, hi = np.percentile(boot_s, [2.5, 97.5], axis=0)
    wl, wh = wilson(k, n)
    lo = np.minimum.reduce([lo, wl, smooth])
    hi = np.maximum.reduce([hi, wh, smooth])
    # prediction: a new sample's raw band FNMR = truth + its own noise; the table = truth + its error.
    # Pairing each smoothed replicate with an independent raw one (a seeded shuffle) gives the
    # difference of the two without assuming either is normal.
    other = np.random.default_rng(seed + 1).permutation(len(boot))
    pred = smooth + (boot[other] - raw) - (boot_s - smooth)
    plo, phi = np.percentile(pred, [2.5, 97.5], axis=0)
    plo = np.clip(np.minimum.reduce([plo, wl, lo]), 0, 1)
    phi = np.clip(np.maximum.reduce([phi, wh, hi]), 0, 1)
    band_lo = np.r_[pq.min(), edges]
    band_hi = np.r_[edges, pq.max()]
    bands = [Band(*map(float, (a, b)), int(ni), int(ki), *map(float, (r, s, x, y, u, v)))
             for a, b, ni, ki, r, s, x, y, u, v in zip(band_lo, band_hi, n, k, raw, smooth, lo, hi, plo, phi)]
    info = dict(made or {})
    info.update(faces=int(len(ref.pairs.faces)), people=int(ref.pairs.n_people), genuine_pairs=int(len(pq)),
                impostor_pairs=int(len(ref.pairs.impostor)), false_non_matches=int(err.sum()),
                threshold=float(ref.threshold), pair_quality=f"min of the two faces' {what} values",
                bands=f"equal-count bands of genuine pairs by pair {what}, merged from the worst up until "
                      f"each holds >= {min_errors} false non-matches and >= {min_pairs} pairs "
                      f"(from {n_bands}); the first band is open below, the last above",
                smoothing="pool adjacent violators, weighted by pairs, non-increasing in quality",
                interval=INTERVAL_METHOD, bootstrap_replicates=int(reps), bootstrap_seed=int(seed))
    return bands, info


def fit_combined(cal: Calibration, detector_reference, dense, quality, det_scores, labels, mask=None,
                 n_bands: int = 16, min_errors: int = 10, min_pairs: int = 200, reps: int = 1000,
                 seed: int = 0) -> Calibration:
    """``cal`` with expected-FNMR bands of the ``combined`` value added (:class:`CombinedBands`).

    The reference faces are those ``cal`` was fitted on (``mask`` of ``dense``/``quality``/``labels``,
    as given to :func:`fit`); their combined values are made exactly as a scored face's are
    (:func:`prefiqs_core.combined.combined_values` with ``cal`` and ``detector_reference``). Faces with
    no detector score (NaN in ``det_scores``) have no combined value and are left out, with their
    pairs. The bands, smoothing and intervals are :func:`fit`'s, on combined values instead of
    qualities.
    """
    from dataclasses import replace

    from .combined import combined_values

    keep = np.ones(len(labels), bool) if mask is None else np.asarray(mask, bool)
    comb = combined_values(cal, detector_reference, quality, det_scores,
                           dense if cal.distinctiveness is not None else None)
    found = np.isfinite(comb)
    ref = Reference.build(dense, np.where(found, comb, 0.0), labels, keep & found, cal.fmr)
    bands, info = _fit_bands(ref, dict(left_out_no_detector_score=int((keep & ~found).sum())), n_bands,
                             min_errors, min_pairs, reps, seed, what="combined")
    det = detector_reference.summary() | dict(digest=detector_reference.digest())
    return replace(cal, combined=CombinedBands(bands, det, info))


def _fill_rows(a: np.ndarray) -> np.ndarray:
    """NaNs of each row replaced by the nearest non-NaN value to their left, else to their right."""
    out = a.copy()
    for row in out:
        bad = np.isnan(row)
        if bad.all():
            row[:] = 0.0
            continue
        idx = np.where(~bad, np.arange(len(row)), 0)
        np.maximum.accumulate(idx, out=idx)
        row[:] = row[idx]
        first = np.flatnonzero(~np.isnan(row))[0]
        row[:first] = row[first]
    return out


def uniform_gap(percentiles) -> float:
    """How far reference percentiles of new faces are from uniform: the largest gap, in percentile
    points, between the share of faces below p and p itself (p = 1..99); NaN values are left out."""
    pct = np.asarray(percentiles, np.float64)
    pct = pct[~np.isnan(pct)]
    levels = np.arange(1, 100)
    return float(np.max(np.abs(np.array([(pct < p).mean() * 100 for p in levels]) - levels)))


def check(cal: Calibration, ref: Reference, reps: int = 1000, seed: int = 1) -> dict:
    """How a table holds on other reference faces (e.g. the held-out half): per band, the measured
    FNMR at that data's own FMR threshold and whether it lies in the table's prediction interval
    (``coverage``) and in its confidence interval (``coverage_confidence``, which an independent
    measurement misses more often: it has noise of its own); the measured data's own people-level
    95 % interval and whether it overlaps the confidence interval; and how far the table's
    percentiles are from uniform on the new faces."""
    return check_bands(cal._b, ref, reps, seed) | dict(percentile_max_gap=uniform_gap(cal.percentile(ref.face_quality)))


def check_combined(cal: Calibration, ref: Reference, reps: int = 1000, seed: int = 1) -> dict:
    """:func:`check` for the table's bands of combined: ``ref`` holds the other faces' combined values
    (made with the table and the detector reference the bands were fitted with) as its qualities."""
    if cal.combined is None:
        raise ValueError("this calibration table has no bands of combined")
    return check_bands(cal.combined._b, ref, reps, seed)


def check_bands(table: Bands, ref: Reference, reps: int = 1000, seed: int = 1) -> dict:
    """:func:`check`'s per-band part for any bands (a table's quality bands, or its combined bands
    with ``ref`` built on combined values)."""
    edges = table.edges
    n, k = ref.band_counts(edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        measured = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
    w, e = ref.bootstrap(edges, reps, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where(w > 0, e / np.where(w > 0, w, 1), np.nan)
    own_lo, own_hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
    lo, hi = table.pred_lo, table.pred_hi
    # the question "does data of other people measure what the table says" is the prediction interval's
    inside = (measured >= lo) & (measured <= hi)
    inside_ci = (measured >= table.lo) & (measured <= table.hi)
    valid = n > 0
    overlap = (own_lo <= table.hi) & (own_hi >= table.lo)
    rows = [dict(band=i, lo=b.lo, hi=b.hi, pairs=int(n[i]), errors=int(k[i]), measured=float(measured[i]),
                 expected=b.fnmr, expected_lo=b.fnmr_lo, expected_hi=b.fnmr_hi, pred_lo=b.pred_lo,
                 pred_hi=b.pred_hi, inside=bool(inside[i]), inside_confidence=bool(inside_ci[i]),
                 own_lo=float(own_lo[i]), own_hi=float(own_hi[i]), overlap=bool(overlap[i]))
            for i, b in enumerate(table.bands)]
    return dict(bands=rows, coverage=float(inside[valid].mean()), covered=int(inside[valid].sum()),
                n_bands=int(valid.sum()), coverage_confidence=float(inside_ci[valid].mean()),
                covered_confidence=int(inside_ci[valid].sum()), overlap=float(overlap[valid].mean()),
                threshold=float(ref.threshold), fnmr=float(ref.errors.mean()))


# --------------------------------------------------------------------------------------------
# reference faces from an identity folder
# --------------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text)


def reference_scores(faces, scorer, batch_size: int = 64, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Unit dense embeddings and qualities of every face of a
    :class:`prefiqs_core.evaluation.lfw.FaceSet`, in one pass of the scorer (the dense embedding
    comes with the quality), cached beside the folder's chips per backbone, weights and pruning."""
    bb = scorer.backbone
    cache = faces.cache / f"calib_{_slug(bb.name)}_{bb.source_sha256[:12]}_{_slug(scorer.spec_string)}.npz"
    if cache.exists():
        with np.load(cache) as z:
            if len(z["quality"]) == len(faces.paths):
                return z["dense"], z["quality"]
    chips = faces.chips(bb.preprocess.template)
    steps = range(0, len(chips), batch_size)
    dense, quality = [], []
    for i in (progress(steps, total=len(steps)) if progress else steps):
        out = scorer.score(chips[i:i + batch_size], batch_size=batch_size)
        dense.append(out.dense.astype(np.float32))
        quality.append(out.quality)
    dense, quality = np.concatenate(dense), np.concatenate(quality)
    np.savez(cache, dense=dense, quality=quality)
    return dense, quality
