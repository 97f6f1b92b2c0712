"""The Face Quality panel's layout, built from panel state alone (it is rebuilt after every event).

Each plot carries its traces in its view, from ``ctx.prefiqs_plots`` (``histogram``, ``maps``
with ``dense`` and ``pruned``, ``edc``): the panel's handlers draw them, the panel keeps them on the
server between events.
"""
from __future__ import annotations

import math

import fiftyone.operators.types as types

from . import panel_edc, panel_pin, panel_plots
from .panel_plots import count_text
from . import panel_calibration, runs


# The App lays panels out as CSS grids whose implicit columns are sized by their content; a plotly
# chart measures itself before layout (700 px by default) and would push the panel wider than the
# screen. ``minmax(0, 1fr)`` columns let the charts shrink to the panel instead.
ONE_COLUMN = {"grid": {"sx": {"gridTemplateColumns": "minmax(0, 1fr)"}}}
TWO_COLUMNS = {"grid": {"sx": {"gridTemplateColumns": "repeat(2, minmax(0, 1fr))"}}}


def _fmt(v, nd=4):
    return "–" if v is None else f"{v:.{nd}f}"


def _slider_bounds(info, threshold):
    """Slider range: the run's whole quality range (not the view's, which would shrink and pin the
    threshold when the view narrows), 3 decimals outward, widened to include the threshold."""
    lo, hi = info.get("run_lo"), info.get("run_hi")
    if lo is None or hi is None:
        lo, hi = 0.0, 1.0
    lo, hi = min(lo, threshold), max(hi, threshold)
    lo, hi = math.floor(lo * 1000) / 1000, math.ceil(hi * 1000) / 1000
    if hi <= lo:
        hi = lo + 0.001
    return lo, hi


def _where(info) -> str:
    return "in this view" if info.get("custom_view") else "in the dataset"


def _quality_span(info) -> str:
    lo, hi = info.get("lo"), info.get("hi")
    value = info.get("rank_by") or "quality"
    if lo is None:
        return f"no {value}"
    return f"{value} {_fmt(lo)}" if abs(hi - lo) < 5e-5 else f"{value} {_fmt(lo)} – {_fmt(hi)}"


def _pinned(p, panel, pin, unit):
    """The pinned face: its thumbnail (a click opens the full image), what hover says, and buttons."""
    # two grid columns, the thumbnail's own width and the rest, both from the top; the row's height is
    # fixed: the App wraps the image in a box as tall as the whole panel (898 px at 1600x1000), which
    # pushed the buttons below it off screen
    height = f"{panel_pin.THUMB_PX + 8}px"
    row = panel.h_stack(f"pin_{pin['id']}", gap=2, align_x="left", align_y="top",
                        componentsProps={"grid": {"sx": {"gridTemplateColumns": "auto minmax(0, 1fr)",
                                                         "gridTemplateRows": height, "height": height,
                                                         "overflow": "hidden", "alignItems": "start"}}})
    if pin.get("image"):
        # the image is the schema's default, not a state value. A row name per face: the App keeps
        # the value it saw under a name, which would show the previous face's image
        row.str(f"pin_image_{pin['id']}", default=pin["image"],
                view=types.ImageView(height=panel_pin.THUMB_PX, alt=pin["file"], href=pin.get("url")))
    row.md(panel_pin.pin_text(pin, unit), name="pin_md")
    buttons = panel.h_stack("pin_buttons", gap=1, align_x="left")
    buttons.btn("show_pinned", label="Show in grid", icon="filter_center_focus", variant="outlined",
                on_click=p.show_pinned)
    buttons.btn("clear_pin", label="Clear pin", icon="close", variant="outlined", on_click=p.clear_pin)


