"""The Face Quality panel, method by method, through ``ExecutionContext`` on a real scored dataset.

Each call is what the App sends: ``params`` with ``panel_id``, ``__method__`` and the panel
``state``; the current view as serialized stages. The assertions read what the App would receive
(``set_view`` stages, the rendered layout with each plot's traces, ``patch_panel_state``) and what the database
holds (tags), and compare them with brute-force numbers computed here.
"""
import json
import math

import numpy as np
import pytest
from bson import json_util

import fiftyone.operators as foo
from fiftyone import ViewField as F
from fiftyone.operators.executor import ExecutionContext, Executor
from panel_output import plots_of

P = "@prefiqs/prefiqs/"
PANEL = P + "prefiqs_panel"


class Call:
    """One panel event and what it produced."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.requests = [(r.operator_uri, r.params or {}) for r in ctx.executor._requests]
        self.state = ctx.panel.state._data
        # the traces each plot shows: they travel in the rendered layout
        outputs = [p["output"] for u, p in self.requests if u == "show_panel_output"]
        self.data = plots_of(outputs[-1]) if outputs else {}

    def latest(self, name):
        """The traces of plot ``name`` (``histogram``, ``maps``, ``edc``) as this call shows them."""
        return self.data.get(name)

    @property
    def maps(self):
        return self.latest("maps")

    def ops(self, uri):
        return [p for u, p in self.requests if u == uri]

    @property
    def output(self):
        return self.ops("show_panel_output")[-1]["output"]

    def props(self):
        return self.output["type"]["properties"]

    def set_view(self, dataset):
        """The view the App is told to show, rebuilt from the serialized stages."""
        import fiftyone.core.view as fov

        (params,) = self.ops("set_view")
        return fov.DatasetView._build(dataset, params["view"])


def call(ds, method, state=None, view=None, selected=None, selected_labels=None, **params):
    state = dict(state or {})
    request = dict(dataset_name=ds.name,
                   params=dict(panel_id="panel1", __method__=method, state=state, panel_state=state, **params))
    if view is not None:
        request["view"] = json.loads(json_util.dumps(view._serialize()))
    if selected:
        request["selected"] = selected
    if selected_labels:
        request["selected_labels"] = selected_labels
    ctx = ExecutionContext(request_params=request, executor=Executor())
    foo.get_operator(PANEL).execute(ctx)
    return Call(ctx)


@pytest.fixture(scope="module")
def scored(fo, photos):
    """4 real photos, 10 faces: a patch-level run with its UMAP maps and a sample-level run without."""
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in photos])
    foo.get_operator(P + "compute_prefiqs")(ds, patches_field="faces", detect=True)
    foo.get_operator(P + "compute_prefiqs_visualization")(ds, run_key="prefiqs", seed=3)
    foo.get_operator(P + "compute_prefiqs")(ds, run_key="whole", detect=True)
    yield ds
    ds.delete()


def _faces(ds):
    """(label id, quality) of every scored face, from the database."""
    ids, q = ds.values(["faces.detections.id", "faces.detections.prefiqs_quality"], unwind=True)
    return {i: v for i, v in zip(ids, q) if v is not None}


def _moved(ds, state, t):
    """The state after the user moved the threshold slider to ``t``."""
    return dict(call(ds, "on_change_threshold", state=state, value=t).state)


def _loaded(ds, run_key="prefiqs", view=None, **state):
    first = call(ds, "on_load", state=dict(run_key=run_key, **state), view=view)
    return first, dict(first.state)


# ------------------------------------------------------------------------------------------------


def test_registered_with_lifecycle_hooks(scored):
    panel = foo.get_operator(PANEL)
    assert panel.config.label == "Face Quality" and panel.config.unlisted
    ctx = ExecutionContext(request_params=dict(dataset_name=scored.name, params={}), executor=Executor())
    panel.execute(ctx)  # no __method__: the App's startup registration
    (reg,) = [r.params for r in ctx.executor._requests if r.operator_uri == "register_panel"]
    for hook in ("on_load", "on_change_view", "on_change_selected", "on_change_selected_labels"):
        assert reg[hook] == f"{PANEL}#{hook}"


def test_no_run_offers_the_compute_form(make_dataset, photos):
    ds = make_dataset(photos[:1])
    first = call(ds, "on_load")
    assert first.state["runs"] == [] and first.state["run_key"] is None
    assert "compute" in first.props() and "histogram" not in first.props()
    assert first.props()["compute"]["view"]["operator"] == f"{PANEL}#open_compute"
    clicked = call(ds, "open_compute", state=first.state)
    (prompt,) = clicked.ops("prompt_user_for_operation")
    assert prompt["operator_uri"] == P + "compute_prefiqs"


def test_on_load_histogram_count_and_maps(scored):
    ds = scored
    faces = _faces(ds)
    first, state = _loaded(ds, rank_by="quality")
    assert state["runs"] == ["prefiqs", "whole"]
    info = state["info"]
    assert info["patch_run"] and info["num"] == len(faces) == 10 and not info["custom_view"]
    assert info["lo"] == pytest.approx(min(faces.values())) and info["hi"] == pytest.approx(max(faces.values()))

    bars, *curve = first.data["histogram"]  # then the expected-FNMR curve of the default's table (issue 12)
    assert sum(bars["y"]) == 10 and len(bars["y"]) == 20
    for bar_id, n in zip(bars["ids"], bars["y"]):
        lo, hi, last = bar_id.split(",")
        top = (lambda v: v <= float(hi)) if last == "1" else (lambda v: v < float(hi))
        assert n == sum(float(lo) <= v and top(v) for v in faces.values())

    t = state["threshold"]
    summary = ds.load_run_results("prefiqs").summary
    assert t == pytest.approx(summary["quality_percentiles"]["5"], abs=1e-4)
    assert state["below"] == sum(v < t for v in faces.values())
    assert state["below_at"] == t and "threshold" in first.props()  # the slider shows the same value

    maps = first.maps
    assert state["has_maps"] and len(maps["dense"]) == len(maps["pruned"]) == 1
    for which in ("dense", "pruned"):
        trace = maps[which][0]
        res = ds.load_brain_results(f"prefiqs_{which}_umap")
        assert sorted(trace["ids"]) == sorted(faces)
        pos = {str(i): p for i, p in zip(res.label_ids, res.points)}
        for i, x, y, q in zip(trace["ids"], trace["x"], trace["y"], trace["marker"]["color"]):
            assert (x, y) == pytest.approx(tuple(pos[i]), abs=1e-3) and q == pytest.approx(faces[i], abs=1e-4)
        colors = trace["marker"]["color"]  # worst drawn last, on top; the worst also drawn largest
        assert colors == sorted(colors, reverse=True)
        assert trace["marker"]["size"] == sorted(trace["marker"]["size"])
    ranges = state["map_ranges"]  # both maps share the axes, which hold every point
    pts = np.concatenate([ds.load_brain_results(k).points for k in ("prefiqs_dense_umap", "prefiqs_pruned_umap")])
    assert ranges["x"][0] < pts[:, 0].min() and ranges["x"][1] > pts[:, 0].max()
    props = first.props()
    maps_name = "maps"
    assert {"histogram", "threshold", "threshold_typed", "below_count", "actions", maps_name,
            "map_toggles"} <= set(props)
    assert props[maps_name]["view"]["orientation"] == "horizontal"
    # the page-side linked hover (js/linked_hover.js) sits beside the maps
    assert props["linked_hover"]["view"]["component"] == "PrefiqsLinkedHover"
    assert "no_edc" in props  # no evaluation run: the panel says so and draws nothing


def test_histogram_click_shows_that_range(scored):
    ds = scored
    first, state = _loaded(ds, rank_by="quality")
    bars = first.data["histogram"][0]
    faces = _faces(ds)
    for k in (int(np.argmax(bars["y"])), len(bars["y"]) - 1):  # the fullest bar, and the last (closed) one
        clicked = call(ds, "on_histogram_click", state=state, id=bars["ids"][k], x=bars["x"][k])
        view = clicked.set_view(ds)
        shown = view.values("faces.detections.prefiqs_quality", unwind=True)
        assert len(shown) == bars["y"][k] > 0
        lo, hi, _ = bars["ids"][k].split(",")
        assert all(float(lo) <= v <= float(hi) for v in shown)
        assert len(faces) > len(shown)


def test_threshold_change_updates_live_count(scored, plugin):
    import importlib

    ds = scored
    computed = importlib.import_module(f"{plugin.__name__}.operators.panel").COMPUTED
    _, state = _loaded(ds, rank_by="quality")
    q = sorted(_faces(ds).values())
    t = (q[3] + q[4]) / 2
    changed = call(ds, "on_change_threshold", state=state, value=t)
    assert changed.state["threshold"] == t and changed.state["below"] == 4
    # the App is sent the widget's value and the text that shows the count; what the panel computed
    # stays on the server (each state change in the App reloads its dataset page)
    (sent,) = changed.ops("patch_panel_state")
    assert sent["state"]["threshold"] == t and not set(sent["state"]) & set(computed)
    assert "**4 faces** below" in str(changed.props()["below_count"])
    layout = changed.props()["histogram"]["view"]["layout"]
    assert layout["shapes"][0]["x0"] == t  # the threshold is drawn on the histogram


def test_show_worst_first_patch_and_sample_runs(scored):
    ds = scored
    _, state = _loaded(ds, rank_by="quality")
    view = call(ds, "show_worst_first", state=state).set_view(ds)
    assert view._is_patches and len(view) == 10
    q = view.values("faces.prefiqs_quality")
    assert q == sorted(q) and q[0] == min(_faces(ds).values())
    assert view.first().id == min(_faces(ds).items(), key=lambda kv: kv[1])[0]  # a patch's id is its face's

    _, state = _loaded(ds, run_key="whole", rank_by="quality")
    view = call(ds, "show_worst_first", state=state).set_view(ds)
    q = view.values("whole_quality")
    assert not view._is_patches and None not in q and q == sorted(q) and len(q) == 4


def test_show_below_threshold(scored):
    ds = scored
    _, state = _loaded(ds, rank_by="quality")
    q = sorted(_faces(ds).values())
    state = _moved(ds, state, (q[2] + q[3]) / 2)
    view = call(ds, "show_below_threshold", state=state).set_view(ds)
    assert view._is_patches and view.values("faces.prefiqs_quality") == q[:3]


def test_tag_below_threshold_writes_label_tags(scored):
    ds = scored
    _, state = _loaded(ds, rank_by="quality")
    faces = _faces(ds)
    q = sorted(faces.values())
    t = (q[1] + q[2]) / 2
    state = dict(_moved(ds, state, t), tag="panel_low")
    tagged = call(ds, "tag_below_threshold", state=state)
    assert ds.count_label_tags() == {"panel_low": 2}
    worst = {i for i, v in faces.items() if v < t}
    assert set(ds.select_labels(tags="panel_low").values("faces.detections.id", unwind=True)) == worst
    assert tagged.ops("reload_dataset") and "Tagged 2 face labels" in tagged.ops("notify")[0]["message"]
    assert tagged.state["last_tagging"] == dict(num_tagged=2, tag="panel_low", label_tags=True)
    ds.untag_labels("panel_low")


def _rings(result):
    """The anchor of each map's "pinned" ring shape in the rendered layout, dense then pruned."""
    (maps,) = [v for k, v in result.props().items() if k.startswith("maps")]
    plots = maps["type"]["properties"]
    return [[s["xanchor"], s["yanchor"]] for which in ("dense", "pruned")
            for s in plots[which]["view"]["layout"].get("shapes", []) if s.get("name") == "pinned"]


