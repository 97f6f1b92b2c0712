"""Error-versus-Discard Characteristic (EDC): how fast the false non-match rate falls when the
lowest-quality comparisons are discarded, and the partial area under that curve (pAUC).

Two published conventions exist and give numbers that are **not** comparable; :func:`edc` offers
both and records which one produced a curve.

``threshold="fixed"`` (ISO/IEC 29794-1 FNM-EDC, Schlett et al. ``edc.py``)
    The decision threshold is set **once**, from all non-mated (impostor) similarities, at the
    target FMR. Only mated comparisons enter the curve: they are sorted by pair quality and
    discarded lowest first; comparisons of equal quality are discarded together, so a point sits
    only where the quality value changes, plus a final point (discard 1, FNMR 0). The discard
    fraction is ``discarded mated / all mated``. :func:`pauc` integrates this curve as a step
    function.

``threshold="per_level"`` (CR-FIQA ``ERC/erc.py``, also GraFIQs, ViT-FIQA, MagFace)
    All comparisons (mated and non-mated) are sorted by pair quality and the lowest fraction ``u``
    of them is dropped, for ``u`` on a grid (default 0, 0.05, …, 0.95). At each level the
    threshold is **recomputed** from the kept non-mated similarities at the target FMR and the
    FNMR is measured on the kept mated ones. :func:`pauc` integrates with the trapezoid rule.

How the FMR threshold is chosen (both conventions; :func:`fmr_threshold`)
    A comparison is a *match* when ``similarity >= threshold``. With ``n`` non-mated similarities
    and ``k = floor(target_fmr * n)`` false matches allowed, the threshold is the smallest
    float strictly above the ``(k+1)``-th highest non-mated similarity ``s``: i.e.
    ``np.nextafter(s, inf)``. Hence a mated comparison counts as a match exactly when its
    similarity is **strictly greater** than ``s``. This is the smallest threshold with
    FMR ≤ target; a lower one (``s`` itself) gives FMR > target. Ties: all non-mated scores equal
    to ``s`` fall below the threshold together, so ties never split and the achieved FMR may be
    below the target (it is reported). With fewer than ``1 / target_fmr`` non-mated comparisons,
    ``k = 0`` and the threshold sits just above the highest impostor score (achieved FMR 0).
    ``erc.py`` instead takes the ROC point with ``argmin |FMR − target|`` over distances; the two
    agree whenever an FMR equal to the target is attainable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

CONVENTIONS = ("fixed", "per_level")
# erc.py's grid np.arange(0, 0.98, 0.05), rounded so that 0.15 is 0.15 and not 0.15000000000000002.
DEFAULT_GRID = np.round(np.arange(20) * 0.05, 10)


@dataclass
class EDCResult:
    """One EDC curve plus everything needed to check it by hand.

    Arrays are aligned, one entry per curve point. ``discard_counts`` counts comparisons of the
    population the convention discards from (mated only for ``fixed``; all pairs for ``per_level``).
    """

    convention: str
    target_fmr: float
    discard_fractions: np.ndarray  # x axis, in [0, 1]
    fnmr: np.ndarray  # y axis (NaN for a per_level point that kept no mated or no non-mated pair)
    thresholds: np.ndarray  # similarity threshold used at each point (constant for "fixed")
    fmr: np.ndarray  # FMR actually achieved at each point's threshold, on that point's non-mated pairs
    discard_counts: np.ndarray
    remaining_mated: np.ndarray
    remaining_nonmated: np.ndarray
    false_non_matches: np.ndarray  # count of kept mated pairs with similarity below the threshold
    n_mated: int
    n_nonmated: int
    notes: list[str] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        """The threshold at zero discard (the only one for ``fixed``)."""
        return float(self.thresholds[0])

    def as_dict(self) -> dict:
        """JSON-friendly copy (lists instead of arrays; NaN kept as float NaN)."""
        out = {}
        for k, v in self.__dict__.items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


# ---------------------------------------------------------------------------------------------
# Input checks


def _as_float_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: an EDC needs at least one mated and one non-mated pair")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(a))[0])}")
    if np.isinf(a).any():
        raise ValueError(f"{name} contains an infinite value at index {int(np.flatnonzero(np.isinf(a))[0])}")
    return a


def _as_bool_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: an EDC needs at least one mated and one non-mated pair")
    if a.dtype != bool:
        # Accept 0/1 (ints or floats) but nothing else: a similarity passed by mistake must fail.
        if a.dtype.kind not in "iuf" or not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be booleans (or 0/1), got values like {a[:3].tolist()}")
        a = a.astype(bool)
    return a


def _check_target(target_fmr) -> float:
    t = float(target_fmr)
    if not math.isfinite(t) or not 0.0 < t < 1.0:
        raise ValueError(f"target_fmr must be strictly between 0 and 1, got {target_fmr!r}")
    return t


def _check_inputs(similarities, mated, pair_quality):
    s = _as_float_1d(similarities, "similarities")
    m = _as_bool_1d(mated, "mated")
    q = _as_float_1d(pair_quality, "pair_quality")
    if not len(s) == len(m) == len(q):
        raise ValueError(f"length mismatch: {len(s)} similarities, {len(m)} mated flags, "
                         f"{len(q)} pair qualities")
    if not m.any():
        raise ValueError("no mated (genuine) pairs: the FNMR is undefined")
    if m.all():
        raise ValueError("no non-mated (impostor) pairs: no FMR threshold can be set")
    return s, m, q


# ---------------------------------------------------------------------------------------------
# Threshold


def fmr_threshold(nonmated_similarities, target_fmr: float) -> tuple[float, float]:
    """The smallest similarity threshold whose FMR is at most ``target_fmr``, and that FMR.

    Matches are ``similarity >= threshold``. With ``n`` non-mated scores, ``k = floor(target·n)``
    false matches are allowed; the threshold is ``np.nextafter(s, inf)`` with ``s`` the
    ``(k+1)``-th highest non-mated score, so every score equal to ``s`` is rejected (ties never
    split). Returns ``(threshold, achieved_fmr)``.
    """
    t = _check_target(target_fmr)
    imp = _as_float_1d(nonmated_similarities, "non-mated similarities")
    n = len(imp)
    # The 1e-9 guards against 1e-3 * 3000 evaluating to 2.9999999999999996.
    k = min(int(math.floor(t * n + 1e-9)), n - 1)
    s = np.sort(imp)[::-1][k]
    thr = float(np.nextafter(s, np.inf))
    return thr, float(np.count_nonzero(imp >= thr) / n)


# ---------------------------------------------------------------------------------------------
# EDC


def edc(similarities, mated, pair_quality, target_fmr: float = 1e-3, threshold: str = "fixed",
        discard_fractions=None) -> EDCResult:
    """FNMR at a target FMR as the lowest-quality pairs are discarded (an FNM-EDC curve).

    Parameters
    ----------
    similarities : (P,) float — one score per comparison, higher = more alike (e.g. cosine).
    mated : (P,) bool — True for genuine (same identity) comparisons.
    pair_quality : (P,) float — quality of each comparison, higher = better (see
        :func:`pair_quality_from`; the standard choice is the min of the two faces' qualities).
    target_fmr : the operating point, strictly in (0, 1); see the module docstring for how the
        threshold is chosen and how ties are treated.
    threshold : ``"fixed"`` (ISO/IEC 29794-1 / Schlett et al.) or ``"per_level"`` (CR-FIQA erc.py);
        see the module docstring.
    discard_fractions : ``per_level`` only: discard levels in [0, 1) (default 0, 0.05, …, 0.95).
        The ``fixed`` curve has its points where the quality changes; use :func:`fnmr_at` to read
        it at a chosen fraction.

    Raises ``ValueError`` for empty inputs, NaN/inf, length mismatch, no mated or no non-mated
    pair, a target FMR outside (0, 1) or an unknown convention.
    """
    if threshold not in CONVENTIONS:
        raise ValueError(f"threshold must be one of {CONVENTIONS}, got {threshold!r}")
    t = _check_target(target_fmr)
    s, m, q = _check_inputs(similarities, mated, pair_quality)
    if threshold == "fixed":
        if discard_fractions is not None:
            raise ValueError("discard_fractions applies to threshold='per_level' only; the fixed "
                             "curve has a point at every quality change (read it with fnmr_at)")
        return _edc_fixed(s, m, q, t)
    return _edc_per_level(s, m, q, t, _check_grid(discard_fractions))


def _check_grid(discard_fractions) -> np.ndarray:
    if discard_fractions is None:
        return DEFAULT_GRID.copy()
    g = np.asarray(discard_fractions, dtype=np.float64).reshape(-1)
    if g.size == 0 or np.isnan(g).any() or (g < 0).any() or (g >= 1).any():
        raise ValueError("discard_fractions must be a non-empty list of values in [0, 1)")
    return np.unique(g)  # sorted, duplicates removed


def _edc_fixed(s, m, q, t) -> EDCResult:
    thr, fmr = fmr_threshold(s[~m], t)
    gq, gs = q[m], s[m]
    order = np.argsort(gq, kind="stable")
    gq, gs = gq[order], gs[order]
    n = len(gs)
    errors = (gs < thr).astype(np.int64)
    # errors_from[i] = false non-matches among the mated pairs kept after discarding the first i.
    errors_from = np.cumsum(errors[::-1])[::-1]
    # A discard point at 0 and wherever the sorted quality changes: equal qualities go together.
    counts = np.concatenate(([0], np.flatnonzero(gq[:-1] != gq[1:]) + 1))
    remaining = n - counts
    fnm = errors_from[counts]
    # The closing point: everything discarded, no error left (as edc.py, for plotting and pAUC).
    counts = np.append(counts, n)
    remaining = np.append(remaining, 0)
    fnm = np.append(fnm, 0)
    fnmr = np.append(fnm[:-1] / remaining[:-1], 0.0)
    k = len(counts)
    notes = []
    if len(s[~m]) * t < 1:
        notes.append(f"only {int((~m).sum())} non-mated pairs: FMR resolution is coarser than "
                     f"target {t:g}; threshold set above the highest impostor score")
    return EDCResult("fixed", t, counts / n, fnmr, np.full(k, thr), np.full(k, fmr), counts,
                     remaining, np.full(k, int((~m).sum())), fnm, n, int((~m).sum()), notes)


def _edc_per_level(s, m, q, t, grid) -> EDCResult:
    n = len(s)
    # Stable sort: equal qualities keep their input order, so results are reproducible; unlike
    # the fixed convention, a level may cut through a run of tied qualities (as erc.py does).
    order = np.argsort(q, kind="stable")
    s, m = s[order], m[order]
    cols = {k: [] for k in ("counts", "fnmr", "thr", "fmr", "rm", "rn", "fnm")}
    notes = []
    for u in grid:
        c = int(math.floor(u * n + 1e-9))
        ks, km = s[c:], m[c:]
        gen, imp = ks[km], ks[~km]
        if len(gen) == 0 or len(imp) == 0:
            thr, fmr, fnm, fnmr = math.nan, math.nan, 0, math.nan
            notes.append(f"discard {u:g}: no {'mated' if len(gen) == 0 else 'non-mated'} pair left; FNMR NaN")
        else:
            thr, fmr = fmr_threshold(imp, t)
            fnm = int(np.count_nonzero(gen < thr))
            fnmr = fnm / len(gen)
        for k, v in zip(cols, (c, fnmr, thr, fmr, len(gen), len(imp), fnm)):
            cols[k].append(v)
    a = {k: np.asarray(v) for k, v in cols.items()}
    return EDCResult("per_level", t, grid, a["fnmr"].astype(float), a["thr"].astype(float),
                     a["fmr"].astype(float), a["counts"].astype(np.int64), a["rm"].astype(np.int64),
                     a["rn"].astype(np.int64), a["fnm"].astype(np.int64), int(m.sum()),
                     int((~m).sum()), notes)


def fnmr_at(curve: EDCResult, discard_fraction: float) -> float:
    """FNMR of ``curve`` at ``discard_fraction``: the step value (last point at or before it) for
    ``fixed``, linear interpolation between grid points for ``per_level``."""
    x, y = curve.discard_fractions, curve.fnmr
    if not 0 <= discard_fraction <= 1:
        raise ValueError(f"discard_fraction must be in [0, 1], got {discard_fraction!r}")
    if curve.convention == "fixed":
        return float(y[np.searchsorted(x, discard_fraction, side="right") - 1])
    return float(np.interp(discard_fraction, x, y))


# ---------------------------------------------------------------------------------------------
# Area under the curve


def theoretical_best_area(e0: float, limit: float) -> float:
    """Area under the best possible EDC up to ``limit``: the line ``max(0, e0 − x)``, i.e.
    ``e0²/2 − max(0, e0 − limit)²/2`` (Schlett et al.; "Finger image quality assessment features")."""
    return e0 ** 2 / 2 - max(0.0, e0 - limit) ** 2 / 2


def pauc(curve: EDCResult, limit: float = 0.2, subtract_best: bool = False) -> float:
    """Partial area under an EDC curve from discard 0 to ``limit`` (lower = better quality measure).

    ``fixed`` curves are step functions (each FNMR holds until the next point), integrated exactly
    as Schlett et al.'s ``compute_edc_pauc``. ``per_level`` curves are integrated with the
    trapezoid rule over the grid points up to ``limit`` (as erc.py's ``sklearn.metrics.auc``),
    linearly interpolating the FNMR at ``limit`` when it is not a grid point; ``limit`` beyond the
    last grid point is an error. With ``subtract_best`` the theoretical-best area for the curve's
    starting FNMR is subtracted (:func:`theoretical_best_area`). The paper convention reports
    ``limit`` 0.2 and 0.3 at FMR 1e-3.
    """
    lim = float(limit)
    if not 0 < lim <= 1:
        raise ValueError(f"limit must be in (0, 1], got {limit!r}")
    x, y = np.asarray(curve.discard_fractions, float), np.asarray(curve.fnmr, float)
    if curve.convention == "fixed":
        area = _step_area(x, y, lim)
    elif curve.convention == "per_level":
        area = _trapezoid_area(x, y, lim)
    else:
        raise ValueError(f"unknown curve convention {curve.convention!r}")
    if subtract_best:
        area -= theoretical_best_area(float(y[0]), lim)
    return float(area)


def _step_area(x, y, lim) -> float:
    area = 0.0
    for i in range(len(x)):
        nxt = x[i + 1] if i + 1 < len(x) else math.inf
        if nxt >= lim:
            return area + y[i] * (lim - x[i])
        area += y[i] * (nxt - x[i])
    return area


def _trapezoid_area(x, y, lim) -> float:
    if lim > x[-1] + 1e-12:
        raise ValueError(f"limit {lim:g} is beyond the last discard level {x[-1]:g} of the curve")
    if x[0] != 0:
        raise ValueError("a per_level curve must start at discard 0 to be integrated from 0")
    keep = x <= lim
    xs, ys = x[keep], y[keep]
    if xs[-1] < lim:
        xs = np.append(xs, lim)
        ys = np.append(ys, np.interp(lim, x, y))
    if np.isnan(ys).any():
        raise ValueError("the curve has NaN FNMR below the limit (a level kept no mated or "
                         "no non-mated pair)")
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))


# ---------------------------------------------------------------------------------------------
# Pair quality


_PAIR_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "min": np.minimum,
    "mean": lambda a, b: (a + b) / 2,
    "product": np.multiply,
}


def pair_quality_from(q_a, q_b, how="min") -> np.ndarray:
    """Combine the two faces' qualities into one quality per comparison.

    ``how``: ``"min"`` (the standard: discarding pairs by ``min`` equals discarding *faces* in
    quality order), ``"mean"``, ``"product"`` (only meaningful for non-negative qualities), or a
    callable ``f(q_a, q_b) -> array`` applied to the two whole arrays.
    """
    a = _as_float_1d(q_a, "q_a")
    b = _as_float_1d(q_b, "q_b")
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)} qualities")
    if callable(how):
        out = np.asarray(how(a, b), dtype=np.float64)
    elif how in _PAIR_FUNCS:
        out = _PAIR_FUNCS[how](a, b)
    else:
        raise ValueError(f"how must be 'min', 'mean', 'product' or a callable, got {how!r}")
    if out.shape != a.shape:
        raise ValueError(f"pair-quality function returned shape {out.shape}, expected {a.shape}")
    return out


# ---------------------------------------------------------------------------------------------
# Plot


def plot_edc(curves: Mapping[str, EDCResult], path, title: str = "EDC", limit: float | None = None):
    """Write a PNG with one EDC line per entry of ``curves`` (name → :class:`EDCResult`).

    ``fixed`` curves are drawn as steps, ``per_level`` as lines through the grid points; the legend
    shows each curve's pAUC up to 0.2 (or ``limit``). Uses matplotlib's Agg backend, so it needs
    no display. Returns the path written.
    """
    if not curves:
        raise ValueError("plot_edc needs at least one curve")
    # An explicit Agg canvas on a bare Figure: no display needed, and pyplot's global backend and
    # figure list (which a host application such as the FiftyOne app may own) stay untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lim = 0.2 if limit is None else limit
    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    fmrs = set()
    for name, c in curves.items():
        try:
            label = f"{name} (pAUC@{lim:g} = {pauc(c, lim):.4f})"
        except ValueError:
            label = name
        if c.convention == "fixed":
            ax.step(c.discard_fractions, c.fnmr, where="post", label=label)
        else:
            ax.plot(c.discard_fractions, c.fnmr, marker=".", label=label)
        fmrs.add(f"{c.target_fmr:g} ({c.convention})")
    ax.axvline(lim, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("fraction of comparisons discarded (lowest quality first)")
    ax.set_ylabel(f"FNMR at FMR {', '.join(sorted(fmrs))}")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), format="png")
    return path
