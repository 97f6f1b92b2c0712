"""Calibrated readings in the Face Quality panel (issue 12), without a browser.

The conversions are checked against the shipped SFace table itself; the panel is driven through
``ExecutionContext`` (as the App calls it) on a run whose qualities are spread over that table's
reference range, written through the plugin's run records with the table in its config (as
``compute_prefiqs`` stores it), so no model runs here. What the panel counts and tags by a
percentile or an expected FNMR is compared with ``tag_low_quality``'s own ``percentile=`` /
``max_expected_fnmr=`` on the same database.
"""
import math

import numpy as np
import pytest

from test_fo_panel import call

N = 300
ABSENT = "shipped calibration table does not apply: pruning 'global_l1@0.5' (the table is for 'x')"


@pytest.fixture(scope="module")
def table():
    from prefiqs_core.calibration import shipped

    return shipped("sface")


@pytest.fixture(scope="module")
def pc(plugin):
    """The panel's calibration module as FiftyOne loaded it."""
    import importlib

    return importlib.import_module(plugin.__name__ + ".operators.panel_calibration")


def write_calibrated_run(ds, api, table, key="cal", seed=5, combined=False):
    """A sample-level run whose qualities cover ``table``'s reference range (a little beyond both
    ends), with ``K_percentile`` / ``K_expected_fnmr`` from the table and the table in its config;
    with ``combined``, also ``K_combined`` (seeded values in 0-100) and its expected FNMR from the
    table's bands of combined (``K_combined_expected_fnmr``), listed in its fields."""
    import fiftyone as fo

    rng = np.random.default_rng(seed)
    ds.add_sample_field(f"{key}_error", fo.StringField)  # every face scored: the field exists, empty
    lo, hi = table.quantiles[0], table.quantiles[100]
    q = rng.uniform(lo - 0.2 * (hi - lo), hi + 0.05 * (hi - lo), len(ds)).tolist()
    ds.set_values(f"{key}_quality", q)
    ds.set_values(f"{key}_drift", [2 * (1 - v) for v in q])
    ds.set_values(f"{key}_percentile", table.percentile(q).tolist())
    ds.set_values(f"{key}_expected_fnmr", table.expected_fnmr(q).tolist())
    fields = {}
    if combined:
        comb = np.round(rng.uniform(0, 100, len(ds)), 2)
        ds.set_values(f"{key}_combined", comb.tolist())
        ds.set_values(f"{key}_combined_expected_fnmr", table.combined.expected_fnmr(comb).tolist())
        fields = dict(fields=[f"{key}_quality", f"{key}_combined", f"{key}_combined_expected_fnmr"])
    api.runs.record_run(ds, key, dict(backbone="sface", sparsity=[0.5], patches_field=None,
                                      calibration=table.to_dict(), calibration_file="shipped",
                                      calibration_absent=None, **fields))
    api.runs.update_results(ds, key, summary=api.runs.summary_stats(q, [2 * (1 - v) for v in q], 0))
    return q


@pytest.fixture(scope="module")
def known(fo, api, photos, table):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=photos[i % len(photos)]) for i in range(N)])
    q = write_calibrated_run(ds, api, table)
    ds.set_values("raw_quality", q)
    ds.add_sample_field("raw_error", fo.StringField)
    api.runs.record_run(ds, "raw", dict(backbone="sface", sparsity=[0.5], patches_field=None, calibration=None,
                                        calibration_absent=ABSENT))
    api.runs.update_results(ds, "raw", summary=api.runs.summary_stats(q, q, 0))
    yield ds
    ds.delete()


def _tagged(ds, tag):
    return sorted(ds.match_tags(tag).values("id"))


# ------------------------------------------------------------------------------------------------
# conversions and wording
# ------------------------------------------------------------------------------------------------


def test_conversions_follow_the_table(pc, table):
    for p in (0, 1, 5, 12.5, 50, 99, 100):
        q = pc.to_quality(table, "percentile", p)
        assert q == float(table.quality_at_percentile(p))
        assert pc.from_quality(table, "percentile", q) == pytest.approx(p, abs=0.01)
    assert pc.to_quality(table, "quality", 0.95) == 0.95
    best = table.bands[-1].fnmr
    for x in (100 * best, 5, 50):
        assert pc.to_quality(table, "fnmr", x) == max(table.quality_for_fnmr(x / 100), 0.0)
    # every band at most 100 %: nothing is worse, and the threshold stays a number (no -inf in JSON)
    assert pc.to_quality(table, "fnmr", 100) == 0.0
    with pytest.raises(ValueError, match="no quality band .* ≤"):
        pc.to_quality(table, "fnmr", 100 * best / 2)
    for mode, bad in (("percentile", 101), ("percentile", -1), ("fnmr", 120), ("quality", 1.5)):
        with pytest.raises(ValueError, match="lies in"):
            pc.to_quality(table, mode, bad)
    with pytest.raises(ValueError, match="no calibration table"):
        pc.to_quality(None, "percentile", 5)