def test_map_lasso_and_click_select_faces_or_samples(scored):
    ds = scored
    _, state = _loaded(ds)
    ids = list(_faces(ds))[:3]
    lasso = call(ds, "on_map_select", state=state, data=[dict(id=i, x=0, y=0, trace="dense") for i in ids])
    view = lasso.set_view(ds)
    assert sorted(view.values("faces.detections.id", unwind=True)) == sorted(ids)
    # a click pins the face (the view stays); "Show in grid" inside the worst-first patches grid
    # shows that face alone and keeps the patches grid
    worst = call(ds, "show_worst_first", state=state).set_view(ds)
    clicked = call(ds, "on_map_click", state=state, view=worst, id=ids[0])
    assert clicked.ops("set_view") == [] and clicked.state["pinned"]["id"] == ids[0]
    assert _rings(clicked) == [clicked.state["pinned"]["xy"]["dense"], clicked.state["pinned"]["xy"]["pruned"]]
    res = ds.load_brain_results("prefiqs_dense_umap")
    at = list(res.label_ids).index(ids[0])
    assert clicked.state["pinned"]["xy"]["dense"] == pytest.approx(list(res.points[at]), abs=1e-4)
    assert clicked.state["pinned"]["image"].startswith("data:image/jpeg;base64,")
    view = call(ds, "show_pinned", state=dict(clicked.state), view=worst).set_view(ds)
    assert view._is_patches and view.values("id") == [ids[0]]
    # a second click on the same face unpins it
    again = call(ds, "on_map_click", state=dict(clicked.state), view=worst, id=ids[0])
    assert again.state["pinned"] is None and _rings(again) == []

    _, state = _loaded(ds, run_key="whole")
    sample_ids = ds.values("id")[:2]
    view = call(ds, "on_map_select", state=state, data=[dict(id=i) for i in sample_ids]).set_view(ds)
    assert sorted(view.values("id")) == sorted(sample_ids)


