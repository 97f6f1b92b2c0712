"""Calibrated readings in the Face Quality panel: the run's calibration table turned into
thresholds, sentences and plot parts a person can read (issue 12).

A run scored with a calibration table keeps the whole table in its config (``calibration``); one
without says why in ``calibration_absent``. From the table the panel:

* converts a threshold given as a *reference percentile* or as *expected FNMR ≤ x %* into the raw
  quality threshold it counts with (:func:`to_quality`), by the same conversions as
  ``tag_low_quality(percentile=...)`` / ``(max_expected_fnmr=...)``, so that the count, "Show
  below threshold" and "Tag below threshold" select exactly the faces the SDK call tags;
* says what the threshold means (:func:`below_text`): share of the view, reference percentile and
  the expected FNMR of the faces below it;
* draws a reference-percentile axis on top of the quality histogram and the expected-FNMR curve
  (with its 95 % confidence band) over it (:func:`curve_traces`, :func:`histogram_layout`).

Ranked by ``combined``, the same readings come from the table's bands of the combined value
(:class:`CombinedScale`, where the run wrote ``K_combined_expected_fnmr``): a threshold given as
expected FNMR, the expected FNMR of the faces below it and the curve over the combined histogram.
The combined value has no reference percentiles of its own, so that mode is not offered.

Nothing here is App plumbing but the :class:`CalibratedThreshold` mixin (two event handlers), so
the conversions and texts can be tested on their own. Only small values go to the panel state
(``calib``: the run's axis ticks; ``below_cal``: how the shown threshold was set and what it
means); the curve goes with the histogram's traces into the histogram's view.
"""
from __future__ import annotations

import math

import numpy as np

from . import runs

# how a threshold can be given; "quality" is the raw score, as without a table
MODES = ("quality", "percentile", "fnmr")
MODE_LABELS = {"quality": "raw quality", "percentile": "reference percentile", "fnmr": "expected FNMR ≤ x %"}
COMBINED_MODES = ("quality", "fnmr")  # "quality" is then the combined value itself
COMBINED_LABELS = {"quality": "combined value", "fnmr": "expected FNMR ≤ x %"}
BOX_LABELS = {"percentile": "Reference percentile (0–100)", "fnmr": "Expected FNMR ≤ (%, at FMR 1e-3)"}
# state the panel computes (kept on the server between events, see ``PrefiqsPanel.execute``)
COMPUTED = ("calib", "below_cal", "calib_error")
# candidate ticks of the percentile axis; those crowding the previous one are dropped
TICK_LEVELS = (1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99)
CURVE_COLOR = "#7b3294"


# ------------------------------------------------------------------------------------------------
# the table and conversions
# ------------------------------------------------------------------------------------------------


class CombinedScale:
    """A table's bands of combined, read as the panel reads a calibration table: ``quality`` in the
    functions below is then the combined value (0-100); it has no reference percentiles."""

    percentiles = False
    span = (0.0, 100.0)
    name = "combined"

    def __init__(self, cal):
        self._c, self.fmr, self.bands = cal.combined, cal.fmr, cal.combined.bands

    def expected_fnmr(self, value):
        return self._c.expected_fnmr(value)

    def expected_fnmr_interval(self, value, kind: str = "confidence"):
        return self._c.expected_fnmr_interval(value, kind)

    def quality_for_fnmr(self, max_fnmr: float) -> float:
        return self._c.combined_for_fnmr(max_fnmr)


def _percentiles(cal) -> bool:
    return getattr(cal, "percentiles", True)


def table_of(samples, run_key: str, by: str = "quality"):
    """``(Calibration, None)`` for a run scored with a table, else ``(None, why)`` in one line; with
    ``by="combined"`` the table's bands of combined (:class:`CombinedScale`) where the run wrote
    ``K_combined_expected_fnmr``."""
    from ..prefiqs_core.calibration import Calibration

    cfg = runs.load_config(samples, run_key)
    table = cfg.get("calibration")
    if not table:
        return None, cfg.get("calibration_absent") or "the run was computed before calibration tables existed"
    try:
        cal = Calibration.from_dict(table)
    except (TypeError, ValueError) as e:  # a damaged record: say so rather than convert with it
        return None, f"the run's stored calibration table cannot be read ({e})"
    if by != "combined":
        return cal, None
    if cal.combined is None or not runs.has_combined_fnmr(samples, run_key):
        return None, (cfg.get("combined_expected_fnmr_absent") or "the run was computed before the tables had "
                      "bands of the combined value")
    return CombinedScale(cal), None


