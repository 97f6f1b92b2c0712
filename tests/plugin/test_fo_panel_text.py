"""What the Face Quality panel says, checked without a browser on runs of known quality.

The runs are the browser test's (``alpha`` 0.70–0.85, ``beta`` 0.59–0.72, the first ``UNSCORED``
samples without a score), written through the plugin's run records, so no model runs here.
"""
import numpy as np
import pytest

import fiftyone.operators as foo
from fiftyone import ViewField as fo_F
from fiftyone.operators.executor import ExecutionContext, Executor

from test_fo_panel import P, call
from test_fo_panel_browser import N, RANGES, UNSCORED, _write_run


@pytest.fixture(scope="module")
def known(fo, api, photos):
    import fiftyone.brain as fob

    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=photos[i % len(photos)]) for i in range(N)])
    rng = np.random.default_rng(3)
    for key, (lo, hi) in RANGES.items():
        _write_run(ds, api, fob, key, lo, hi, rng)
    yield ds
    ds.delete()


def test_one_sample_view_says_its_quality_and_keeps_the_slider_scale(known):
    ds = known
    one = ds.exists("alpha_quality").limit(1)
    q = one.values("alpha_quality")[0]
    loaded = call(ds, "on_load", state=dict(run_key="alpha"), view=one)
    s = loaded.state
    assert s["info"]["lo"] == s["info"]["hi"] == pytest.approx(q)  # not widened by the histogram's bar
    text = str(loaded.props()["summary"])
    assert f"1 sample scored in this view, quality {q:.4f}." in text
    summary = ds.load_run_results("alpha").summary
    slider = loaded.props()["threshold"]["type"]
    assert slider["min"] <= summary["quality_min"] and slider["max"] >= summary["quality_max"]  # the run's scale
    assert "withInputs" not in str(loaded.props()["threshold"]["view"])  # no "Max" box posing as the value
    assert "threshold_typed" in loaded.props()


def test_threshold_outside_the_data_does_not_stretch_the_histogram(known):
    ds = known
    view = ds.exists("alpha_quality")
    first = call(ds, "on_load", state=dict(run_key="alpha"), view=view)
    moved = call(ds, "on_change_threshold", state=dict(first.state), view=view, value=0.95)
    layout = moved.props()["histogram"]["view"]["layout"]
    lo, hi = moved.state["info"]["lo"], moved.state["info"]["hi"]
    assert layout["xaxis"]["range"][0] < lo and hi <= layout["xaxis"]["range"][1] < 0.95
    assert "shapes" not in layout and "0.9500" in layout["annotations"][0]["text"]
    assert moved.state["below"] == N - UNSCORED


def test_unscored_samples_are_counted_apart_and_never_below(known):
    ds = known
    first = call(ds, "on_load", state=dict(run_key="beta"))
    assert first.state["info"]["errors"] == UNSCORED
    assert "8 samples" in str(first.props()["errors"])
    errors = call(ds, "show_errors", state=dict(first.state)).set_view(ds)
    assert len(errors) == UNSCORED and errors.count("beta_quality") == 0
    below = call(ds, "show_below_threshold", state=dict(first.state)).set_view(ds)
    assert len(below) == first.state["below"] and below.count("beta_quality") == len(below)


def test_compute_form_proposes_a_free_run_key(known, api):
    """A dataset that already holds the default key gets the next free one, and no error."""
    ds = known
    api.runs.record_run(ds, "prefiqs", dict(backbone="dlib_resnet29", sparsity=[0.3], patches_field=None))
    try:
        ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, params={}), executor=Executor())
        inputs = foo.get_operator(P + "compute_prefiqs").resolve_input(ctx).to_json()
        run_key = inputs["type"]["properties"]["run_key"]
        assert run_key["default"] == "prefiqs_2" and not run_key.get("invalid")
    finally:
        ds.delete_run("prefiqs")


@pytest.fixture(scope="module")
def patch_run(fo, api, photos):
    """A patch-level run ``faces_run`` on ``faces``: 6 samples × 3 faces; per sample one face errored
    (``faces_run_error``, no quality), and one whole image failed (``faces_run_error`` on the sample,
    its faces unscored), the way compute_prefiqs records them."""
    ds = fo.Dataset()
    rng = np.random.default_rng(5)
    samples, quality = [], []
    for i in range(6):
        dets = []
        for k in range(3):
            det = fo.Detection(label="face", bounding_box=[0.1 + 0.25 * k, 0.2, 0.2, 0.3])
            if i == 5:
                pass  # the failed image: no face of it is scored
            elif k == 0:
                det["faces_run_error"] = "alignment failed"
            else:
                q = round(float(rng.uniform(0.6, 0.8)), 4)
                det["faces_run_quality"], det["faces_run_drift"] = q, round(1 - q, 4)
                quality.append(q)
            dets.append(det)
        sample = fo.Sample(filepath=photos[i % len(photos)], faces=fo.Detections(detections=dets))
        if i == 5:
            sample["faces_run_error"] = "image unreadable"
        samples.append(sample)
    ds.add_samples(samples)
    api.runs.record_run(ds, "faces_run", dict(backbone="dlib_resnet29", sparsity=[0.3], patches_field="faces"))
    api.runs.update_results(ds, "faces_run", summary=api.runs.summary_stats(quality, [1 - q for q in quality], 6))
    yield ds, quality
    ds.delete()


def test_patch_run_errored_faces_never_below(patch_run):
    """Bug 3 for a patch-level run: the errored faces (no quality) and the faces of a failed image are
    counted apart, and never counted, shown or tagged as "below" (MongoDB sorts a missing value
    before every number, so a bare ``quality < t`` matched them)."""
    ds, quality = patch_run
    first = call(ds, "on_load", state=dict(run_key="faces_run"))
    t = max(quality) + 0.01  # above every scored face: "below" must be exactly the scored ones
    state = dict(call(ds, "on_change_threshold", state=dict(first.state), value=t).state)
    assert state["below"] == len(quality) == 10
    assert state["info"]["errors"] == 5 + 1  # five faces, one image
    below = call(ds, "show_below_threshold", state=state).set_view(ds)
    assert below._is_patches and len(below) == 10
    assert sorted(below.values("faces.faces_run_quality")) == sorted(quality)
    assert below.count("faces.faces_run_error") == 0
    # the histogram counts the scored faces only
    assert first.state["info"]["num"] == 10
    # tagging tags the scored faces below, never an errored one
    call(ds, "tag_below_threshold", state=dict(state, tag="lowq"))
    tagged = ds.filter_labels("faces", fo_F("tags").contains("lowq"))
    assert tagged.count("faces.detections") == 10
    assert tagged.count("faces.detections.faces_run_error") == 0