def test_drift_toggle_draws_segments_of_the_selection(scored):
    ds = scored
    _, state = _loaded(ds)
    ids = list(_faces(ds))[:3]
    selection = ds.select_labels(ids=ids, fields="faces")  # what a lasso leaves in the App
    toggled = call(ds, "on_toggle_drift", state=state, view=selection)
    assert toggled.state["show_drift"] and "Drift of 3 faces in this view" in toggled.state["drift_note"]
    dense, pruned = toggled.maps["dense"], toggled.maps["pruned"]
    assert len(dense) == len(pruned) == 2 and sorted(dense[0]["ids"]) == sorted(ids)
    seg = dense[1]
    assert seg["mode"] == "lines" and len(seg["x"]) == 9 and seg["x"][2::3] == [None] * 3
    res = {w: ds.load_brain_results(f"prefiqs_{w}_umap") for w in ("dense", "pruned")}
    pos = {w: {str(i): p for i, p in zip(r.label_ids, r.points)} for w, r in res.items()}
    starts = sorted(zip(seg["x"][0::3], seg["y"][0::3]))
    ends = sorted(zip(seg["x"][1::3], seg["y"][1::3]))
    assert np.allclose(starts, sorted(tuple(pos["dense"][i]) for i in ids), atol=1e-3)
    assert np.allclose(ends, sorted(tuple(pos["pruned"][i]) for i in ids), atol=1e-3)

    # on the whole dataset nothing is selected until the grid selection changes
    state = dict(toggled.state)
    idle = call(ds, "on_load", state=state)
    assert len(idle.maps["dense"]) == 2 and idle.maps["dense"][1]["x"] == []
    picked = call(ds, "on_change_selected_labels", state=state,
                  selected_labels=[dict(label_id=ids[0], sample_id="x", field="faces")])
    assert len(picked.maps["dense"][1]["x"]) == 3
    hidden = call(ds, "on_toggle_drift", state=dict(picked.state))
    assert not hidden.state["show_drift"] and len(hidden.maps["dense"]) == 1  # no segment left


