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
# Above this many faces the maps show a sample of the view: every point costs a database lookup
# for its hover text and a re-plot in the App on every render (100k points: 20 MB per event)
MAX_MAP_POINTS = 5000
MAP_WORST = 1000  # of those, the worst faces by quality are always shown
# red = low quality, green = high (plotly.js has no named RdYlGn, so it is spelled out)
COLORSCALE = [[0.0, "#d73027"], [0.5, "#fee08b"], [1.0, "#1a9850"]]
THRESHOLD_COLOR = "#d62728"


def _round(a, nd=4):
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


# ------------------------------------------------------------------------------------------------
# histogram
# ------------------------------------------------------------------------------------------------


def count_text(n: int, unit: str) -> str:
    """``"1 face"``, ``"3 faces"``, ``"1 sample"``: ``unit`` is the plural."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def histogram_trace(hist: dict, unit: str = "faces", value: str = "quality") -> list[dict]:
    """One bar per bin; each bar's ``id`` encodes its range ``"lo,hi,last"`` for the click handler."""
    edges, counts = hist["edges"], hist["counts"]
    n = len(counts)
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(n)]
    # repr() round-trips floats exactly, so a clicked bar selects exactly the values it counted
    ids = [f"{edges[i]!r},{edges[i + 1]!r},{int(i == n - 1)}" for i in range(n)]
    return [dict(type="bar", x=centers, y=counts, ids=ids, width=[edges[i + 1] - edges[i] for i in range(n)],
                 marker=dict(color="#1f77b4"), name=unit,
                 hovertemplate=value + " %{x:.4f}<br>%{y} " + unit + "<extra></extra>")]


def parse_bar_id(bar_id: str):
    """``(lo, hi, include_hi)`` from a bar id written by :func:`histogram_trace`."""
    lo, hi, last = str(bar_id).split(",")
    return float(lo), float(hi), last.strip() == "1"


def histogram_layout(threshold=None, unit="faces", lo=None, hi=None, value="quality",
                     combined_parts: str = "") -> dict:
    """The x axis spans the values in view (``lo``..``hi``: quality, or the combined value, which
    averages ``combined_parts``, ``runs.combined_parts``); a threshold outside them is named at the
    edge it lies beyond rather than stretching the axis away from the data."""
    title = "Quality" if value == "quality" else f"Combined: {combined_parts}, 0-100"
    layout = dict(title=dict(text=f"{title} (click a bar to show that range)", font=dict(size=13)),
                  xaxis=dict(title=value), yaxis=dict(title=unit), bargap=0.05,
                  margin=dict(l=50, r=10, t=40, b=40), height=260, showlegend=False)
    if lo is not None and hi is not None:
        pad = max(hi - lo, 0.01) * 0.04
        layout["xaxis"].update(range=[lo - pad, hi + pad], autorange=False)
    if threshold is None:
        return layout
    if lo is None or lo <= threshold <= hi:
        layout["shapes"] = [dict(type="line", xref="x", yref="paper", x0=threshold, x1=threshold, y0=0, y1=1,
                                 line=dict(color=THRESHOLD_COLOR, width=2, dash="dash"))]
    else:
        above = threshold > hi
        layout["annotations"] = [dict(xref="paper", yref="paper", x=1 if above else 0, y=1.0,
                                      xanchor="right" if above else "left", showarrow=False,
                                      text=f"threshold {threshold:.4f} {'→' if above else '←'}",
                                      font=dict(color=THRESHOLD_COLOR, size=12))]
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


