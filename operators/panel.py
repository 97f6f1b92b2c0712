"""The "Face Quality" panel: turns a PreFIQs run into decisions in the App.

Layout, top to bottom: run picker; quality histogram (click a bar → view of that range);
threshold slider with the live count below it; "Show worst first", "Show below threshold",
"Tag below threshold", "Reset view"; dense and pruned UMAP scatters side by side (same axes,
coloured by quality; lasso or click selects the faces in the grid; a switch draws the drift of
the selected faces as segments dense → pruned); the error-versus-discard curve of an evaluation
run when one exists.

A run scored with a calibration table also reads through it (``panel_calibration``): a
reference-percentile axis and the expected-FNMR curve on the histogram, a threshold given as a
reference percentile or an expected FNMR, and a count that says what it means.

State and plots: the App holds only the widgets' values (run, threshold, tag, ...). What the
panel computes (counts, ranges, notes) and the plots' traces stay on the server, in an execution
store per panel, and reach the App inside the rendered layout: each plot carries its traces in its
view (``PlotlyView(data=...)``). FiftyOne 1.22 writes every change of a panel's state, and any
panel data the App's form copies into it, into the session's spaces, and each such write makes
the App reload its dataset page; with the maps in the state at 100k faces every event also
uploaded 2-4 MB. Every number comes from a database aggregation (``bounds``, ``histogram_values``,
``count``) or a ``values()`` query aligned with the brain results, so the panel works on 100k
faces.

The panel follows the App: ``on_change_view`` recomputes everything for the new view, and the
selection hooks redraw the drift segments.
"""
from __future__ import annotations

import fiftyone.operators as foo
from bson import json_util

from . import panel_edc, panel_pin, panel_plots, panel_queries, runs
from .panel_layout import build
from .tagging import tag_low_quality
from . import panel_calibration

PLUGIN = "@prefiqs/prefiqs"
COMPUTE_URI = f"{PLUGIN}/compute_prefiqs"
UMAP_URI = f"{PLUGIN}/compute_prefiqs_visualization"
DEFAULT_TAG = "low_quality"
# where earlier versions kept plot traces as panel data (the App's form copied them into the state)
DATA_KEYS = ("histogram", "maps", "edc")
# state the panel computes (never a widget's value): kept on the server between events
COMPUTED = ("runs", "shown_run", "below_at", "below", "info", "view_key", "hover_choices", "has_maps",
            "map_ranges", "own_ranges", "drift_note", "map_note", "hover_drawn", "num_edc", "last_tagging",
            "show_drift", "own_axes", "pinned")
MEMORY_STORE, MEMORY_TTL_S = "prefiqs_panel", 7 * 24 * 3600
PLOTS_SUFFIX = "/plots"  # the plots' traces, a store entry of their own: written only when redrawn

COMPUTED += panel_calibration.COMPUTED  # the calibrated reading of the threshold (issue 12)


def _is_data_key(key: str) -> bool:
    """A path where plot traces were once panel data (``histogram``, ``maps3``, ``edc2``)."""
    return any(key == k or (key.startswith(k) and key[len(k):].isdigit()) for k in DATA_KEYS)


def _coalesce(requests, stale, server_side=(), app_state=None, redrawn=False):
    """What one event sends to the App: at most one state patch, one data patch and one output.

    Each ``set_state``/``set_data`` is its own message, and the App re-renders the whole panel after
    each one; every render hands each plotly chart a new layout, so every chart is re-plotted. A run
    switch sent ~10 messages per event and ~15 events came with it (the App's echoes): the browser
    re-plotted the histogram 67 times and each map 51 times, and on a busy 2-core machine the old
    run's maps stayed on screen for 20-40 s. Patches are merged in order (a later value of a key
    wins, as it would when applied one by one), and an event that changed nothing (an echo of the
    App, a view the panel already shows) sends nothing at all: its output would be the one shown.

    Keys in ``server_side`` are not sent: the panel keeps them in its execution store and the
    layout is rendered here. Nor is a value the App already holds (``app_state``, the state the
    event came with). ``redrawn``: a plot changed (its traces travel in the output). Every change of a panel's state in the App is written into the
    session's spaces (FiftyOne 1.22), and each such write makes the App reload its dataset page,
    grid included: at 100k samples a run switch spent most of its 25 s in those reloads.
    """
    merged = {"patch_panel_state": {}, "patch_panel_data": {}}
    first_of, kept = {}, []
    for r in requests:
        uri = r.operator_uri
        if uri in merged:
            merged[uri].update(r.params.get("state" if uri == "patch_panel_state" else "data") or {})
            if uri not in first_of:
                first_of[uri] = r
                kept.append(r)
        else:
            kept.append(r)
    state_patch = {k: v for k, v in merged["patch_panel_state"].items() if not (k in stale and v is None)}
    if not redrawn and not merged["patch_panel_data"] and not state_patch and all(
            r.operator_uri in ("show_panel_output", *merged) for r in kept):
        return []
    app_state = app_state or {}
    merged["patch_panel_state"] = {k: v for k, v in merged["patch_panel_state"].items()
                                   if k not in server_side and not (k in app_state and app_state[k] == v)}
    for uri, r in first_of.items():
        if not merged[uri]:  # only server-side state changed: the output alone shows it
            kept.remove(r)
            continue
        r.params["state" if uri == "patch_panel_state" else "data"] = merged[uri]
    return kept