def test_follows_the_current_view(scored):
    ds = scored
    _, state = _loaded(ds)
    view = ds.limit(2)
    moved = call(ds, "on_change_view", state=state, view=view)
    n = view.count("faces.detections.prefiqs_quality")
    assert 0 < n < 10
    assert moved.state["info"]["num"] == n and moved.state["info"]["custom_view"]
    assert sum(moved.data["histogram"][0]["y"]) == n
    assert len(moved.maps["dense"][0]["ids"]) == n
    assert moved.state["threshold"] == state["threshold"]  # the user's threshold survives a view change

    # inside a patches view (after "Show worst first") the quality path changes; counts must not
    worst = call(ds, "show_worst_first", state=state).set_view(ds)
    inside = call(ds, "on_change_view", state=state, view=worst)
    assert inside.state["info"]["in_patches"] and inside.state["info"]["num"] == 10
    assert inside.state["below"] == state["below"]


def test_sample_run_without_maps_offers_umap(scored):
    ds = scored
    first, state = _loaded(ds, run_key="whole")
    assert not state["info"]["patch_run"] and state["info"]["num"] == 4 and not state["has_maps"]
    assert "compute_umap" in first.props() and not any(k.startswith("maps") for k in first.props())
    clicked = call(ds, "open_umap", state=state)
    (prompt,) = clicked.ops("prompt_user_for_operation")
    assert prompt["operator_uri"] == P + "compute_prefiqs_visualization"
    assert prompt["params"] == {"run_key": "whole"}


def test_run_picker_switches_run_and_resets_threshold(scored):
    ds = scored
    _, state = _loaded(ds)
    state = dict(state, threshold=0.123)
    switched = call(ds, "on_change_run", state=state, value="whole")
    s = switched.state
    assert s["run_key"] == "whole" and s["threshold"] != 0.123 and s["info"]["unit"] == "samples"
    assert s["below_at"] == s["threshold"] and s["shown_run"] == "whole"
    again = call(ds, "on_change_run", state=dict(s, threshold=0.456), value="whole")  # the App's echo
    assert not [o for o in again.ops("patch_panel_state") if "threshold" in o["state"]]  # changes nothing


def _combined(ds):
    """(label id, combined value) of every face that has one, from the database."""
    ids, c = ds.values(["faces.detections.id", "faces.detections.prefiqs_combined"], unwind=True)
    return {i: v for i, v in zip(ids, c) if v is not None}


def test_rank_by_combined_moves_histogram_threshold_count_views_and_tagging(scored):
    ds = scored
    comb = _combined(ds)
    assert len(comb) == 10  # every face of the built-in detector has one
    first, state = _loaded(ds, rank_by="quality")
    assert state["info"]["has_combined"] and state["info"]["rank_by"] == "quality" and "rank_by" in first.props()

    ranked = call(ds, "on_change_rank_by", state=state, value="combined")
    s = dict(ranked.state)
    assert s["info"]["rank_by"] == "combined" and (s["info"]["run_lo"], s["info"]["run_hi"]) == (0.0, 100.0)
    assert s["info"]["lo"] == pytest.approx(min(comb.values())) and s["info"]["hi"] == pytest.approx(max(comb.values()))
    # starts from the run's 5th percentile of the combined value, counted on that scale
    assert s["threshold"] == pytest.approx(np.percentile(list(comb.values()), 5), abs=1e-4)
    assert s["below"] == sum(v < s["threshold"] for v in comb.values())
    bars, *curve = ranked.data["histogram"]  # the bars, then the combined bands' expected-FNMR curve
    assert sum(bars["y"]) == 10 and "combined" in bars["hovertemplate"]
    assert len(curve) == 3 and "combined %{x:.2f}" in curve[-1]["hovertemplate"]
    props = ranked.props()
    slider, typed = props["threshold"], props["threshold_typed"]["type"]
    assert (slider["type"]["min"], slider["type"]["max"]) == (0.0, 100.0) and typed["max"] == 100.0
    assert "'label': 'Combined'" in str(slider) and "combined_note" in props
    # the threshold as a combined value or an expected FNMR, never as a reference percentile
    assert s["calib"]["ok"] and s["calib"]["by"] == "combined" and s["calib"]["modes"] == ["quality", "fnmr"]
    assert s["calib"]["ticks"] == [] and "percentile" not in str(props["threshold_mode"]["type"])
    layout = props["histogram"]["view"]["layout"]
    assert layout["xaxis2"]["visible"] is False and "expected FNMR" in layout["yaxis2"]["title"]["text"]
    assert "below combined" in str(props["below_count"]) and "expected FNMR ≥" in str(props["below_count"])

    c = sorted(comb.values())
    t = (c[2] + c[3]) / 2
    s = _moved(ds, s, t)
    assert s["below"] == 3
    below = call(ds, "show_below_threshold", state=s).set_view(ds)
    assert below._is_patches and below.values("faces.prefiqs_combined") == c[:3]
    worst = call(ds, "show_worst_first", state=s).set_view(ds)
    assert worst.values("faces.prefiqs_combined") == c
    tagged = call(ds, "tag_below_threshold", state=dict(s, tag="panel_comb"))
    assert set(ds.select_labels(tags="panel_comb").values("faces.detections.id", unwind=True)) == {
        i for i, v in comb.items() if v < t}
    assert "(combined <" in tagged.ops("notify")[0]["message"]
    ds.untag_labels("panel_comb")

    echo = call(ds, "on_change_rank_by", state=s, value="combined")  # the App's echo changes nothing
    assert not echo.ops("patch_panel_state") and not echo.ops("show_panel_output")
    back = dict(call(ds, "on_change_rank_by", state=s, value="quality").state)
    assert back["info"]["rank_by"] == "quality" and back["calib"]["ok"] and back["calib"]["by"] == "quality"
    assert back["threshold"] == pytest.approx(ds.load_run_results("prefiqs").summary["quality_percentiles"]["5"],
                                              abs=1e-4)