def worst_ids(scope, k: int) -> list[str]:
    """The ids of the ``k`` worst scored faces in the scope's view (label ids for a patch run, which
    are also the ids of a patches view's rows), sorted and cut by the database: fetching every
    face's id and quality instead cost 0.9 s per event on 100k samples, this 0.2 s."""
    if scope.patch_run and not scope.in_patches:
        root = f"{scope.fields.patches_field}.detections"
        q = f"{root}.{scope.leaf}"
        pipeline = [{"$project": {root: 1}}, {"$unwind": f"${root}"}, {"$match": {q: {"$type": "number"}}},
                    {"$sort": {q: 1}}, {"$limit": int(k)}, {"$project": {"_id": f"${root}._id"}}]
    else:
        q = scope.quality_path
        pipeline = [{"$match": {q: {"$type": "number"}}}, {"$sort": {q: 1, "_id": 1}}, {"$limit": int(k)},
                    {"$project": {"_id": 1}}]
    return [str(d["_id"]) for d in scope.view._aggregate(post_pipeline=pipeline)]


def thin(ids, worst=(), must=(), max_points=None, seed=0):
    """The faces a map draws when the view holds more than ``max_points`` (``MAX_MAP_POINTS``):
    ``worst`` (the worst faces, from :func:`worst_ids`), every id in ``must`` (the pinned and
    selected faces) and a seeded uniform sample of the rest, in the order of ``ids``; only ids of
    ``ids`` are drawn. Returns ``ids`` itself when it is small enough."""
    max_points = MAX_MAP_POINTS if max_points is None else max_points
    if len(ids) <= max_points:
        return ids
    present = set(ids)
    chosen = (set(worst) | set(must)) & present
    rest = [i for i in ids if i not in chosen]
    room = max(max_points - len(chosen), 0)
    if room and rest:
        pick = np.random.default_rng(seed).choice(len(rest), size=min(room, len(rest)), replace=False)
        chosen.update(rest[k] for k in pick)
    return [i for i in ids if i in chosen]


def full_ranges(maps, pad=0.05):
    """Shared axis ranges over *all* points of both maps, so they stay put while the view changes."""
    return own_range(np.concatenate([maps["dense"].points, maps["pruned"].points]), pad)


def hover_fields(dataset, scope) -> list[str]:
    """Sample fields a user may show on hover: text fields and classifications (``identity``...)."""
    import fiftyone as fo

    own = {f"{scope.fields.key}_{n}" for n in ("error", "min_quality")}
    names = []
    for name, field in dataset.get_field_schema().items():
        is_text = isinstance(field, fo.StringField) and name not in ("filepath", "id") and name not in own
        is_class = isinstance(field, fo.EmbeddedDocumentField) and field.document_type is fo.Classification
        if is_text or is_class:
            names.append(name)
    return names


def _label_path(dataset, field):
    f = dataset.get_field(field) if field else None
    if f is None:
        return None
    return f"{field}.label" if hasattr(f, "document_type") else field


def hover_rows(results, scope, ids, field=None) -> list[dict]:
    """Per point of ``results`` (aligned with ``ids``): quality ``q``, drift ``d``, file name ``f``
    and the text of the sample field ``field`` (``l``), by database queries, not per sample."""
    import os

    view = results.view
    label = _label_path(view._dataset, field)
    paths = ["filepath"] + ([label] if label else [])
    if ids and not scope.in_patches:
        return _hover_rows_one_query(view, scope, ids, paths)
    q = results.values(scope.quality_path) if ids else []
    d = results.values(scope.path_of("drift")) if ids else []
    if not ids:
        per_point = []
    elif scope.patch_run:
        # sample fields, spread to the faces of each sample
        values = view.values([f"{scope.fields.patches_field}.detections.id"] + paths)
        by_face = {}
        for row in zip(*values):
            for face in row[0] or []:
                by_face[str(face)] = row[1:]
        per_point = [by_face.get(i, (None,) * len(paths)) for i in ids]
    else:
        per_point = list(zip(*[results.values(p) for p in paths]))
    rows = []
    for qi, di, vals in zip(q, d, per_point):
        rows.append(dict(q=None if qi is None else round(float(qi), 4), d=None if di is None else round(float(di), 4),
                         f=os.path.basename(vals[0] or ""), l=None if len(vals) < 2 else vals[1]))
    return rows