def test_an_fnmr_read_from_a_quality_converts_back_to_its_band(pc, table):
    """The box shows a band's FNMR rounded up: typed back, it must select that band, not a better one."""
    for b in table.bands:
        mid = (b.lo + b.hi) / 2
        x = pc.from_quality(table, "fnmr", mid)
        assert x >= 100 * b.fnmr
        q = pc.to_quality(table, "fnmr", x)
        assert q <= mid and table.expected_fnmr(mid) <= x / 100


def test_reading_and_text(pc, table):
    q = float(table.quality_at_percentile(5))
    r = pc.reading(table, "cal", q, "percentile", 5)
    assert r["pct"] == pytest.approx(5) and r["fnmr"] == float(table.expected_fnmr(q - 1e-12))
    # faces below the threshold are at least as bad as the band just below it
    assert all(table.expected_fnmr(v) >= r["fnmr"] for v in np.linspace(q - 0.05, q - 1e-9, 50))
    text = pc.below_text(412, 13290, "faces", "in the dataset", r)
    assert text.startswith("**412 faces** (3.1 %) below the 5th reference percentile in the dataset")
    assert text.endswith(f"— expected FNMR ≥ {pc.rate_text(r['fnmr'])} at FMR 1e-3")
    assert pc.rate_text(0.1227) == "12 %" and pc.rate_text(0.0312) == "3.1 %" and pc.rate_text(0.0079) == "0.79 %"
    assert [pc.ordinal(p) for p in (1, 2, 3, 4, 11, 12, 13, 21, 22, 2.5, 30)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "2.5th", "30th"]
    assert pc.fmr_text(1e-3) == "1e-3" and pc.fmr_text(1e-4) == "1e-4"
    fn = pc.below_text(7, 100, "samples", "in this view", pc.reading(table, "cal", q, "fnmr", 5))
    assert fn.startswith("**7 samples** (7.0 %) with expected FNMR > 5 % at FMR 1e-3 in this view")
    raw = pc.below_text(1, 100, "samples", "in this view", pc.reading(table, "cal", q))
    assert raw.startswith(f"**1 sample** below {q:.4f} in this view (1.0 %): the 5th reference percentile")
    assert pc.reading(None, "cal", q) is None
    # beyond the reference faces: said so, not "the 0th percentile"
    low = pc.below_text(1, 10, "faces", "in the dataset", pc.reading(table, "cal", table.quantiles[0] - 0.01))
    assert "(10.0 %): below every reference face — expected FNMR ≥" in low and "0th" not in low
    assert pc.percentile_phrase(100) == "above every reference face"


def test_curve_and_axes(pc, table):
    lo, hi = table.quantiles[0] - 0.01, table.quantiles[100]
    upper, lower, curve = pc.curve_traces(table, lo, hi)
    assert curve["yaxis"] == "y2" and curve["line"]["shape"] == "hv" and lower["fill"] == "tonexty"
    assert curve["x"][0] < lo and curve["x"][-1] > hi
    # a step at every band edge inside the range, the band's value (percent) after it
    assert [b.lo for b in table.bands[1:]] == curve["x"][1:-1]
    assert curve["y"] == pytest.approx(100 * table.expected_fnmr(curve["x"]), abs=1e-3)
    assert all(a <= c <= b for a, c, b in zip(lower["y"], curve["y"], upper["y"]))
    assert np.all(np.diff(curve["y"]) <= 0)  # falls with quality
    calib = pc.calib_state(table, None)
    layout = pc.histogram_layout(dict(xaxis=dict(range=[lo, hi]), margin=dict(l=50)), calib)
    top = layout["xaxis2"]
    assert top["overlaying"] == "x" and top["range"] == [lo, hi] and len(top["tickvals"]) >= 3
    for q, p in zip(top["tickvals"], top["ticktext"]):
        assert table.percentile(q) == pytest.approx(int(p), abs=1e-6)
    assert layout["yaxis2"]["range"][1] >= 100 * max(b.fnmr_hi for b in table.bands)
    assert pc.histogram_layout({"a": 1}, pc.calib_state(None, "why")) == {"a": 1}


# ------------------------------------------------------------------------------------------------
# the panel
# ------------------------------------------------------------------------------------------------