def test_rank_by_combined_takes_the_threshold_as_expected_fnmr_and_tags_as_the_sdk(scored, api):
    ds = scored
    _, state = _loaded(ds)
    s = dict(call(ds, "on_change_rank_by", state=state, value="combined").state)
    s = dict(call(ds, "on_change_threshold_mode", state=dict(s, threshold_mode="fnmr"), value="fnmr").state)
    assert s["threshold_mode"] == "fnmr" and s["below_cal"]["mode"] == "fnmr" and s["below_cal"]["by"] == "combined"
    fnmr = ds.values("faces.detections.prefiqs_combined_expected_fnmr", unwind=True)
    levels = sorted(set(fnmr))
    assert len(levels) >= 2, "the faces fall in one band of combined: the test cannot tell bands apart"
    x = 100 * (levels[0] + levels[1]) / 2  # percent, between the two best bands' rates
    typed = call(ds, "on_type_threshold_cal", state=s, value=x)
    t = dict(typed.state)
    want = sum(v > x / 100 for v in fnmr)
    assert t["below"] == want and 0 < want < len(fnmr) and t["calib_error"] is None
    from prefiqs_core.calibration import shipped
    from prefiqs_core.defaults import DEFAULT_BACKBONE

    assert t["below_at"] == shipped(DEFAULT_BACKBONE).combined.combined_for_fnmr(x / 100)
    assert f"with expected FNMR > {x:g} % at FMR 1e-3 in the dataset (combined <" in str(typed.props()["below_count"])
    tagged = call(ds, "tag_below_threshold", state=dict(t, tag="comb_fnmr_panel"))
    assert "(combined <" in tagged.ops("notify")[0]["message"]
    info = api.tagging.tag_low_quality(ds, max_expected_fnmr=x / 100, by="combined", tag="comb_fnmr_sdk",
                                       save_view=False)
    panel_ids = sorted(ds.select_labels(tags="comb_fnmr_panel").values("faces.detections.id", unwind=True))
    assert info["num_tagged"] == want and panel_ids == sorted(
        ds.select_labels(tags="comb_fnmr_sdk").values("faces.detections.id", unwind=True))
    ds.untag_labels("comb_fnmr_panel")
    ds.untag_labels("comb_fnmr_sdk")
    # the percentile mode is the quality's: refused on this scale, and nothing changes
    same = call(ds, "on_change_threshold_mode", state=dict(t, threshold_mode="percentile"), value="percentile")
    assert not [o for o in same.ops("patch_panel_state") if "below_at" in o["state"]]
    # an FNMR no band of combined reaches: said, and nothing changes
    refused = call(ds, "on_type_threshold_cal", state=t, value=100 * levels[0] / 2)
    assert refused.state["below_at"] == t["below_at"] and "no combined value band" in refused.state["calib_error"]
    # the slider again: the raw combined value, the dropdown back on it
    moved = dict(call(ds, "on_change_threshold", state=t, value=50.0).state)
    assert moved["threshold_mode"] == "quality" and moved["below_cal"]["mode"] == "quality"
    assert moved["below"] == sum(v < 50.0 for v in _combined(ds).values())
    # back to quality: its own modes, the percentile among them
    back = dict(call(ds, "on_change_rank_by", state=moved, value="quality").state)
    assert back["calib"]["modes"] == ["quality", "percentile", "fnmr"] and back["below_cal"]["by"] == "quality"


def test_a_dlib_run_says_its_combined_value_averages_distinctiveness_too(scored):
    ds = scored
    foo.get_operator(P + "compute_prefiqs")(ds, run_key="dl", patches_field="faces", backbone="dlib_resnet29",
                                            store_embeddings=False)
    try:
        first, state = _loaded(ds, run_key="dl")
        assert state["info"]["combined_parts"] == "PreFIQs, the detector's score and distinctiveness"
        assert "combined: PreFIQs, the detector's score and distinctiveness (0-100)" in str(first.props()["rank_by"])
        ranked = first  # a run that wrote combined opens ranked by it
        assert state["info"]["rank_by"] == "combined"
        note = str(ranked.props()["combined_note"])
        assert "distinctiveness's reference percentiles" in note and "dl_distinctiveness" in note
        title = ranked.props()["histogram"]["view"]["layout"]["title"]["text"]
        assert title.startswith("Combined: PreFIQs, the detector's score and distinctiveness, 0-100")
        # the default (SFace) run's combined value has two parts, and says so
        sf_first, sf = _loaded(ds)
        assert sf["info"]["combined_parts"] == "PreFIQs and the detector's score"
        note = str(sf_first.props()["combined_note"])
        assert "distinctiveness" not in note and "the detector score's reference percentiles" in note
    finally:
        foo.get_operator(P + "delete_prefiqs_run")(ds, run_key="dl")