def to_quality(cal, mode: str, value) -> float:
    """The raw quality threshold a threshold given in ``mode`` stands for: faces strictly below it
    are the ones ``tag_low_quality`` tags for the same criterion. ``fnmr`` is in percent.

    Raises ``ValueError`` (a message for the user) for a value out of range or an FNMR no band of
    the table reaches."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError("type a number")
    if mode == "quality":
        lo, hi = getattr(cal, "span", (0.0, 1.0))
        if not lo <= value <= hi:
            raise ValueError(f"a{' combined value' if hi > 1 else ' quality'} lies in [{lo:g}, {hi:g}], not {value:g}")
        return value
    if cal is None:
        raise ValueError("this run has no calibration table")
    if mode == "percentile":
        if not _percentiles(cal):
            raise ValueError("the combined value has no reference percentiles")
        if not 0 <= value <= 100:
            raise ValueError(f"a reference percentile lies in [0, 100], not {value:g}")
        return float(cal.quality_at_percentile(value))
    if mode == "fnmr":
        if not 0 <= value <= 100:
            raise ValueError(f"an expected FNMR lies in [0, 100] %, not {value:g}")
        q = cal.quality_for_fnmr(value / 100)
        # -inf: every band is at most that good, no face is below. Qualities lie in [0, 1] (combined
        # values in [0, 100]), so 0 selects the same (none) and stays a number the state (JSON) and
        # the slider can hold
        return 0.0 if q == -math.inf else float(q)
    raise ValueError(f"unknown threshold mode {mode!r}")


def from_quality(cal, mode: str, quality: float) -> float:
    """``quality`` read in ``mode``, rounded for a box a person types into. An FNMR is rounded *up*
    (percent, 2 decimals): the band's own value rounded down would ask for a band better than it,
    and :func:`to_quality` would move the threshold to another band."""
    if mode == "quality":
        return round(float(quality), 4)
    if mode == "percentile":
        return round(float(cal.percentile(quality)), 2)
    if mode == "fnmr":
        return math.ceil(float(cal.expected_fnmr(quality)) * 100 * 100 - 1e-9) / 100
    raise ValueError(f"unknown threshold mode {mode!r}")


def fnmr_below(cal, quality: float) -> float:
    """The lowest expected FNMR of a face strictly below ``quality``: the value of the band just
    below it (expected FNMR does not increase with quality, so every face below has at least this)."""
    return float(cal.expected_fnmr(np.nextafter(float(quality), -np.inf)))


def reading(cal, run_key: str, quality: float, mode: str = "quality", value=None) -> dict:
    """``below_cal``: how the shown threshold was set (``mode``, ``value``) and what it means
    (``pct``: its reference percentile, ``fnmr``: the expected FNMR of the faces below it), or
    ``None`` without a table."""
    if cal is None:
        return None
    return dict(run=run_key, mode=mode, value=float(quality) if value is None else float(value),
                quality=float(quality), pct=float(cal.percentile(quality)) if _percentiles(cal) else None,
                fnmr=fnmr_below(cal, quality), fmr=float(cal.fmr), by=getattr(cal, "name", "quality"))


def calib_state(cal, why) -> dict:
    """``calib``: whether the run has a table (and why not), and the percentile axis' ticks."""
    if cal is None:
        return dict(ok=False, why=why)
    levels = np.array(TICK_LEVELS, np.float64)
    ticks = ([[float(q), int(p)] for q, p in zip(cal.quality_at_percentile(levels), TICK_LEVELS)]
             if _percentiles(cal) else [])
    return dict(ok=True, why=None, fmr=float(cal.fmr), ticks=ticks, by=getattr(cal, "name", "quality"),
                modes=list(MODES if _percentiles(cal) else COMBINED_MODES),
                fnmr_max=float(max(b.fnmr_hi for b in cal.bands)))