def test_panel_shows_the_calibrated_histogram(known, table, pc):
    ds = known
    loaded = call(ds, "on_load", state=dict(run_key="cal"))
    s = loaded.state
    assert s["calib"]["ok"] and s["below_cal"]["mode"] == "quality"
    bars, upper, lower, curve = loaded.data["histogram"]
    assert sum(bars["y"]) == N and curve["name"] == "expected FNMR"
    layout = loaded.props()["histogram"]["view"]["layout"]
    assert layout["xaxis2"]["range"] == layout["xaxis"]["range"] and "FMR 1e-3" in layout["yaxis2"]["title"]["text"]
    assert "threshold_mode" in loaded.props() and "threshold_cal" not in loaded.props()
    t = s["below_at"]
    text = str(loaded.props()["below_count"])
    pct = float(table.percentile(t))
    assert f"** below {t:.4f} in the dataset ({100 * s['below'] / N:.1f} %): {pc.percentile_phrase(pct)} —" in text
    assert "expected FNMR ≥" in text


def test_threshold_by_percentile_counts_and_tags_as_the_sdk(known, api, table):
    ds = known
    s = dict(call(ds, "on_load", state=dict(run_key="cal")).state)
    moded = call(ds, "on_change_threshold_mode", state=dict(s, threshold_mode="percentile"), value="percentile")
    s = dict(moded.state)
    assert s["threshold_mode"] == "percentile" and s["below_cal"]["mode"] == "percentile"
    assert "threshold_cal" in moded.props()
    # the current threshold, read as a percentile and applied as one: the count hardly moves
    assert s["threshold_cal"] == pytest.approx(float(table.percentile(s["below_cal"]["quality"])), abs=0.01)

    typed = call(ds, "on_type_threshold_cal", state=s, value=30)
    s = dict(typed.state)
    cut = float(table.quality_at_percentile(30))
    assert s["below_at"] == cut and s["threshold"] == cut
    pct = ds.values("cal_percentile")
    want = sum(v < 30 for v in pct)
    assert s["below"] == want and 0 < want < N
    text = str(typed.props()["below_count"])
    assert f"**{want} samples** ({100 * want / N:.1f} %) below the 30th reference percentile in the dataset" in text
    assert f"(quality < {cut:.4f})" in text
    assert s["threshold_typed"] == round(cut, 5)  # the typed box: a reader's digits

    # the App's echoes of the new threshold (slider, typed box) and of the mode change nothing
    for method, value in (("on_change_threshold", cut), ("on_type_threshold", s["threshold_typed"]),
                          ("on_change_threshold_mode", "percentile"), ("on_type_threshold_cal", 30)):
        echo = call(ds, method, state=s, value=value)
        assert echo.state["below_cal"] == s["below_cal"], method

    panel = call(ds, "tag_below_threshold", state=dict(s, tag="by_panel"))
    assert panel.state["last_tagging"]["num_tagged"] == want
    info = api.tagging.tag_low_quality(ds, run_key="cal", percentile=30, tag="by_sdk", save_view=False)
    assert info["num_tagged"] == want and _tagged(ds, "by_panel") == _tagged(ds, "by_sdk")
    assert _tagged(ds, "by_sdk") == sorted(i for i, v in zip(ds.values("id"), pct) if v < 30)


def test_threshold_by_expected_fnmr(known, api, table):
    ds = known
    s = dict(call(ds, "on_load", state=dict(run_key="cal")).state)
    s = dict(call(ds, "on_change_threshold_mode", state=dict(s, threshold_mode="fnmr"), value="fnmr").state)
    typed = call(ds, "on_type_threshold_cal", state=s, value=5)
    s = dict(typed.state)
    fnmr = ds.values("cal_expected_fnmr")
    want = sum(v > 0.05 for v in fnmr)
    assert s["below"] == want and 0 < want < N
    assert s["below_at"] == table.quality_for_fnmr(0.05)
    assert "with expected FNMR > 5 % at FMR 1e-3 in the dataset" in str(typed.props()["below_count"])
    call(ds, "tag_below_threshold", state=dict(s, tag="fnmr_panel"))
    info = api.tagging.tag_low_quality(ds, run_key="cal", max_expected_fnmr=0.05, tag="fnmr_sdk", save_view=False)
    assert info["num_tagged"] == want and _tagged(ds, "fnmr_panel") == _tagged(ds, "fnmr_sdk")

    # an FNMR no band reaches: said, and nothing changes
    best = table.bands[-1].fnmr
    refused = call(ds, "on_type_threshold_cal", state=s, value=100 * best / 2)
    assert refused.state["below_at"] == s["below_at"] and "no quality band" in refused.state["calib_error"]
    assert "no quality band" in str(refused.props()["calibration_error"])

    # the slider again: raw quality, the dropdown back on it, tagging by the raw threshold
    t = float(table.quality_at_percentile(50))
    moved = call(ds, "on_change_threshold", state=s, value=t)
    m = dict(moved.state)
    assert m["below_cal"]["mode"] == "quality" and m["threshold_mode"] == "quality" and m["calib_error"] is None
    assert m["below"] == sum(v < t for v in ds.values("cal_quality"))
    call(ds, "tag_below_threshold", state=dict(m, tag="raw_panel"))
    assert len(_tagged(ds, "raw_panel")) == m["below"]