def test_rank_by_combined_on_a_sample_run_and_a_run_without_combined_values(scored, fo, photos):
    ds = scored
    first, state = _loaded(ds, run_key="whole", rank_by="combined")  # sample-level, detect mode: it has them
    comb = [v for v in ds.values("whole_combined") if v is not None]
    assert state["info"]["rank_by"] == "combined" and len(comb) == state["info"]["num"] == 4
    assert state["below"] == sum(v < state["threshold"] for v in comb)

    chips = fo.Dataset()  # aligned chips have no detector score, so no combined value
    try:
        chips.add_samples([fo.Sample(filepath=p) for p in photos[:2]])
        foo.get_operator(P + "compute_prefiqs")(chips, run_key="q", aligned=True)
        first, state = _loaded(chips, run_key="q", rank_by="combined")
        assert state["info"]["rank_by"] == "quality" and not state["info"]["has_combined"]
        assert "rank_by" not in first.props() and "combined_note" not in first.props()
        assert state["below"] == sum(v < state["threshold"] for v in chips.values("q_quality"))
    finally:
        chips.delete()


def test_a_run_with_combined_opens_ranked_by_it_and_a_pick_of_the_quality_holds(scored, fo, photos):
    ds = scored
    comb = _combined(ds)
    first, state = _loaded(ds)  # no ranking in the state: the run's default
    info = state["info"]
    assert info["rank_by"] == "combined" and "rank_by" not in state
    # the dropdown shows what is ranked through its default: a value the server writes for a dropdown
    # drawn in the same reply does not show in the App
    assert first.props()["rank_by"]["default"] == "combined"
    assert (info["lo"], info["hi"]) == (pytest.approx(min(comb.values())), pytest.approx(max(comb.values())))
    # it starts at the 5th percentile, interpolated as the quality's is, so that a few faces (10 here)
    # do not start with the lowest value and nothing below it
    assert state["threshold"] == pytest.approx(np.percentile(list(comb.values()), 5), abs=1e-4)
    assert state["below"] == sum(v < state["threshold"] for v in comb.values()) == 1
    assert sum(first.data["histogram"][0]["y"]) == len(comb) and "combined_note" in first.props()

    # the user picks the quality: a narrowed view keeps it
    picked = call(ds, "on_change_rank_by", state=state, value="quality")
    assert picked.state["info"]["rank_by"] == "quality" and picked.props()["rank_by"]["default"] == "quality"
    picked = dict(picked.state)
    narrowed = dict(call(ds, "on_change_view", state=picked, view=ds.limit(3)).state)
    assert narrowed["info"]["rank_by"] == narrowed["rank_by"] == "quality" and narrowed["info"]["custom_view"]
    # the pick holds for another run too, and the dropdown says so
    other = call(ds, "on_change_run", state=picked, value="whole")
    assert other.state["info"]["rank_by"] == "quality" and other.props()["rank_by"]["default"] == "quality"
    # picked back, combined starts from its own default threshold
    back = dict(call(ds, "on_change_rank_by", state=dict(other.state), value="combined").state)
    assert back["info"]["rank_by"] == "combined"
    whole = [v for v in ds.values("whole_combined") if v is not None]
    assert back["threshold"] == pytest.approx(np.percentile(whole, 5), abs=1e-4) and back["below"] == 1

    chips = fo.Dataset()  # a run without combined values opens ranked by its quality
    try:
        chips.add_samples([fo.Sample(filepath=p) for p in photos[:2]])
        foo.get_operator(P + "compute_prefiqs")(chips, run_key="q", aligned=True)
        first, state = _loaded(chips, run_key="q")
        assert state["info"]["rank_by"] == "quality" and "rank_by" not in first.props()
        assert "combined_percentiles" not in chips.load_run_results("q").summary
    finally:
        chips.delete()


def test_a_run_recorded_without_combined_percentiles_starts_from_the_databases(scored, api):
    """Runs recorded before the summary held the combined value's percentiles: the database's 5th
    percentile over the dataset."""
    ds = scored
    summary = dict(ds.load_run_results("whole").summary)
    try:
        api.runs.update_results(ds, "whole", summary={k: v for k, v in summary.items() if k != "combined_percentiles"})
        _, state = _loaded(ds, run_key="whole")
        assert state["info"]["rank_by"] == "combined"
        assert state["threshold"] == pytest.approx(ds.quantiles("whole_combined", [0.05])[0], abs=1e-4)
    finally:
        api.runs.update_results(ds, "whole", summary=summary)


def test_a_threshold_sent_for_the_run_shown_before_a_switch_is_not_applied(scored):
    """The typed box re-sends its value when the user leaves it (the click on the run picker); when
    that event reaches the server after the switch, it carries the App's state from before it."""
    ds = scored
    _, state = _loaded(ds)
    switched = dict(call(ds, "on_change_run", state=state, value="whole").state)
    t = switched["threshold"]
    assert switched["shown_run"] == "whole"
    late = call(ds, "on_type_threshold", state=dict(state, run_key="prefiqs"), value=0.99)
    assert late.state["below_at"] == t
    assert not any("threshold" in p.get("state", {}) for p in late.ops("patch_panel_state"))
    # the same value typed on the run now shown is applied, on that run's scale: the sample run opens
    # ranked by its combined value (0-100)
    assert switched["info"]["rank_by"] == "combined"
    typed = call(ds, "on_type_threshold", state=dict(switched), value=0.99)
    assert typed.state["below_at"] == 0.99
    assert typed.state["below"] == sum(v < 0.99 for v in ds.values("whole_combined") if v is not None)
    comb = sorted(v for v in ds.values("whole_combined") if v is not None)
    mid = round((comb[1] + comb[2]) / 2, 3)
    typed = call(ds, "on_type_threshold", state=dict(switched), value=mid)
    assert typed.state["below_at"] == mid and typed.state["below"] == 2