def _hover_rows_one_query(view, scope, ids, paths) -> list[dict]:
    """:func:`hover_rows` by one ``values()`` query over the view, matched to the points by id.

    ``results.values(path)`` looks each point up by id, one query per path: three of them were 60 %
    of a run switch on 20k faces. Sample fields and a patch run's per-face lists come back together
    here, aligned per sample."""
    import os

    if scope.patch_run:
        pf, key = scope.fields.patches_field, scope.fields.key
        faces = [f"{pf}.detections.id", f"{pf}.detections.{key}_quality", f"{pf}.detections.{key}_drift"]
        cols = view.values(faces + paths)
        by_id = {}
        for fids, qs, ds_, *vals in zip(*cols):
            for i, qi, di in zip(fids or [], qs or [], ds_ or []):
                by_id[str(i)] = (qi, di, *vals)
    else:
        cols = view.values(["id", scope.quality_path, scope.path_of("drift")] + paths)
        by_id = {str(i): rest for i, *rest in zip(*cols)}
    empty = (None,) * (2 + len(paths))
    rows = []
    for i in ids:
        qi, di, fp, *lab = by_id.get(i, empty)
        rows.append(dict(q=None if qi is None else round(float(qi), 4), d=None if di is None else round(float(di), 4),
                         f=os.path.basename(fp or ""), l=lab[0] if lab else None))
    return rows


def scatter_trace(which: str, points, ids, rows, cmin, cmax, showscale: bool, hover_field=None) -> dict:
    """One map: coloured and sized by quality, the worst faces drawn last (on top of the rest)."""
    n = len(ids)
    # plotly draws in order: best first, worst last; unscored faces (no quality) go below all
    order = sorted(range(n), key=lambda k: -1e9 if rows[k]["q"] is None else -rows[k]["q"])
    span = max(cmax - cmin, 1e-9)
    big, small = (13, 5) if n < 2000 else (7, 3)
    size = [small if rows[k]["q"] is None else
            round(small + (big - small) * min(max((cmax - rows[k]["q"]) / span, 0.0), 1.0), 1) for k in order]
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)[order] if n else np.zeros((0, 2))
    label = f"<br>{hover_field}: %{{customdata[3]}}" if hover_field else ""
    return dict(type="scattergl" if n >= WEBGL_FROM else "scatter", mode="markers", name=which,
                x=_round(pts[:, 0]), y=_round(pts[:, 1]), ids=[ids[k] for k in order],
                customdata=[[rows[k]["f"], rows[k]["q"], rows[k]["d"], rows[k]["l"]] for k in order],
                marker=dict(color=[rows[k]["q"] for k in order], colorscale=COLORSCALE, cmin=cmin, cmax=cmax,
                            size=size, line=dict(width=0.6, color="rgba(20,20,20,0.7)"), showscale=showscale,
                            colorbar=dict(title=dict(text="quality"), thickness=10) if showscale else None),
                hovertemplate="<b>%{customdata[0]}</b><br>quality %{customdata[1]:.4f}<br>"
                              "drift %{customdata[2]:.4f}" + label + "<extra>" + which + "</extra>")


def own_range(points, pad=0.05):
    """Axis ranges of one map's points (the per-map axes option)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(pts):
        return None
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-6)
    return dict(x=[float(lo[0] - pad * span[0]), float(hi[0] + pad * span[0])],
                y=[float(lo[1] - pad * span[1]), float(hi[1] + pad * span[1])])


def scatter_layout(title: str, ranges, which: str | None = None) -> dict:
    """A map's layout; ``which`` ("dense" or "pruned") tags it for the page's linked hover
    (``js/linked_hover.js`` finds the two maps by ``meta``)."""
    layout = dict(title=dict(text=title, font=dict(size=13)), dragmode="lasso", height=340,
                  margin=dict(l=30, r=10, t=40, b=30), showlegend=False, hovermode="closest")
    if which:
        layout["meta"] = f"prefiqs:{which}"
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