def test_percentile_mode_survives_a_view_change_not_a_run_switch(known):
    ds = known
    s = dict(call(ds, "on_load", state=dict(run_key="cal")).state)
    s = dict(call(ds, "on_change_threshold_mode", state=dict(s, threshold_mode="percentile"),
                  value="percentile").state)
    s = dict(call(ds, "on_type_threshold_cal", state=s, value=20).state)
    view = ds.limit(100)
    moved = call(ds, "on_change_view", state=s, view=view)
    m = dict(moved.state)
    assert m["below_cal"]["mode"] == "percentile" and m["below_cal"]["value"] == 20
    assert m["below"] == sum(v < 20 for v in view.values("cal_percentile"))
    assert "below the 20th reference percentile in this view" in str(moved.props()["below_count"])
    switched = dict(call(ds, "on_change_run", state=s, value="raw").state)
    assert switched["calib"] == dict(ok=False, why=ABSENT) and switched["below_cal"] is None


def test_without_a_table_the_panel_says_why(known):
    ds = known
    loaded = call(ds, "on_load", state=dict(run_key="raw"))
    props = loaded.props()
    assert "threshold_mode" not in props and "threshold_cal" not in props
    assert ABSENT in str(props["calibration_absent"]) and "unavailable" in str(props["calibration_absent"])
    assert len(loaded.data["histogram"]) == 1 and "xaxis2" not in props["histogram"]["view"]["layout"]
    t = loaded.state["below_at"]
    assert f"** below {t:.4f} in the dataset" in str(props["below_count"])
    assert not math.isnan(t)


def test_patch_level_run_tags_the_faces_the_sdk_tags(fo, api, photos, table):
    """Face patches (two faces per image): the panel's percentile tags the same face labels."""
    from fiftyone import ViewField as F

    rng = np.random.default_rng(9)
    lo, hi = table.quantiles[0], table.quantiles[100]
    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=photos[i % len(photos)]) for i in range(40)])
        faces = [fo.Detections(detections=[fo.Detection(label="face", bounding_box=[0.1 + 0.4 * k, 0.1, 0.3, 0.3],
                                                        pcal_quality=float(rng.uniform(lo, hi)))
                                           for k in range(2)]) for _ in range(len(ds))]
        ds.set_values("faces", faces)
        ds.add_dynamic_sample_fields()
        ds.add_sample_field("faces.detections.pcal_error", fo.StringField)
        ds.add_sample_field("pcal_error", fo.StringField)
        q = ds.values("faces.detections.pcal_quality", unwind=True)
        api.runs.record_run(ds, "pcal", dict(backbone="sface", sparsity=[0.5], patches_field="faces",
                                             calibration=table.to_dict(), calibration_absent=None))
        api.runs.update_results(ds, "pcal", summary=api.runs.summary_stats(q, q, 0))
        s = dict(call(ds, "on_load", state=dict(run_key="pcal")).state)
        s = dict(call(ds, "on_change_threshold_mode", state=dict(s, threshold_mode="percentile"),
                      value="percentile").state)
        typed = call(ds, "on_type_threshold_cal", state=s, value=40)
        want = sum(float(table.percentile(v)) < 40 for v in q)
        assert typed.state["below"] == want and 0 < want < len(q)
        assert f"**{want} faces** ({100 * want / len(q):.1f} %) below the 40th" in str(typed.props()["below_count"])
        call(ds, "tag_below_threshold", state=dict(typed.state, tag="panel_faces"))
        info = api.tagging.tag_low_quality(ds, run_key="pcal", percentile=40, tag="sdk_faces", save_view=False)

        def tagged(tag):
            return sorted(ds.filter_labels("faces", F("tags").contains(tag)).values("faces.detections.id",
                                                                                   unwind=True))
        assert info["label_tags"] and info["num_tagged"] == want
        assert tagged("panel_faces") == tagged("sdk_faces") and len(tagged("sdk_faces")) == want
    finally:
        ds.delete()