def build(p, ctx):
    """``p`` is the panel instance: its methods are the event handlers."""
    state = ctx.panel.state
    plots = getattr(ctx, "prefiqs_plots", None) or {}
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
    # the threshold the count was computed with (the slider may be mid-way to a new one)
    threshold = state.below_at if state.below_at is not None else 0.5

    picker = types.DropdownView()
    for k in keys:
        picker.add_choice(k, label=k)
    # No widget gets a ``default``: each shows the panel state entry of its own name, which the
    # handlers write. The App re-sends a changed default as if the user had set it, and those
    # echoes made the panel answer itself for ever.
    panel.enum("run_key", keys, label="PreFIQs run", view=picker, on_change=p.on_change_run)
    where = f"patch-level on `{info.get('patches_field')}`" if info.get("patch_run") else "sample-level"
    panel.md(f"**{state.run_key}**: {where}, backbone `{info.get('backbone')}`, sparsity {info.get('sparsity')}. "
             f"{count_text(info.get('num', 0), unit)} scored {_where(info)}, {_quality_span(info)}.",
             name="summary")
    combined = info.get("rank_by") == "combined"
    if info.get("has_combined"):
        rank = types.DropdownView()
        rank.add_choice("quality", label="quality (PreFIQs)")
        rank.add_choice("combined", label=f"combined: {info.get('combined_parts')} (0-100)")
        # the one widget with a default, and a state entry that holds only the user's own pick: until
        # the user picks, the App shows the default, which is what the panel ranks by. A value written
        # from the server for a dropdown drawn in the same reply did not show in the App (it kept
        # the entry's previous value and sent it back, which turned the ranking back to the quality)
        panel.enum("rank_by", ["quality", "combined"], label="Rank faces by", view=rank, on_change=p.on_change_rank_by,
                   default="combined" if combined else "quality")
    if info.get("errors"):
        errors = panel.h_stack("errors", gap=1, align_x="left", align_y="center")
        errors.md(f"**{count_text(info['errors'], unit)}** could not be scored {_where(info)} "
                  f"(`{state.run_key}_error`)", name="errors_text")
        errors.btn("show_errors", label="Show them", icon="error_outline", variant="outlined", on_click=p.show_errors)

    hist_layout = panel_plots.histogram_layout(threshold, unit, info.get("lo"), info.get("hi"),
                                               "combined" if combined else "quality", info.get("combined_parts"))
    hist_layout = panel_calibration.histogram_layout(hist_layout, state.calib)  # percentile and FNMR axes
    panel.plot("histogram", layout=hist_layout, data=plots.get("histogram") or [],
               on_click=p.on_histogram_click, config=dict(displayModeBar=False))

    lo, hi = _slider_bounds(info, threshold)
    # value widgets stay at the top level: inside a stack their state would nest under the stack's name
    # the view's label is the one shown
    panel.float("threshold", min=lo, max=hi, label="Quality threshold",
                view=types.SliderView(label="Combined" if combined else "Threshold",  # a longer one is cut
                                      view_multiple_of=max((hi - lo) / 200, 1e-4),
                                      value_precision=4),
                on_change=p.on_change_threshold)
    panel.float("threshold_typed", label="Type a threshold", min=0.0, max=100.0 if combined else 1.0,
                description="the slider's value, or type one (Enter or leave the box)", on_change=p.on_type_threshold)
    if combined:
        distinct = info.get("combined_parts") == runs.COMBINED_PARTS[True]
        parts = ("the quality's, the detector score's and the distinctiveness's reference percentiles (how far "
                 f"the face's embedding is from the average face's: `{state.run_key}_distinctiveness`)" if distinct
                 else "the quality's and the detector score's reference percentiles")
        panel.md(f"_Ranked by the combined value: the mean of {parts} (0-100, higher is better). Its expected "
                 "FNMR comes from the calibration table's bands of the combined value; reference-percentile "
                 "thresholds convert the quality, so they are offered when ranking by quality._",
                 name="combined_note")
    panel_calibration.controls(p, panel, state)  # threshold as percentile / expected FNMR, or why not
    reading = panel_calibration.shown_reading(state, threshold)
    panel.md(panel_calibration.below_text(state.below or 0, info.get("num", 0), unit, _where(info), reading) if reading
             else f"**{count_text(state.below or 0, unit)}** below {'combined ' if combined else ''}{threshold:.4f} "
                  f"{_where(info)}", name="below_count")

    panel.str("tag", label="Tag for \"Tag below threshold\"",
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
        panel.md(f"Last tagging: {count_text(tagging.get('num_tagged') or 0, kind)} tagged `{tagging.get('tag')}`",
                 name="tagged")

    if state.has_maps:
        if state.map_note:
            panel.md(state.map_note, name="map_note")
        maps = panel.h_stack("maps", gap=1, componentsProps=TWO_COLUMNS)
        traces = plots.get("maps") or {}
        shared = not state.own_axes
        own = state.own_ranges or {}
        sparsity = info.get("sparsity")
        pruned_title = f"Pruned ({sparsity:.0%} sparsity)" if isinstance(sparsity, (int, float)) else "Pruned"
        for which, title in (("dense", "Dense (full network)"), ("pruned", pruned_title)):
            ranges = state.map_ranges if shared else own.get(which)
            ring = ((state.pinned or {}).get("xy") or {}).get(which)
            layout = panel_plots.scatter_layout(title, ranges, which)
            if ring:
                layout["shapes"] = [panel_pin.ring_shape(ring)]
            maps.plot(which, layout=layout, data=traces.get(which) or [], on_selected=p.on_map_select,
                      on_click=p.on_map_click, on_double_click=p.on_map_double_click,
                      config=dict(displaylogo=False))
        # hovering a face in one map rings it in the other: done in the page (js/linked_hover.js),
        # as the App reports no hover to Python
        panel.view("linked_hover", types.View(component="PrefiqsLinkedHover"))
        if state.pinned:
            _pinned(p, panel, state.pinned, unit)
        # buttons, not switches: a switch shows the App's copy of the state, which can lag behind
        toggles = panel.h_stack("map_toggles", gap=1, align_x="left")
        toggles.btn("toggle_drift", label="Hide drift" if state.show_drift else "Draw drift of the selection",
                    icon="timeline", variant="outlined", on_click=p.on_toggle_drift)
        toggles.btn("toggle_axes", label="Per-map axes" if shared else "Same axes for both maps",
                    icon="open_in_full" if shared else "close_fullscreen", variant="outlined",
                    on_click=p.on_toggle_axes)
        choices = state.hover_choices or []
        if choices:
            hover = types.DropdownView()
            for name in [""] + choices:
                hover.add_choice(name, label=name or "(file name and quality only)")
            panel.enum("hover_field", [""] + choices, label="Hover also shows", view=hover,
                       on_change=p.on_change_hover_field)
        if state.drift_note:
            panel.md(state.drift_note, name="drift_note")
    else:
        panel.md(f"No UMAP maps for run **{state.run_key}** yet (`{state.run_key}_dense_umap`, "
                 f"`{state.run_key}_pruned_umap`).", name="no_maps")
        panel.btn("compute_umap", label="Compute UMAP maps", icon="scatter_plot", variant="outlined",
                  on_click=p.open_umap)

    if state.num_edc:
        panel.plot("edc", layout=panel_edc.edc_layout(), data=plots.get("edc") or [])
    else:
        panel.md("_No evaluation run for this run yet: an EDC curve appears here once an evaluation "
                 "(identity labels, `evaluate_face_quality`) has stored one._", name="no_edc")
    return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=1,
                                                      componentsProps=ONE_COLUMN))
