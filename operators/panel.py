"""The "Face Quality" panel: turns a PreFIQs run into decisions in the App.

Layout, top to bottom: run picker; quality histogram (click a bar → view of that range);
threshold slider with the live count below it; "Show worst first", "Show below threshold",
"Tag below threshold", "Reset view"; dense and pruned UMAP scatters side by side (same axes,
coloured by quality; lasso or click selects the faces in the grid; a switch draws the drift of
the selected faces as segments dense → pruned); the error-versus-discard curve of an evaluation
run when one exists.

State vs data: ``ctx.panel.state`` round-trips with every event, so it only holds small values
(run key, threshold, counts, flags). Plot arrays go to ``ctx.panel.data`` (write-only). Every
number comes from a database aggregation (``bounds``, ``histogram_values``, ``count``) or a
``values()`` query aligned with the brain results, so the panel works on 100k faces.

The panel follows the App: ``on_change_view`` recomputes everything for the new view, and the
selection hooks redraw the drift segments.
"""
from __future__ import annotations

import fiftyone.operators as foo

from . import panel_edc, panel_plots, panel_queries, runs
from .panel_layout import build, slider_name
from .tagging import tag_low_quality

PLUGIN = "@prefiqs/prefiqs"
COMPUTE_URI = f"{PLUGIN}/compute_prefiqs"
UMAP_URI = f"{PLUGIN}/compute_prefiqs_visualization"
DEFAULT_TAG = "low_quality"


class PrefiqsPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="prefiqs_panel", label="Face Quality", surfaces="grid", allow_multiple=False,
            help_markdown="PreFIQs face quality: histogram, threshold, worst-first review, tagging, "
                          "and the dense vs pruned embedding maps of a run.")

    # --------------------------------------------------------------------------------------------
    # lifecycle: everything is recomputed from the current view
    # --------------------------------------------------------------------------------------------

    def on_load(self, ctx):
        keys = panel_queries.prefiqs_runs(ctx.dataset)
        state = ctx.panel.state
        state.runs = keys
        if not keys:
            state.set(dict(run_key=None, has_maps=False))
            return
        if state.run_key not in keys:
            state.set(dict(run_key=keys[-1], threshold=None))  # the newest run
        self._refresh(ctx)

    def on_change_view(self, ctx):
        self.on_load(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.state.run_key = None
        self.on_load(ctx)

    def on_change_selected(self, ctx):
        scope = self._scope(ctx) if ctx.panel.state.show_drift else None
        if scope is not None:
            self._refresh_maps(ctx, scope)

    def on_change_selected_labels(self, ctx):
        self.on_change_selected(ctx)

    # --------------------------------------------------------------------------------------------
    # controls
    # --------------------------------------------------------------------------------------------

    def on_change_run(self, ctx):
        key = ctx.params.get("value") or ctx.panel.state.run_key
        # a threshold belongs to its run's score distribution: start the new run from its default
        ctx.panel.set_state(dict(run_key=key, threshold=None, last_tagging=None))
        self._refresh(ctx)

    def on_change_threshold(self, ctx):
        value = ctx.params.get("value")
        if value is None:
            value = ctx.panel.state.threshold
        ctx.panel.state.threshold = float(value)
        scope = self._scope(ctx)
        if scope is not None:
            self._refresh_count(ctx, scope)

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
        # the sample-level collection behind the view: tagging a patches view row would tag a copy
        info = tag_low_quality(scope.samples, run_key=scope.fields.key, threshold=self._threshold(ctx), tag=tag)
        ctx.panel.state.last_tagging = dict(num_tagged=info["num_tagged"], tag=tag, label_tags=info["label_tags"])
        ctx.ops.reload_dataset()
        kind = "face labels" if info["label_tags"] else "samples"
        ctx.ops.notify(f"Tagged {info['num_tagged']} {kind} {tag!r} (quality < {self._threshold(ctx):.4f})",
                       variant="success")

    def reset_view(self, ctx):
        ctx.ops.clear_view()

    def on_map_select(self, ctx):
        """Lasso/box selection in a scatter: show exactly those samples or faces."""
        ids = [p.get("id") for p in (ctx.params.get("data") or []) if isinstance(p, dict)]
        self._show_ids(ctx, [i for i in ids if i])

    def on_map_click(self, ctx):
        point = ctx.params.get("id")
        if point:
            self._show_ids(ctx, [point])

    def on_toggle_drift(self, ctx):
        value = ctx.params.get("value")
        ctx.panel.state.show_drift = bool(value if value is not None else not ctx.panel.state.show_drift)
        scope = self._scope(ctx)
        if scope is not None:
            self._refresh_maps(ctx, scope)

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
        return panel_queries.scope_of(ctx.view, ctx.dataset, key)

    def _threshold(self, ctx) -> float:
        t = ctx.panel.state.threshold
        return 0.5 if t is None else float(t)

    def _refresh(self, ctx):
        scope = self._scope(ctx)
        if scope is None:
            return
        state = ctx.panel.state
        hist = panel_queries.histogram(scope)
        lo, hi = (hist["lo"], hist["hi"]) if hist else (None, None)
        threshold = state.threshold
        if threshold is None:
            threshold = panel_queries.default_threshold(ctx.dataset, scope.fields.key, lo, hi)
        cfg = runs.load_config(ctx.dataset, scope.fields.key)
        info = dict(unit=scope.unit, patch_run=scope.patch_run, patches_field=scope.fields.patches_field,
                    in_patches=scope.in_patches, num=hist["total"] if hist else 0, lo=lo, hi=hi,
                    backbone=cfg.get("backbone"), sparsity=(cfg.get("sparsity") or [None])[0],
                    custom_view=bool(ctx.has_custom_view))
        # one state patch rather than one message per key
        ctx.panel.set_state({"threshold": threshold, slider_name(scope.fields.key): threshold, "info": info,
                             "below": scope.count_below(threshold)})
        ctx.panel.set_data("histogram", panel_plots.histogram_trace(hist) if hist else [])
        self._refresh_maps(ctx, scope)
        self._refresh_edc(ctx, scope)

    def _refresh_count(self, ctx, scope):
        ctx.panel.state.below = scope.count_below(self._threshold(ctx))

    def _refresh_maps(self, ctx, scope):
        state = ctx.panel.state
        # the dataset itself skips the id lookup that restricting the maps to a view costs
        view = scope.view if ctx.has_custom_view else ctx.dataset
        maps = panel_plots.load_maps(ctx.dataset, scope.fields, view)
        if maps is None:
            ctx.panel.set_state(dict(has_maps=False, drift_note=None))
            ctx.panel.set_data("maps", dict(dense=[], pruned=[]))
            return
        dense, pruned = maps["dense"], maps["pruned"]
        ids_d = panel_plots.map_ids(dense, scope.patch_run)
        pts_d = dense.current_points
        pts_p, ids_p = panel_plots.points_for(pruned, ids_d, scope.patch_run)
        path = panel_queries.Scope(scope.fields, dense.view).quality_path
        q_d = dense.values(path) if ids_d else []
        q_by_id = dict(zip(ids_d, q_d))
        q_p = q_d if ids_p == ids_d else [q_by_id.get(i) for i in ids_p]
        cmin, cmax = self._color_range(ctx, scope, q_d)
        traces = dict(dense=[panel_plots.scatter_trace("dense", pts_d, ids_d, q_d, cmin, cmax, False)],
                      pruned=[panel_plots.scatter_trace("pruned", pts_p, ids_p, q_p, cmin, cmax, True)])
        note = None
        if state.show_drift:
            chosen = self._selected_ids(ctx, scope, ids_d)
            trace, drawn, asked = panel_plots.drift_trace(dict(zip(ids_d, pts_d)), dict(zip(ids_p, pts_p)),
                                                          chosen, q_by_id)
            traces["dense"].append(trace)
            traces["pruned"].append(trace)
            if asked:
                note = f"Drift of {drawn} selected {scope.unit}, dense → pruned"
                note += f" (the worst {drawn} of {asked})" if drawn < asked else ""
            else:
                note = f"Select {scope.unit} (lasso in a map, or in the grid) to draw their drift"
        ctx.panel.set_state(dict(has_maps=True, map_ranges=panel_plots.full_ranges(maps), drift_note=note))
        ctx.panel.set_data("maps", traces)

    def _color_range(self, ctx, scope, quality):
        """The run's whole quality range, so a face keeps its colour when the view narrows."""
        summary = runs.load_results(ctx.dataset, scope.fields.key).get("summary") or {}
        lo, hi = summary.get("quality_min"), summary.get("quality_max")
        if lo is None or hi is None:
            known = [v for v in quality if v is not None]
            lo, hi = min(known, default=0.0), max(known, default=1.0)
        return float(lo), float(hi)

    def _selected_ids(self, ctx, scope, view_ids):
        """The faces whose drift to draw: the App's selection, else the current (custom) view."""
        pf = scope.fields.patches_field
        if scope.patch_run:
            chosen = [s["label_id"] for s in ctx.selected_labels if s.get("field") == pf]
            if scope.in_patches:
                chosen += list(ctx.selected)  # a patch's id is its label's id
        else:
            chosen = list(ctx.selected)
        if chosen:
            return chosen
        return view_ids if ctx.has_custom_view else []

    def _refresh_edc(self, ctx, scope):
        keys = panel_edc.evaluation_runs(ctx.dataset, scope.fields.key)
        traces = panel_edc.load_curves(ctx.dataset, keys) if keys else []
        ctx.panel.state.num_edc = len(traces)
        ctx.panel.data.edc = traces

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