def tag_criterion(state, threshold: float, by: str = "quality") -> dict:
    """The ``tag_low_quality`` criterion of the shown count: the SDK's own ``percentile`` /
    ``max_expected_fnmr`` when the threshold was set that way, else the raw threshold (a combined
    value with ``by="combined"``)."""
    cal = state.below_cal or {}
    extra = dict(by="combined") if by == "combined" else {}
    mine = cal.get("run") == state.run_key and cal.get("by", "quality") == by
    if cal.get("mode") == "percentile" and mine:
        return dict(percentile=float(cal["value"]))
    if cal.get("mode") == "fnmr" and mine:
        return dict(max_expected_fnmr=float(cal["value"]) / 100, **extra)
    return dict(threshold=threshold, **extra)


# ------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------


def ordinal(p: float) -> str:
    """``"5th"``, ``"1st"``, ``"22nd"``, ``"2.5th"``."""
    p = float(p)
    if abs(p - round(p)) > 1e-9:
        return f"{p:.2f}".rstrip("0").rstrip(".") + "th"
    n = int(round(p))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def rate_text(r: float) -> str:
    """An FNMR (a rate in [0, 1]) in percent, with as many digits as its size warrants."""
    pct = 100 * float(r)
    return f"{pct:.0f} %" if pct >= 10 else f"{pct:.1f} %" if pct >= 1 else f"{pct:.2f} %"


def percentile_phrase(pct: float) -> str:
    """Where a quality lies among the reference faces: "the 4.7th reference percentile", or beyond
    them all (a "0th percentile" would read as a position it is not: the quality may be far below)."""
    if pct <= 0:
        return "below every reference face"
    if pct >= 100:
        return "above every reference face"
    return f"the {ordinal(round(pct, 1))} reference percentile"


def fmr_text(fmr: float) -> str:
    """``1e-3`` rather than ``0.001`` or ``1e-03``."""
    mantissa, exp = f"{float(fmr):.0e}".split("e")
    return f"{mantissa}e{int(exp)}"


def below_text(below: int, num: int, unit: str, where: str, cal: dict) -> str:
    """What the count means when a table applies, e.g. "412 faces (3.1 %) below the 5th reference
    percentile in the dataset (quality < 0.9558) — expected FNMR ≥ 12 % at FMR 1e-3"."""
    from .panel_plots import count_text

    share = f"({100 * below / num if num else 0:.1f} %)"
    count = f"**{count_text(below, unit)}** {share}"
    fmr = fmr_text(cal["fmr"])
    expected = f"expected FNMR ≥ {rate_text(cal['fnmr'])} at FMR {fmr}"
    q = cal["quality"]
    if cal.get("by") == "combined":  # no reference percentile: the combined value says where it lies
        if cal["mode"] == "fnmr":
            return f"{count} with expected FNMR > {cal['value']:g} % at FMR {fmr} {where} (combined < {q:.2f})"
        return f"**{count_text(below, unit)}** below combined {q:.2f} {where} {share} — {expected}"
    if cal["mode"] == "percentile":
        return (f"{count} below the {ordinal(cal['value'])} reference percentile {where} "
                f"(quality < {q:.4f}) — {expected}")
    if cal["mode"] == "fnmr":
        return (f"{count} with expected FNMR > {cal['value']:g} % at FMR {fmr} {where} "
                f"(quality < {q:.4f}, {percentile_phrase(cal['pct'])})")
    # raw quality: the count reads as without a table ("12 faces below 0.9512"), the share after it
    where_ref = percentile_phrase(cal["pct"])
    return f"**{count_text(below, unit)}** below {q:.4f} {where} {share}: {where_ref} — {expected}"


def shown_reading(state, threshold):
    """``below_cal`` when it describes the threshold the panel shows (else None: a stale reading,
    e.g. of the previous run, is never worded as this one's)."""
    cal = state.below_cal or {}
    if cal.get("run") == state.run_key and cal.get("quality") == threshold:
        return cal
    return None


def absent_text(why: str, by: str = "quality") -> str:
    if by == "combined":
        return f"_Expected FNMR of the combined value is unavailable for this run: {why}._"
    return (f"_Calibrated readings (reference percentile, expected FNMR) are unavailable for this run: "
            f"{why}._")


# ------------------------------------------------------------------------------------------------
# histogram: percentile axis on top, expected-FNMR curve and band on a right-hand axis
# ------------------------------------------------------------------------------------------------