def test_edc_from_an_evaluation_run(scored):
    """The hook for ``evaluate_face_quality``: a run whose config says it is a PreFIQs evaluation.

    The curve stored here is a real ``prefiqs_core.evaluation.edc`` over deterministic synthetic
    comparisons (this dataset has no identity labels); the test checks that the panel finds it
    and draws exactly what is stored, not the curve's merit.
    """
    edc = pytest.importorskip("prefiqs_core.evaluation").edc

    ds = scored
    rng = np.random.default_rng(0)
    mated = np.r_[np.ones(40, bool), np.zeros(400, bool)]
    sims = np.where(mated, rng.normal(0.7, 0.1, mated.size), rng.normal(0.2, 0.1, mated.size))
    curve = edc(sims, mated, rng.uniform(size=mated.size), target_fmr=1e-2).as_dict()
    cfg = ds.init_run(method="prefiqs_evaluation", quality_run="prefiqs")
    ds.register_run("prefiqs_eval", cfg)
    ds.save_run_results("prefiqs_eval", ds.init_run_results("prefiqs_eval", curves=dict(prefiqs=curve)))
    try:
        first, state = _loaded(ds)
        (trace,) = first.latest("edc")
        assert state["num_edc"] == 1 and "edc" in first.props()
        assert trace["x"] == pytest.approx(curve["discard_fractions"])
        assert [v for v in trace["y"] if v is not None] == pytest.approx(
            [v for v in curve["fnmr"] if not math.isnan(v)])
        assert trace["name"].startswith("prefiqs_eval: prefiqs") and trace["line"]["shape"] == "hv"
        other, _ = _loaded(ds, run_key="whole")  # it evaluates run "prefiqs" only
        assert other.latest("edc") is None and "no_edc" in other.props()
    finally:
        ds.delete_run("prefiqs_eval")


def test_queries_use_database_aggregations(scored, monkeypatch):
    """No per-sample Python iteration: refreshing must not iterate over samples."""
    import fiftyone.core.collections as foc

    ds = scored
    _, state = _loaded(ds)

    def boom(*a, **k):
        raise AssertionError("the panel iterated over samples")

    monkeypatch.setattr(foc.SampleCollection, "iter_samples", boom)
    monkeypatch.setattr(type(ds), "iter_samples", boom)
    again = call(ds, "on_change_view", state=state, view=ds.match(F("prefiqs_min_quality") > 0))
    assert again.state["info"]["num"] == 10


def test_pin_reads_out_the_percentile_combined_value_and_detector_score(scored, plugin, api):
    """A pinned face says why it ranks where it does: its reference percentile, combined value and
    detector score (and, for a dlib run, the distinctiveness percentile), as the database holds them."""
    import importlib

    pin = importlib.import_module(f"{plugin.__name__}.operators.panel_pin")
    pin_text, pin_info = pin.pin_text, pin.pin_info
    ds = scored
    _, state = _loaded(ds)
    faces = _faces(ds)
    face = min(faces, key=faces.get)  # the worst face
    pinned = call(ds, "on_map_click", state=state, id=face).state["pinned"]
    sample = ds.match_labels(ids=[face], fields="faces").first()
    (det,) = [d for d in sample["faces"].detections if d.id == face]
    r = pinned["reading"]
    assert r == pytest.approx(dict(percentile=det["prefiqs_percentile"], combined=det["prefiqs_combined"],
                                   det_score=det.confidence), abs=1e-4)
    text = pin_text(pinned, "faces")
    assert f"reference percentile {det['prefiqs_percentile']:.1f}, combined {det['prefiqs_combined']:.1f}" in text
    assert f"detector score {det.confidence:.2f}" in text and "distinctiveness" not in text  # SFace: none
    # a sample-level run: its own fields, no detector score on the sample
    sid = next(i for i, q in zip(ds.values("id"), ds.values("whole_quality")) if q is not None)
    from types import SimpleNamespace

    info = pin_info(ds, SimpleNamespace(fields=api.runs.RunFields("whole", None), patch_run=False), sid)
    s = ds[sid]
    assert info["reading"] == pytest.approx(dict(percentile=s["whole_percentile"], combined=s["whole_combined"]),
                                            abs=1e-4)
    # the pin of a dlib run names the distinctiveness percentile too
    assert "distinctiveness percentile 12.3" in pin_text(dict(pinned, reading=dict(r, distinctiveness=12.34)), "faces")


