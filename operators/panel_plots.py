"""Plotly traces for the Face Quality panel: quality histogram, dense/pruned scatters, drift segments.

The traces are sent to the App as panel *data* (write-only, not round-tripped with every event),
so they may be large; they are still kept lean: coordinates are rounded, ``scattergl`` (WebGL)
replaces SVG ``scatter`` above a few thousand points, and drift segments are capped.

Scatter points come from the run's brain visualization results (``K_dense_umap`` and
``K_pruned_umap``, one joint UMAP, so both share coordinates). ``results.use_view(view)`` and
``results.values(path)`` restrict them to the current view and fetch quality with database
queries, aligned with the points, without iterating over samples.
"""
from __future__ import annotations

import numpy as np

WEBGL_FROM = 5000  # SVG scatter is sharper and easier to test; WebGL is needed for 100k points
MAX_DRIFT_SEGMENTS = 2000
# red = low quality, green = high (plotly.js has no named RdYlGn, so it is spelled out)
COLORSCALE = [[0.0, "#d73027"], [0.5, "#fee08b"], [1.0, "#1a9850"]]
THRESHOLD_COLOR = "#d62728"


def _round(a, nd=4):
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


# ------------------------------------------------------------------------------------------------
# histogram
# ------------------------------------------------------------------------------------------------


def histogram_trace(hist: dict) -> list[dict]:
    """One bar per bin; each bar's ``id`` encodes its range ``"lo,hi,last"`` for the click handler."""
    edges, counts = hist["edges"], hist["counts"]
    n = len(counts)
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(n)]
    # repr() round-trips floats exactly, so a clicked bar selects exactly the values it counted
    ids = [f"{edges[i]!r},{edges[i + 1]!r},{int(i == n - 1)}" for i in range(n)]
    return [dict(type="bar", x=centers, y=counts, ids=ids, width=[edges[i + 1] - edges[i] for i in range(n)],
                 marker=dict(color="#1f77b4"), name="faces",
                 hovertemplate="quality %{x:.4f}<br>%{y} faces<extra></extra>")]


def parse_bar_id(bar_id: str):
    """``(lo, hi, include_hi)`` from a bar id written by :func:`histogram_trace`."""
    lo, hi, last = str(bar_id).split(",")
    return float(lo), float(hi), last.strip() == "1"


def histogram_layout(threshold=None, unit="faces") -> dict:
    layout = dict(title=dict(text="Quality (click a bar to show that range)", font=dict(size=13)),
                  xaxis=dict(title="quality"), yaxis=dict(title=unit), bargap=0.05,
                  margin=dict(l=50, r=10, t=40, b=40), height=260, showlegend=False)
    if threshold is not None:
        layout["shapes"] = [dict(type="line", xref="x", yref="paper", x0=threshold, x1=threshold, y0=0, y1=1,
                                 line=dict(color=THRESHOLD_COLOR, width=2, dash="dash"))]
    return layout


# ------------------------------------------------------------------------------------------------
# dense / pruned scatters
# ------------------------------------------------------------------------------------------------


def load_maps(dataset, fields, view):
    """``{"dense": results, "pruned": results}``, or ``None`` if a map is missing.

    Only the dense results are restricted to ``view`` (``use_view`` looks up the view's ids, about
    a second per 100k faces); the pruned points of the same faces are then picked by id with
    :func:`points_for`, since both maps hold the same faces.
    """
    have = set(dataset.list_brain_runs(type="visualization"))
    if not all(k in have for k in fields.brain_keys):
        return None
    dense = dataset.load_brain_results(fields.brain_key("dense"))
    dense.use_view(view, allow_missing=True)
    return dict(dense=dense, pruned=dataset.load_brain_results(fields.brain_key("pruned")))


def points_for(res, ids, patch_run: bool):
    """``(points, ids)`` of ``res`` (full results) for the faces ``ids`` it holds, in that order."""
    all_ids = res.label_ids if patch_run else res.sample_ids
    index = {str(i): k for k, i in enumerate(all_ids)}
    keep = [i for i in ids if i in index]
    rows = np.fromiter((index[i] for i in keep), dtype=np.int64, count=len(keep))
    return res.points[rows] if len(rows) else np.zeros((0, 2)), keep


def map_ids(res, patch_run: bool):
    """The ids a point selects: label ids for patch-level maps, else sample ids."""
    ids = res.current_label_ids if patch_run else res.current_sample_ids
    return [] if ids is None else [str(i) for i in ids]


def full_ranges(maps, pad=0.05):
    """Shared axis ranges over *all* points of both maps, so they stay put while the view changes."""
    pts = np.concatenate([maps["dense"].points, maps["pruned"].points])
    if not len(pts):
        return None
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-6)
    return dict(x=[float(lo[0] - pad * span[0]), float(hi[0] + pad * span[0])],
                y=[float(lo[1] - pad * span[1]), float(hi[1] + pad * span[1])])


def scatter_trace(which: str, points, ids, quality, cmin, cmax, showscale: bool) -> dict:
    n = len(ids)
    q = [None if v is None else round(float(v), 4) for v in quality]
    return dict(type="scattergl" if n >= WEBGL_FROM else "scatter", mode="markers", name=which,
                x=_round(points[:, 0]) if n else [], y=_round(points[:, 1]) if n else [], ids=list(ids),
                marker=dict(color=q, colorscale=COLORSCALE, cmin=cmin, cmax=cmax, size=7 if n < 2000 else 4,
                            showscale=showscale,
                            colorbar=dict(title=dict(text="quality"), thickness=10) if showscale else None),
                hovertemplate="quality %{marker.color:.4f}<extra>" + which + "</extra>")


def scatter_layout(title: str, ranges) -> dict:
    layout = dict(title=dict(text=title, font=dict(size=13)), dragmode="lasso", height=340,
                  margin=dict(l=30, r=10, t=40, b=30), showlegend=False, hovermode="closest")
    if ranges:
        layout["xaxis"] = dict(range=ranges["x"], zeroline=False, autorange=False)
        layout["yaxis"] = dict(range=ranges["y"], zeroline=False, autorange=False)
    return layout


def drift_trace(dense_pts: dict, pruned_pts: dict, ids, quality_by_id: dict, cap=MAX_DRIFT_SEGMENTS):
    """Line segments dense → pruned for ``ids`` (worst ``cap`` first), as one trace with gaps.

    ``dense_pts`` / ``pruned_pts`` map an id to its 2-D point. Returns ``(trace, num_drawn, num_asked)``.
    """
    both = [i for i in ids if i in dense_pts and i in pruned_pts]
    both.sort(key=lambda i: (quality_by_id.get(i) is None, quality_by_id.get(i) or 0.0))
    keep = both[:cap]
    xs, ys = [], []
    for i in keep:
        (x0, y0), (x1, y1) = dense_pts[i], pruned_pts[i]
        xs += [round(float(x0), 4), round(float(x1), 4), None]
        ys += [round(float(y0), 4), round(float(y1), 4), None]
    trace = dict(type="scattergl" if len(keep) >= WEBGL_FROM else "scatter", mode="lines", name="drift",
                 x=xs, y=ys, line=dict(color="rgba(255,140,0,0.85)", width=1.5), hoverinfo="skip")
    return trace, len(keep), len(both)