def curve_traces(cal, lo, hi) -> list[dict]:
    """The expected FNMR (percent) over the histogram's quality range ``lo``..``hi`` as a step
    line, under it its 95 % confidence band; on the overlaid axes ``x2``/``y2``."""
    if cal is None or lo is None or hi is None:
        return []
    pad = max(hi - lo, 0.01) * 0.04
    x0, x1 = lo - pad, hi + pad
    inner = [b.lo for b in cal.bands[1:] if x0 < b.lo < x1]
    xs = [x0, *inner, x1]
    fn = [round(100 * float(v), 3) for v in cal.expected_fnmr(xs)]
    blo, bhi = (np.round(100 * np.asarray(v, np.float64), 3).tolist() for v in cal.expected_fnmr_interval(xs))
    axes = dict(xaxis="x2", yaxis="y2", hoverinfo="skip", showlegend=False)
    band_line = dict(shape="hv", width=0)
    return [dict(type="scatter", mode="lines", name="FNMR 95 % upper", x=xs, y=bhi, line=band_line, **axes),
            dict(type="scatter", mode="lines", name="FNMR 95 % interval", x=xs, y=blo, line=band_line,
                 fill="tonexty", fillcolor="rgba(123,50,148,0.15)", **axes),
            dict(type="scatter", mode="lines", name="expected FNMR", x=xs, y=fn,
                 line=dict(shape="hv", color=CURVE_COLOR, width=2), xaxis="x2", yaxis="y2", showlegend=False,
                 hovertemplate=("combined %{x:.2f}" if getattr(cal, "name", "") == "combined" else "quality %{x:.4f}")
                 + "<br>expected FNMR %{y:.2f} %<extra></extra>")]


def histogram_layout(layout: dict, calib) -> dict:
    """The histogram's layout with the reference-percentile axis (top) and the FNMR axis (right)."""
    if not calib or not calib.get("ok"):
        return layout
    xaxis = layout.get("xaxis") or {}
    rng = xaxis.get("range")
    ticks = [(q, p) for q, p in calib["ticks"] if rng is None or rng[0] <= q <= rng[1]]
    fmr = fmr_text(calib["fmr"])
    right = dict(overlaying="y", side="right", rangemode="tozero", showgrid=False, zeroline=False,
                 range=[0, round(calib["fnmr_max"] * 100 * 1.1, 3)], autorange=False,
                 title=dict(text=f"expected FNMR (%), FMR {fmr}", font=dict(size=11, color=CURVE_COLOR)),
                 tickfont=dict(color=CURVE_COLOR))
    if not calib["ticks"]:  # the combined value: no percentile axis, the curve on a hidden twin of x
        top = dict(overlaying="x", visible=False, **({"range": list(rng), "autorange": False} if rng else {}))
        return dict(layout, xaxis2=top, yaxis2=right, margin=dict(layout.get("margin") or {}, r=60))
    if rng:  # drop a tick crowding the previous one (the reference quantiles bunch up at the ends)
        kept, gap = [], (rng[1] - rng[0]) * 0.05
        for q, p in ticks:
            if not kept or q - kept[-1][0] >= gap:
                kept.append((q, p))
        ticks = kept
    top = dict(overlaying="x", side="top", tickvals=[q for q, _ in ticks], ticktext=[str(p) for _, p in ticks],
               title=dict(text="reference percentile", standoff=2, font=dict(size=11)), showgrid=False,
               zeroline=False, tickfont=dict(size=10, color="#999"))  # readable on the light and the dark theme
    if rng:
        top.update(range=list(rng), autorange=False)
    margin = dict(layout.get("margin") or {}, t=78, r=60)
    title = dict(layout.get("title") or {}, y=0.98, yanchor="top")
    return dict(layout, xaxis2=top, yaxis2=right, margin=margin, title=title, height=layout.get("height", 260) + 40)


# ------------------------------------------------------------------------------------------------
# the panel's controls and handlers
# ------------------------------------------------------------------------------------------------