class PrefiqsPanel(panel_calibration.CalibratedThreshold, foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="prefiqs_panel", label="Face Quality", surfaces="grid", allow_multiple=False,
            help_markdown="PreFIQs face quality: histogram, threshold, worst-first review, tagging, "
                          "and the dense vs pruned embedding maps of a run.")

    # --------------------------------------------------------------------------------------------
    # lifecycle: everything is recomputed from the current view
    # --------------------------------------------------------------------------------------------

    def execute(self, ctx):
        if ctx.params.get("__method__") in (None, "on_startup"):  # registration: no panel yet
            return super().execute(ctx)
        # What the panel computed lives on the server (an execution store per panel), not only in
        # the panel state: the App's form writes its own, older copy of the whole state back on
        # widget changes, which used to undo the panel's updates (a switched run reverted, a count
        # shown for another threshold). The server's copy wins over what an event brings.
        memory, panel_id = ctx.store(MEMORY_STORE), ctx.params.get("panel_id") or "panel"
        # the run the App showed when it sent this event, before the server's copy replaces it
        ctx.prefiqs_app_run = ctx.panel_state.get("run_key")
        app_state = dict(ctx.panel_state)
        ctx.panel_state.update(memory.get(panel_id) or {})
        requests = ctx.executor._requests if ctx.executor is not None else None
        first = len(requests) if requests is not None else 0
        # A state saved by an earlier version can still hold copies of plot traces, which would
        # be drawn instead of the layout's own: dropped
        stale = {k: None for k, v in ctx.panel_state.items() if v is not None and _is_data_key(k)}
        if stale:
            ctx.panel.set_state(stale)
        ctx.prefiqs_plots, ctx.prefiqs_redrawn = memory.get(panel_id + PLOTS_SUFFIX) or {}, False
        result = super().execute(ctx)
        memory.set(panel_id, {k: ctx.panel_state.get(k) for k in COMPUTED if k in ctx.panel_state},
                   ttl=MEMORY_TTL_S)
        if ctx.prefiqs_redrawn:
            memory.set(panel_id + PLOTS_SUFFIX, ctx.prefiqs_plots, ttl=MEMORY_TTL_S)
        if requests is not None:
            requests[first:] = _coalesce(requests[first:], stale, COMPUTED, app_state, ctx.prefiqs_redrawn)
        return result

    @staticmethod
    def _draw(ctx, name, traces):
        """Set a plot's traces (``histogram``: a list; ``maps``: ``dense``/``pruned`` lists;
        ``edc``: a list); the layout puts them in the plot's view."""
        if not hasattr(ctx, "prefiqs_plots"):  # a handler called outside ``execute``
            ctx.prefiqs_plots = {}
        ctx.prefiqs_plots[name] = traces
        ctx.prefiqs_redrawn = True

    def on_load(self, ctx):
        keys = panel_queries.prefiqs_runs(ctx.dataset)
        state = ctx.panel.state
        # every widget shows the state entry of its own name (widgets get no ``default``: the App
        # re-sends a changed default as a user change, which would loop back here)
        first = dict(runs=keys, tag=state.tag or DEFAULT_TAG, hover_field=state.hover_field or "")
        if not keys:
            ctx.panel.set_state(dict(first, run_key=None, has_maps=False))
            return
        if state.run_key not in keys:
            first.update(run_key=keys[-1], threshold=None)  # the newest run
        ctx.panel.set_state(first)
        self._refresh(ctx)

    def on_change_view(self, ctx):
        # the App reports one change of view as up to three events (stages, filters, extended
        # selection): the same view (and the same runs) is not recomputed
        if ctx.panel.state.view_key == self._view_key(ctx):
            return
        self.on_load(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.set_state(dict(run_key=None, shown_run=None, view_key=None, pinned=None))
        self.on_load(ctx)

    def on_change_selected(self, ctx):
        scope = self._scope(ctx) if ctx.panel.state.show_drift else None
        if scope is not None:
            self._refresh_maps(ctx, scope)

    def on_change_selected_labels(self, ctx):
        self.on_change_selected(ctx)

    # --------------------------------------------------------------------------------------------
    # controls. The App writes a widget's new value into the state before it sends the event, so
    # each handler compares the value with what the panel last *computed* (``shown_run``,
    # ``below_at``, ``hover_drawn``) and ignores what it already shows: an echo
    # of the App must not start another round trip.
    # --------------------------------------------------------------------------------------------

    def on_change_run(self, ctx):
        key = ctx.params.get("value")
        if not key or key == ctx.panel.state.shown_run:
            return
        # a threshold belongs to its run's score distribution: start the new run from its default.
        # A pinned face belongs to the run's maps: another run's maps hold other faces (or the same
        # sample under another id), so the pin goes with the run
        ctx.panel.set_state(dict(run_key=key, threshold=None, last_tagging=None, pinned=None))
        self._refresh(ctx)

    def on_change_rank_by(self, ctx):
        """Rank faces by the quality or by ``combined`` (runs that wrote ``K_combined``): the
        histogram, threshold, count, views and tagging all follow."""
        value = ctx.params.get("value") or "quality"
        if value == (ctx.panel.state.info or {}).get("rank_by"):
            return
        # a threshold belongs to one scale: the new one starts from its own default
        ctx.panel.set_state(dict(rank_by=value, threshold=None, last_tagging=None))
        self._refresh(ctx)

    def on_change_threshold(self, ctx):
        self._set_threshold(ctx, ctx.params.get("value"), echo=True)

    def on_type_threshold(self, ctx):
        # the typed box is not written back: that would reset the box under the user's cursor
        self._set_threshold(ctx, ctx.params.get("value"), echo=False)

    def _set_threshold(self, ctx, value, echo):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        state = ctx.panel.state
        if state.below_at is not None and abs(value - float(state.below_at)) < 5e-5:
            return
        # Leaving the typed box (a click on the run picker) re-sends its value; that event can
        # reach the server after the run switch it came before, and put the old run's threshold on
        # the new run (above all of its faces). A value sent for another run than the one shown is
        # not applied.
        sent_for = getattr(ctx, "prefiqs_app_run", None)
        if sent_for and state.shown_run and sent_for != state.shown_run:
            return
        scope = self._scope(ctx)
        if scope is None:
            return
        patch = dict(threshold=value, below_at=value, below=scope.count_below(value))
        if echo:
            patch["threshold_typed"] = value
        patch.update(panel_calibration.raw_patch(ctx.dataset, scope.fields.key, value, scope.value))
        ctx.panel.set_state(patch)

    def on_histogram_click(self, ctx):
        bar = ctx.params.get("id")
        scope = self._scope(ctx)
        if bar is None or scope is None:
            return
        lo, hi, last = panel_plots.parse_bar_id(bar)
        ctx.ops.set_view(scope.in_range(lo, hi, include_hi=last))

    def show_worst_first(self, ctx):
        scope = self._scope(ctx)
        if scope is not None:
            ctx.ops.set_view(scope.worst_first())

    def show_below_threshold(self, ctx):
        scope = self._scope(ctx)
        if scope is not None:
            ctx.ops.set_view(scope.below_view(self._threshold(ctx)))

    def tag_below_threshold(self, ctx):
        scope = self._scope(ctx)
        if scope is None:
            return
        tag = ctx.panel.state.tag or DEFAULT_TAG
        t = self._threshold(ctx)
        criterion = panel_calibration.tag_criterion(ctx.panel.state, t, scope.value)
        # the sample-level collection behind the view: tagging a patches view row would tag a copy
        info = tag_low_quality(scope.samples, run_key=scope.fields.key, tag=tag, **criterion)
        ctx.panel.state.last_tagging = dict(num_tagged=info["num_tagged"], tag=tag, label_tags=info["label_tags"])
        ctx.ops.reload_dataset()
        kind = "face labels" if info["label_tags"] else "samples"
        ctx.ops.notify(f"Tagged {panel_plots.count_text(info['num_tagged'], kind)} {tag!r} ({scope.value} < {t:.4f})",
                       variant="success")

    def reset_view(self, ctx):
        ctx.ops.clear_view()

    def on_map_select(self, ctx):
        """Lasso/box selection in a scatter: show exactly those samples or faces."""
        ids = [p.get("id") for p in (ctx.params.get("data") or []) if isinstance(p, dict)]
        self._show_ids(ctx, [i for i in ids if i])

    def on_map_click(self, ctx):
        """A click pins the face (ringed in both maps, thumbnail in the panel); a click on the pinned
        face unpins it. The App sends no hover events to Python, so a click is the way to point."""
        point = ctx.params.get("id")
        if not point:  # a drift segment: no face
            return
        pinned = ctx.panel.state.pinned or {}
        self._pin(ctx, None if pinned.get("id") == point else point)

    def on_map_double_click(self, ctx):
        if ctx.panel.state.pinned:
            self._pin(ctx, None)

    def clear_pin(self, ctx):
        self._pin(ctx, None)

    def show_pinned(self, ctx):
        """The pinned face alone in the grid (what a click on a point used to do)."""
        pinned = ctx.panel.state.pinned or {}
        if pinned.get("id"):
            self._show_ids(ctx, [pinned["id"]])

    def _pin(self, ctx, face_id):
        scope = self._scope(ctx)
        if scope is None:
            return
        pin = panel_pin.pin_info(ctx.dataset, scope, face_id, ctx.panel.state.hover_field) if face_id else None
        # the rings are layout shapes built from this state by ``render``: the maps' data stays.
        # The App keeps the previous thumbnail's copy under that face's row name: dropped here, so
        # images do not pile up in the state the App sends with every event
        old = (ctx.panel.state.pinned or {}).get("id")
        ctx.panel.set_state(dict(pinned=pin, **({f"pin_{old}": None} if old else {})))

    def on_toggle_drift(self, ctx):
        ctx.panel.state.show_drift = not ctx.panel.state.show_drift
        scope = self._scope(ctx)
        if scope is not None:
            self._refresh_maps(ctx, scope)

    def on_toggle_axes(self, ctx):
        ctx.panel.state.own_axes = not ctx.panel.state.own_axes

    def on_change_hover_field(self, ctx):
        value = ctx.params.get("value") or ""
        if value == (ctx.panel.state.hover_drawn or ""):
            return
        ctx.panel.state.hover_field = value
        scope = self._scope(ctx)
        if scope is not None:
            self._refresh_maps(ctx, scope)

    def show_errors(self, ctx):
        scope = self._scope(ctx)
        if scope is not None:
            ctx.ops.set_view(scope.errors_view())

    def open_compute(self, ctx):
        """Open the compute_prefiqs form (the App prompts for its parameters)."""
        ctx.prompt(COMPUTE_URI)

    def open_umap(self, ctx):
        ctx.prompt(UMAP_URI, params=dict(run_key=ctx.panel.state.run_key))

    # --------------------------------------------------------------------------------------------
    # computation
    # --------------------------------------------------------------------------------------------

    def _scope(self, ctx):
        key = ctx.panel.state.run_key
        if not key or not runs.is_prefiqs_run(ctx.dataset, key):
            return None
        # a run that wrote combined is ranked by it until the user picks the quality (a pick holds
        # for every run): on LFW's held-out people it ranks faces better than the quality alone on
        # both networks (README, "How well it ranks"). A run without it is ranked by the quality
        combined = (ctx.panel.state.rank_by or "combined") == "combined" and runs.has_combined(ctx.dataset, key)
        return panel_queries.scope_of(ctx.view, ctx.dataset, key, "combined" if combined else "quality")

    def _threshold(self, ctx) -> float:
        """The threshold the shown count was computed with: tagging must match what the panel says."""
        t = ctx.panel.state.below_at
        return 0.5 if t is None else float(t)

    def _view_key(self, ctx) -> str:
        """What the panel's numbers depend on besides its own state: the view and the runs."""
        stages = ctx.view._serialize() if ctx.has_custom_view else []
        return json_util.dumps([stages, ctx.dataset.list_runs()], sort_keys=True)

    def _refresh(self, ctx):
        scope = self._scope(ctx)
        if scope is None:
            return
        state = ctx.panel.state
        key = scope.fields.key
        hist = panel_queries.histogram(scope)
        lo, hi = (hist["lo"], hist["hi"]) if hist else (None, None)
        combined = scope.value == "combined"
        # the slider's scale: the run's whole quality range, or the combined value's 0-100
        run_lo, run_hi = (0.0, 100.0) if combined else self._run_range(ctx, key, lo, hi)
        threshold = state.threshold
        if threshold is None:
            threshold = (panel_queries.combined_default_threshold(ctx.dataset, scope.fields) if combined
                         else panel_queries.default_threshold(ctx.dataset, key, run_lo, run_hi))
            if run_lo is not None:
                threshold = min(max(threshold, run_lo), run_hi)
        cfg = runs.load_config(ctx.dataset, key)
        info = dict(unit=scope.unit, patch_run=scope.patch_run, patches_field=scope.fields.patches_field,
                    in_patches=scope.in_patches, num=hist["total"] if hist else 0, lo=lo, hi=hi,
                    run_lo=run_lo, run_hi=run_hi, errors=scope.count_errors(),
                    backbone=cfg.get("backbone"), sparsity=(cfg.get("sparsity") or [None])[0],
                    custom_view=bool(ctx.has_custom_view), rank_by=scope.value,
                    has_combined=runs.has_combined(ctx.dataset, key),
                    combined_parts=runs.combined_parts(ctx.dataset, key))
        # before the patch below: it reads how the previous threshold was given
        calibrated, cal = panel_calibration.refresh_patch(ctx.dataset, key, threshold, state, scope.value)
        ctx.panel.set_state(calibrated)
        # one state patch rather than one message per key
        # the typed box shows a reader's digits (a converted threshold has 16); within the echo tolerance
        ctx.panel.set_state({"threshold": threshold, "threshold_typed": round(threshold, 5), "below_at": threshold,
                             "info": info, "shown_run": key, "run_key": key,
                             "below": scope.count_below(threshold), "view_key": self._view_key(ctx),
                             "hover_choices": panel_plots.hover_fields(ctx.dataset, scope)})
        self._draw(ctx, "histogram", (panel_plots.histogram_trace(hist, scope.unit, scope.value) if hist else [])
                   + panel_calibration.curve_traces(cal, lo, hi))
        self._refresh_maps(ctx, scope)
        self._refresh_edc(ctx, scope)

    def _run_range(self, ctx, key, lo, hi):
        """The run's whole quality range (its summary), so that the slider keeps its scale in any view."""
        summary = runs.load_results(ctx.dataset, key).get("summary") or {}
        rlo, rhi = summary.get("quality_min"), summary.get("quality_max")
        if rlo is None or rhi is None:
            return lo, hi
        return float(rlo), float(rhi)

    def _refresh_maps(self, ctx, scope):
        state = ctx.panel.state
        # the dataset itself skips the id lookup that restricting the maps to a view costs
        view = scope.view if ctx.has_custom_view else ctx.dataset
        maps = panel_plots.load_maps(ctx.dataset, scope.fields, view)
        if maps is None:
            ctx.panel.set_state(dict(has_maps=False, drift_note=None, map_note=None))
            return
        dense, pruned = maps["dense"], maps["pruned"]
        ids_d = panel_plots.map_ids(dense, scope.patch_run)
        map_note = self._thin_maps(ctx, scope, dense, ids_d)
        if map_note:
            ids_d = panel_plots.map_ids(dense, scope.patch_run)
        pts_d = dense.current_points
        pts_p, ids_p = panel_plots.points_for(pruned, ids_d, scope.patch_run)
        inner = panel_queries.Scope(scope.fields, dense.view)
        hover = panel_plots.hover_rows(dense, inner, ids_d, state.hover_field)
        by_id = dict(zip(ids_d, hover))
        rows_p = hover if ids_p == ids_d else [by_id[i] for i in ids_p]
        cmin, cmax = self._color_range(ctx, scope, [h["q"] for h in hover])
        field = state.hover_field or None
        traces = dict(dense=[panel_plots.scatter_trace("dense", pts_d, ids_d, hover, cmin, cmax, False, field)],
                      pruned=[panel_plots.scatter_trace("pruned", pts_p, ids_p, rows_p, cmin, cmax, True, field)])
        self._pinned_in_view(ctx, scope, ids_d)
        note = None
        if state.show_drift:
            chosen, picked = self._selected_ids(ctx, scope, ids_d)
            q_by_id = {i: h["q"] for i, h in by_id.items()}
            trace, drawn, asked = panel_plots.drift_trace(dict(zip(ids_d, pts_d)), dict(zip(ids_p, pts_p)),
                                                          chosen, q_by_id)
            traces["dense"].append(trace)
            traces["pruned"].append(trace)
            if asked:
                # the faces of a narrowed view are not "selected": say where they come from
                where = "selected" if picked else "in this view"
                note = f"Drift of {panel_plots.count_text(drawn, scope.unit)} {where}, dense → pruned"
                note += f" (the worst {drawn} of {asked})" if drawn < asked else ""
            else:
                note = f"Select {scope.unit} (lasso in a map, or in the grid) to draw their drift"
        ranges = panel_plots.full_ranges(maps)
        ctx.panel.set_state(dict(has_maps=True, map_ranges=ranges, drift_note=note, map_note=map_note,
                                 hover_drawn=state.hover_field or "",
                                 own_ranges=dict(dense=panel_plots.own_range(pts_d),
                                                 pruned=panel_plots.own_range(pts_p))))
        self._draw(ctx, "maps", traces)

    def _thin_maps(self, ctx, scope, dense, ids):
        """Above ``MAX_MAP_POINTS`` faces, restrict ``dense`` to the worst faces, the pinned and
        selected ones and a seeded sample of the rest; returns what the panel says about it."""
        if len(ids) <= panel_plots.MAX_MAP_POINTS:
            return None
        pinned = (ctx.panel.state.pinned or {}).get("id")
        must = self._selected_ids(ctx, scope, [])[0] + ([pinned] if pinned else [])
        worst = panel_plots.worst_ids(scope, panel_plots.MAP_WORST)
        keep = panel_plots.thin(ids, worst, must=must)
        if scope.patch_run and not scope.in_patches:
            narrow = scope.view.select_labels(ids=keep, fields=scope.fields.patches_field)
        else:
            narrow = scope.view.select(keep)
        dense.use_view(narrow, allow_missing=True)
        return (f"The maps show {len(keep):,} of the {len(ids):,} {scope.unit} in view: the "
                f"{panel_plots.MAP_WORST:,} worst and a random sample of the rest. Narrow the view "
                f"(a histogram bar, \"Show below threshold\") to map every face of it.")

    def _pinned_in_view(self, ctx, scope, view_ids):
        """The pin, while its face is on the maps; unpinned once the view leaves it out (the maps
        hold exactly the view, so a ring with no point under it would mark nothing). A new hover
        field is read again so the pin's text matches the hover text."""
        pinned = ctx.panel.state.pinned
        if not pinned:
            return None
        if pinned.get("id") not in set(view_ids):
            ctx.panel.set_state(dict(pinned=None))
            return None
        if (pinned.get("field") or "") != (ctx.panel.state.hover_field or ""):
            pinned = panel_pin.pin_info(ctx.dataset, scope, pinned["id"], ctx.panel.state.hover_field)
            ctx.panel.set_state(dict(pinned=pinned))
        return pinned

    def _color_range(self, ctx, scope, quality):
        """The run's whole quality range, so a face keeps its colour when the view narrows."""
        known = [v for v in quality if v is not None]
        return self._run_range(ctx, scope.fields.key, min(known, default=0.0), max(known, default=1.0))

    def _selected_ids(self, ctx, scope, view_ids):
        """The faces whose drift to draw: the App's selection, else the current (custom) view; and
        whether they are a selection."""
        pf = scope.fields.patches_field
        if scope.patch_run:
            chosen = [s["label_id"] for s in ctx.selected_labels if s.get("field") == pf]
            if scope.in_patches:
                chosen += list(ctx.selected)  # a patch's id is its label's id
        else:
            chosen = list(ctx.selected)
        if chosen:
            return chosen, True
        return (view_ids if ctx.has_custom_view else []), False

    def _refresh_edc(self, ctx, scope):
        keys = panel_edc.evaluation_runs(ctx.dataset, scope.fields.key)
        traces = panel_edc.load_curves(ctx.dataset, keys) if keys else []
        ctx.panel.state.num_edc = len(traces)
        self._draw(ctx, "edc", traces)

    def _show_ids(self, ctx, ids):
        scope = self._scope(ctx)
        if scope is None or not ids:
            return
        if not scope.patch_run:
            ctx.ops.set_view(ctx.dataset.select(ids))
            return
        pf = scope.fields.patches_field
        chosen = ctx.dataset.select_labels(ids=ids, fields=pf)
        # stay in the patches grid when the user is reviewing faces one by one
        ctx.ops.set_view(chosen.to_patches(pf) if scope.in_patches else chosen)

    # --------------------------------------------------------------------------------------------
    # layout (state only: render runs after every event)
    # --------------------------------------------------------------------------------------------

    def render(self, ctx):
        return build(self, ctx)
