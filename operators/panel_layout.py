"""The Face Quality panel's layout, built from panel state alone (it is rebuilt after every event).

Plot *data* is not here: each plot reads its traces from ``ctx.panel.data`` at the plot's path
(``histogram``, ``maps.dense``, ``maps.pruned``, ``edc``), written by the panel's handlers.
"""
from __future__ import annotations

import math

import fiftyone.operators.types as types

from . import panel_edc, panel_plots


# The App lays panels out as CSS grids whose implicit columns are sized by their content; a plotly
# chart measures itself before layout (700 px by default) and would push the panel wider than the
# screen. ``minmax(0, 1fr)`` columns let the charts shrink to the panel instead.
ONE_COLUMN = {"grid": {"sx": {"gridTemplateColumns": "minmax(0, 1fr)"}}}
TWO_COLUMNS = {"grid": {"sx": {"gridTemplateColumns": "repeat(2, minmax(0, 1fr))"}}}


def slider_name(run_key) -> str:
    return f"threshold_{run_key}"


def _fmt(v, nd=4):
    return "–" if v is None else f"{v:.{nd}f}"


def _slider_bounds(info, threshold):
    """Slider range: the qualities in view (3 decimals, outward), widened to include the threshold."""
    lo, hi = info.get("lo"), info.get("hi")
    if lo is None or hi is None:
        lo, hi = 0.0, 1.0
    lo, hi = min(lo, threshold), max(hi, threshold)
    lo, hi = math.floor(lo * 1000) / 1000, math.ceil(hi * 1000) / 1000
    if hi <= lo:
        hi = lo + 0.001
    return lo, hi


def build(p, ctx):
    """``p`` is the panel instance: its methods are the event handlers."""
    state = ctx.panel.state
    panel = types.Object()
    keys = state.runs or []
    if not keys:
        panel.md("### Face Quality\nNo PreFIQs run on this dataset yet. Score the faces first: "
                 "it writes a quality per face (or per image) that this panel turns into decisions.",
                 name="intro")
        panel.btn("compute", label="Compute PreFIQs", icon="play_arrow", variant="contained",
                  on_click=p.open_compute)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=2,
                                                          componentsProps=ONE_COLUMN))

    info = state.info or {}
    unit = info.get("unit", "faces")
    threshold = state.threshold if state.threshold is not None else 0.5

    picker = types.DropdownView()
    for k in keys:
        picker.add_choice(k, label=k)
    panel.enum("run_key", keys, default=state.run_key, label="PreFIQs run", view=picker,
               on_change=p.on_change_run)
    where = f"patch-level on `{info.get('patches_field')}`" if info.get("patch_run") else "sample-level"
    panel.md(f"**{state.run_key}**: {where}, backbone `{info.get('backbone')}`, sparsity {info.get('sparsity')}. "
             f"{info.get('num', 0)} {unit} scored in the {'current view' if info.get('custom_view') else 'dataset'}, "
             f"quality {_fmt(info.get('lo'))} – {_fmt(info.get('hi'))}.", name="summary")

    panel.plot("histogram", layout=panel_plots.histogram_layout(threshold, unit), on_click=p.on_histogram_click,
               config=dict(displayModeBar=False))

    lo, hi = _slider_bounds(info, threshold)
    # one slider per run: the App's slider keeps its own position, and only a new property
    # name (a remount) makes it show a threshold set from Python (e.g. the new run's default)
    panel.float(slider_name(state.run_key), min=lo, max=hi, default=threshold, label="Quality threshold",
                view=types.SliderView(label="Threshold", view_multiple_of=max((hi - lo) / 200, 1e-4),
                                      variant="withInputs", value_precision=4),
                on_change=p.on_change_threshold)
    panel.md(f"**{state.below or 0}** {unit} below {threshold:.4f} in the "
             f"{'current view' if info.get('custom_view') else 'dataset'}", name="below_count")

    panel.str("tag", default=state.tag or "low_quality", label="Tag for \"Tag below threshold\"",
              description="sample tag for sample-level runs, label tag on each face for patch-level runs")
    buttons = panel.h_stack("actions", gap=1, align_x="left")
    buttons.btn("worst_first", label="Show worst first", icon="arrow_upward", variant="contained",
                on_click=p.show_worst_first)
    buttons.btn("show_below", label="Show below threshold", icon="filter_alt", variant="outlined",
                on_click=p.show_below_threshold)
    buttons.btn("tag_below", label="Tag below threshold", icon="sell", variant="outlined",
                on_click=p.tag_below_threshold)
    buttons.btn("reset", label="Reset view", icon="restart_alt", variant="outlined", on_click=p.reset_view)
    tagging = state.last_tagging
    if tagging:
        kind = "face labels" if tagging.get("label_tags") else "samples"
        panel.md(f"Last tagging: {tagging.get('num_tagged')} {kind} tagged `{tagging.get('tag')}`", name="tagged")

    if state.has_maps:
        maps = panel.h_stack("maps", gap=1, componentsProps=TWO_COLUMNS)
        ranges = state.map_ranges
        sparsity = info.get("sparsity")
        pruned_title = f"Pruned ({sparsity:.0%} sparsity)" if isinstance(sparsity, (int, float)) else "Pruned"
        for which, title in (("dense", "Dense (full network)"), ("pruned", pruned_title)):
            maps.plot(which, layout=panel_plots.scatter_layout(title, ranges), on_selected=p.on_map_select,
                      on_click=p.on_map_click, config=dict(displaylogo=False))
        panel.bool("show_drift", default=bool(state.show_drift), label="Draw drift of the selected (dense → pruned)",
                   view=types.SwitchView(), on_change=p.on_toggle_drift)
        if state.drift_note:
            panel.md(state.drift_note, name="drift_note")
    else:
        panel.md(f"No UMAP maps for run **{state.run_key}** yet (`{state.run_key}_dense_umap`, "
                 f"`{state.run_key}_pruned_umap`).", name="no_maps")
        panel.btn("compute_umap", label="Compute UMAP maps", icon="scatter_plot", variant="outlined",
                  on_click=p.open_umap)

    if state.num_edc:
        panel.plot("edc", layout=panel_edc.edc_layout())
    else:
        panel.md("_No evaluation run for this run yet: an EDC curve appears here once an evaluation "
                 "(identity labels, `evaluate_face_quality`) has stored one._", name="no_edc")
    return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=1,
                                                      componentsProps=ONE_COLUMN))