def test_pin_of_a_face_shows_the_chosen_label_field_of_its_sample(scored):
    """A pinned face (patch-level run) shows its sample's chosen field, a Classification here, as hover
    does; and its thumbnail is the face's box, not the whole photo."""
    import base64
    import io

    import fiftyone as fo
    from PIL import Image

    ds = scored
    ds.set_values("who", [fo.Classification(label=f"person{i}") for i in range(len(ds))])
    try:
        _, state = _loaded(ds, hover_field="who")
        face = max(_faces(ds))
        pinned = call(ds, "on_map_click", state=state, id=face).state["pinned"]
        sample = ds.match_labels(ids=[face], fields="faces").first()
        assert pinned["field"] == "who" and pinned["label"] == sample["who"].label
        thumb = Image.open(io.BytesIO(base64.b64decode(pinned["image"].split(",", 1)[1])))
        (det,) = [d for d in sample["faces"].detections if d.id == face]
        w, h = det.bounding_box[2:]
        # the crop keeps the box's aspect ratio (with its margin), the photo's would differ
        photo = Image.open(sample.filepath)
        box_ratio = (w * photo.width) / (h * photo.height)
        assert abs(thumb.width / thumb.height - box_ratio) < 0.15 * box_ratio
        assert max(thumb.size) == 128
    finally:
        ds.delete_sample_field("who")


@pytest.fixture
def small_cap(plugin, monkeypatch):
    """A map cap of 6 faces (3 of them the worst), so the 10 real faces exceed it."""
    import importlib

    plots = importlib.import_module(f"{plugin.__name__}.operators.panel_plots")
    monkeypatch.setattr(plots, "MAX_MAP_POINTS", 6)
    monkeypatch.setattr(plots, "MAP_WORST", 3)
    return plots


def test_maps_above_the_cap_show_the_worst_the_pinned_and_a_sample(scored, small_cap):
    ds = scored
    faces = _faces(ds)
    worst3 = sorted(faces, key=faces.get)[:3]
    best = max(faces, key=faces.get)
    first, state = _loaded(ds)
    dense, pruned = first.maps["dense"][0], first.maps["pruned"][0]
    assert len(dense["ids"]) == 6 and sorted(dense["ids"]) == sorted(pruned["ids"])
    assert set(worst3) <= set(dense["ids"]) and set(dense["ids"]) <= set(faces)
    assert "6 of the 10 faces in view" in state["map_note"] and "map_note" in first.props()
    # the histogram and the count still cover every face
    assert sum(first.data["histogram"][0]["y"]) == 10 and state["info"]["num"] == 10
    # the same sample on every refresh (seeded), so the maps do not reshuffle under the user
    assert call(ds, "on_load", state=state).maps["dense"][0]["ids"] == dense["ids"]

    # a pinned face stays on the maps even when the sample would leave it out
    pinned = call(ds, "on_map_click", state=state, id=best).state
    again = call(ds, "on_load", state=dict(pinned))
    assert best in again.maps["dense"][0]["ids"] and again.state["pinned"]["id"] == best
    assert len(again.maps["dense"][0]["ids"]) == 6

    # inside the worst-first patches view (one row per face) the same rule holds
    worst = call(ds, "show_worst_first", state=state).set_view(ds)
    inside = call(ds, "on_change_view", state=state, view=worst)
    ids = inside.maps["dense"][0]["ids"]
    assert len(ids) == 6 and set(worst3) <= set(ids)

    # a view within the cap is mapped whole, with no note
    few = ds.select_labels(ids=list(faces)[:5], fields="faces")
    narrowed = call(ds, "on_change_view", state=state, view=few)
    assert sorted(narrowed.maps["dense"][0]["ids"]) == sorted(list(faces)[:5])
    assert not narrowed.state["map_note"] and "map_note" not in narrowed.props()


def test_sample_level_maps_above_the_cap(scored, plugin, monkeypatch):
    import importlib

    import fiftyone.brain as fob

    plots = importlib.import_module(f"{plugin.__name__}.operators.panel_plots")
    monkeypatch.setattr(plots, "MAX_MAP_POINTS", 2)
    monkeypatch.setattr(plots, "MAP_WORST", 1)
    ds = scored
    ids, q = ds.values(["id", "whole_quality"])
    rng = np.random.default_rng(0)
    keys = [f"whole_{w}_umap" for w in ("dense", "pruned")]
    for k in keys:
        fob.compute_visualization(ds, method="manual", brain_key=k,
                                  points={i: rng.normal(size=2) for i in ids})
    try:
        first, state = _loaded(ds, run_key="whole")
        shown = first.maps["dense"][0]["ids"]
        worst = min((v, i) for i, v in zip(ids, q) if v is not None)[1]
        assert len(shown) == 2 and worst in shown and sorted(first.maps["pruned"][0]["ids"]) == sorted(shown)
        assert "2 of the 4 samples in view" in state["map_note"]
    finally:
        for k in keys:
            ds.delete_brain_run(k)


def test_an_empty_view_ranked_by_combined_counts_nothing_and_keeps_the_runs_scale(scored):
    ds = scored
    first, state = _loaded(ds, view=ds.limit(0))
    info = state["info"]
    assert info["rank_by"] == "combined" and info["num"] == 0 and info["lo"] is None and info["custom_view"]
    assert (info["run_lo"], info["run_hi"]) == (0.0, 100.0) and state["below"] == 0
    assert "no combined" in str(first.props()["summary"])
    shown = call(ds, "show_below_threshold", state=state, view=ds.limit(0)).set_view(ds)
    assert len(shown) == 0