def controls(p, panel, state):
    """The threshold's mode and, for a calibrated mode, its box; or why there is none."""
    import fiftyone.operators.types as types

    calib = state.calib or {}
    if not calib.get("ok"):
        if calib.get("why"):
            panel.md(absent_text(calib["why"], calib.get("by", "quality")), name="calibration_absent")
        return
    combined = calib.get("by") == "combined"
    allowed = list(calib.get("modes") or MODES)
    modes = types.DropdownView()
    for m in allowed:
        modes.add_choice(m, label=(COMBINED_LABELS if combined else MODE_LABELS)[m])
    panel.enum("threshold_mode", allowed, label="Give the threshold as", view=modes,
               on_change=p.on_change_threshold_mode)
    mode = state.threshold_mode or "quality"
    if mode in BOX_LABELS:
        panel.float("threshold_cal", label=BOX_LABELS[mode], min=0.0, max=100.0,
                    description="converted through the run's calibration table (Enter or leave the box)",
                    on_change=p.on_type_threshold_cal)
    if state.calib_error:
        panel.md(f"_{state.calib_error}_", name="calibration_error")


class CalibratedThreshold:
    """Event handlers of the calibrated threshold, mixed into the panel (``self._scope`` is its)."""

    def on_change_threshold_mode(self, ctx):
        mode = ctx.params.get("value") or "quality"
        state = ctx.panel.state
        shown = state.below_cal or {}
        if mode not in MODES or (mode == shown.get("mode") and shown.get("run") == state.run_key):
            return  # the App's echo of what the panel shows
        scope = self._scope(ctx)
        if scope is None:
            return
        cal, _ = table_of(ctx.dataset, scope.fields.key, scope.value)
        if cal is None or mode not in (MODES if _percentiles(cal) else COMBINED_MODES):
            return
        q = state.below_at if state.below_at is not None else 0.5
        # the current threshold read in the new mode, then applied in it: the count, the text and a
        # tag all follow the value the box shows
        value = from_quality(cal, mode, q)
        self._apply_calibrated(ctx, scope, cal, mode, value, dict(threshold_mode=mode, threshold_cal=value))

    def on_type_threshold_cal(self, ctx):
        state = ctx.panel.state
        mode = state.threshold_mode or "quality"
        try:
            value = float(ctx.params.get("value"))
        except (TypeError, ValueError):
            return
        shown = state.below_cal or {}
        if (mode == shown.get("mode") and shown.get("run") == state.run_key
                and abs(value - float(shown.get("value", math.nan))) < 1e-9):
            return
        scope = self._scope(ctx)
        if scope is None or mode not in BOX_LABELS:
            return
        cal, _ = table_of(ctx.dataset, scope.fields.key, scope.value)
        self._apply_calibrated(ctx, scope, cal, mode, value, {})

    def _apply_calibrated(self, ctx, scope, cal, mode, value, patch):
        try:
            q = to_quality(cal, mode, value)
        except ValueError as e:
            ctx.panel.set_state(dict(patch, calib_error=str(e)))
            return
        # the typed box shows the quality rounded (a reader's digits; its echo is within the slider's 5e-5)
        ctx.panel.set_state(dict(patch, threshold=q, threshold_typed=round(q, 5), below_at=q,
                                 below=scope.count_below(q), below_cal=reading(cal, scope.fields.key, q, mode, value),
                                 calib_error=None))


def refresh_patch(dataset, run_key: str, threshold: float, state, by: str = "quality") -> tuple:
    """``(state patch, table or None)`` for a (re)computed panel: ``calib`` and ``below_cal``. A
    threshold set by percentile or FNMR on this run keeps its mode across a view change; a new run
    (or the other ranking) starts from the raw value."""
    cal, why = table_of(dataset, run_key, by)
    shown = state.below_cal or {}
    mode, value = "quality", None
    if (cal is not None and state.threshold is not None and shown.get("run") == run_key
            and shown.get("by", "quality") == by
            and shown.get("mode") in BOX_LABELS and abs(float(shown.get("quality", -1)) - threshold) < 1e-12):
        mode, value = shown["mode"], shown["value"]
    patch = dict(calib=calib_state(cal, why), below_cal=reading(cal, run_key, threshold, mode, value),
                 calib_error=None)
    if mode == "quality":
        patch["threshold_mode"] = "quality"
    return patch, cal


def raw_patch(dataset, run_key: str, quality: float, by: str = "quality") -> dict:
    """The state a threshold set as raw quality (slider, typed box) brings: read through the table,
    and the mode dropdown back on raw quality (it says how the shown threshold was given)."""
    cal, _ = table_of(dataset, run_key, by)
    return dict(below_cal=reading(cal, run_key, quality), calib_error=None, threshold_mode="quality")
