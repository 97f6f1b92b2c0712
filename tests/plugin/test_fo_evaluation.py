"""evaluate_face_quality through the operator, on real face chips with identities and degraded copies.

The dataset: every face of the real photos as an aligned dlib chip (obama*.jpg are one person, each
other face its own identity) plus two synthetically degraded copies of each, written as PNGs; the
faces are scored with compute_prefiqs (aligned=True) first, through its operator.
"""
import importlib
import json
import os

import numpy as np
import pytest
import fiftyone.operators as foo
from fiftyone import ViewField as F
from panel_output import shown_plots

PLUGIN = "@prefiqs/prefiqs"
MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"  # how FiftyOne names the loaded plugin package
URI = f"{PLUGIN}/evaluate_face_quality"
DEGRADE = [("blur", 4.0), ("downscale", 24)]


@pytest.fixture(scope="module")
def ev(plugin):
    """The plugin's evaluation module, as FiftyOne loaded it (the operator must be registered)."""
    assert foo.operator_exists(URI)
    return importlib.import_module(f"{MODULE}.operators.evaluation")


def identity_of(caption):
    stem = caption.split("#")[0]
    return "obama" if stem.startswith("obama") else caption


@pytest.fixture(scope="module")
def faces_ds(fo, tmp_path_factory, ev):
    from PIL import Image
    from prefiqs_core.backbones import load_backbone
    from prefiqs_core.evaluation.degrade import degrade
    from prefiqs_core.demo import collect_demo_chips

    chips, captions, _ = collect_demo_chips(load_backbone("dlib_resnet29").preprocess)
    d = tmp_path_factory.mktemp("eval_chips")
    samples = []
    for i, (chip, cap) in enumerate(zip(chips, captions)):
        for variant, image in [("clean", chip)] + [(k, degrade(chip, k, s)) for k, s in DEGRADE]:
            path = d / f"{i:02d}_{variant}.png"
            Image.fromarray(image).save(path)
            who = identity_of(cap)
            samples.append(fo.Sample(filepath=str(path), person=fo.Classification(label=who), name=who,
                                     variant=variant, sharpness=float(np.asarray(image, float).std())))
    ds = fo.Dataset(f"prefiqs-eval-{os.getpid()}")
    ds.add_samples(samples)
    # dlib chips, scored by the network they were made for (the fast backbone keeps this module quick)
    foo.get_operator(f"{PLUGIN}/compute_prefiqs")(ds, aligned=True, backbone="dlib_resnet29")
    yield ds
    ds.delete()


def run(ds, view=None, **params):
    ctx = dict(dataset=ds, params=params)
    if view is not None:
        ctx["view"] = view
    return foo.execute_operator(URI, ctx=ctx)


def direct_curve(labels, quality, dense, threshold, max_impostors=100_000):
    """The same EDC computed straight from prefiqs_core, without the plugin."""
    from prefiqs_core.evaluation import edc, pair_quality_from
    from prefiqs_core.evaluation.pairs import make_pairs, pair_similarities

    pairs = make_pairs(labels, max_impostors=max_impostors, seed=0)
    q = np.asarray(quality, float)
    sims = pair_similarities(np.stack(dense), pairs)
    return pairs, edc(sims, pairs.mated, pair_quality_from(q[pairs.a], q[pairs.b], "min"), 1e-3, threshold)


def test_operator_stores_a_loadable_run_png_and_the_direct_edc(faces_ds, ev, tmp_path):
    from prefiqs_core.evaluation import pauc

    png = tmp_path / "edc.png"
    res = run(faces_ds, identity_field="person", quality_fields=["prefiqs", "sharpness"], eval_key="ev1",
              plot_path=str(png))
    res.raise_exceptions()

    assert "ev1" in ev.list_evaluations(faces_ds)
    assert faces_ds.get_run_info("ev1").config.method == ev.EVAL_METHOD
    rec = ev.load_evaluation(faces_ds, "ev1")
    json.dumps(rec, allow_nan=False)  # plain data, ready for a panel
    assert rec["config"]["quality_paths"] == ["prefiqs_quality", "sharpness"]
    assert rec["config"]["embeddings_field"] == "prefiqs_dense" and rec["config"]["threshold"] == "fixed"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rec["plot_path"] == str(png)

    labels, quality, dense = faces_ds.values(["person.label", "prefiqs_quality", "prefiqs_dense"])
    pairs, curve = direct_curve(labels, quality, dense, "fixed")
    assert rec["num_faces"] == len(faces_ds) and rec["num_identities"] == len(set(labels))
    assert rec["num_mated"] == pairs.n_mated and rec["num_nonmated"] == pairs.n_nonmated
    assert [m["name"] for m in rec["methods"]] == ["prefiqs", "sharpness"]
    got = rec["curves"]["prefiqs"]
    assert got["convention"] == "fixed" and got["target_fmr"] == 1e-3 and got["pauc"] == got["pauc_20"]
    np.testing.assert_allclose(got["discard_fractions"], curve.discard_fractions)
    np.testing.assert_allclose(got["fnmr"], curve.fnmr)
    np.testing.assert_allclose(got["thresholds"], curve.thresholds)
    for lim in (0.2, 0.3):
        tag = f"pauc_{round(lim * 100)}"
        assert got[tag] == pytest.approx(pauc(curve, lim))
        assert got[f"{tag}_minus_best"] == pytest.approx(pauc(curve, lim, subtract_best=True))
    assert rec["methods"][1]["field"] == "sharpness" and rec["config"]["quality_run"] == "prefiqs"


def test_form_renders_with_no_params(faces_ds, ev):
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params=dict(dataset_name=faces_ds.name, params={}))
    form = foo.get_operator(URI).resolve_input(ctx)
    props = form.type.properties
    assert {"identity_field", "quality_fields", "eval_key", "threshold", "delegate"} <= set(props)
    assert props["quality_fields"].default == ["prefiqs"]  # the first PreFIQs run
    assert "template_field" in props and "template_quality" not in props  # asked only once it matters
    ctx = ExecutionContext(request_params=dict(dataset_name=faces_ds.name, params=dict(template_field="name")))
    assert foo.get_operator(URI).resolve_input(ctx).type.properties["template_quality"].default == "min"


def test_sdk_call_on_a_view_per_level_and_string_identity(faces_ds, ev, tmp_path):
    view = faces_ds.match(F("variant") != "downscale")
    op = foo.get_operator(URI)
    rec = op(view, "name", "prefiqs_quality", eval_key="ev_view", threshold="per_level",
             plot_path=str(tmp_path / "v.png"), max_impostors=50)
    assert rec["config"]["threshold"] == "per_level" and rec["num_faces"] == len(view)
    assert rec["num_nonmated"] == 50  # capped and sampled
    labels, quality, dense = view.values(["name", "prefiqs_quality", "prefiqs_dense"])
    _, curve = direct_curve(labels, quality, dense, "per_level", max_impostors=50)
    got = rec["curves"]["prefiqs_quality"]
    assert len(got["fnmr"]) == 20
    np.testing.assert_allclose(np.asarray(got["fnmr"], float), curve.fnmr, equal_nan=True)
    # overwriting needs consent; the stored view is the caller's
    with pytest.raises(Exception, match="exists"):
        op(view, "name", "prefiqs_quality", eval_key="ev_view", plot_path=False)
    op(view, "name", "prefiqs_quality", eval_key="ev_view", plot_path=False, overwrite=True)
    assert len(faces_ds.load_run_view("ev_view")) == len(view)
    ev.delete_evaluation(faces_ds, "ev_view")
    assert "ev_view" not in ev.list_evaluations(faces_ds)


def test_patch_level_run_with_identity_on_each_face(faces_ds, ev, fo, tmp_path):
    from prefiqs_core.alignment import get_template

    cx, cy, side = get_template("dlib150").box  # where the face sits in a dlib chip, in pixels
    box = [(cx - side / 2) / 150, (cy - side / 2) / 150, side / 150, side / 150]
    view = faces_ds.match(F("variant") == "clean")
    for s in view.iter_samples(autosave=True):
        s["faces"] = fo.Detections(detections=[fo.Detection(label="face", bounding_box=box, who=s.name)])
    foo.get_operator(f"{PLUGIN}/compute_prefiqs")(faces_ds, run_key="pq", patches_field="faces",
                                                  backbone="dlib_resnet29")
    rec = foo.get_operator(URI)(faces_ds, "who", ["pq"], eval_key="ev_patches", plot_path=False)
    assert rec["config"]["patches_field"] == "faces"
    assert rec["config"]["embeddings_field"] == "faces.detections.pq_dense"
    labels, quality, dense = faces_ds.values(["faces.detections.who", "faces.detections.pq_quality",
                                              "faces.detections.pq_dense"], unwind=True)
    _, curve = direct_curve(labels, quality, dense, "fixed")
    assert rec["num_faces"] == len(labels) == len(view)
    np.testing.assert_allclose(rec["curves"]["pq"]["fnmr"], curve.fnmr)
    assert rec["methods"][0]["pauc_20"] is not None
    # a sample-level identity (here the same people) applies to every face of its sample
    rec2 = foo.get_operator(URI)(faces_ds, "person", ["pq"], eval_key="ev_patches2", plot_path=False)
    assert rec2["config"]["identity_path"] == "person.label" and rec2["num_faces"] == len(view)
    assert rec2["curves"]["pq"]["fnmr"] == rec["curves"]["pq"]["fnmr"]


def test_templates_compare_template_features_rated_by_their_worst_face(faces_ds, ev, tmp_path):
    """IJB-style: each face's clean chip is one template, its two degraded copies another; the stored
    curve is the one prefiqs_core computes from the template features and min qualities."""
    from prefiqs_core.evaluation import edc, pair_quality_from
    from prefiqs_core.evaluation.pairs import build_templates, make_pairs, pair_similarities

    tmpl = [f"{p.split('/')[-1][:2]}-{'A' if v == 'clean' else 'B'}"
            for p, v in zip(*faces_ds.values(["filepath", "variant"]))]
    tmpl[-1] = None  # a face without a template is skipped, and counted
    faces_ds.set_values("tmpl", tmpl)
    try:
        rec = foo.get_operator(URI)(faces_ds, "person", "prefiqs", eval_key="ev_tmpl", template_field="tmpl",
                                    template_quality="min", plot_path=False)
        labels, quality, dense, t = faces_ds.values(["person.label", "prefiqs_quality", "prefiqs_dense", "tmpl"])
        keep = [i for i, x in enumerate(t) if x is not None]
        tt = build_templates(np.stack([dense[i] for i in keep]), [labels[i] for i in keep], [t[i] for i in keep])
        tq = tt.reduce_quality(np.asarray([quality[i] for i in keep]), "min")
        pairs = make_pairs(tt.labels, seed=0)
        curve = edc(pair_similarities(tt.embeddings, pairs), pairs.mated,
                    pair_quality_from(tq[pairs.a], tq[pairs.b], "min"), 1e-3, "fixed")
        assert rec["num_faces"] == len(faces_ds) - 1 and rec["skipped"]["no_template"] == 1
        assert rec["num_templates"] == len(tt.keys) == len(set(tmpl) - {None})
        assert rec["num_mated"] == pairs.n_mated > len(set(labels))  # every identity has an A and a B
        assert rec["config"]["template_path"] == "tmpl" and rec["config"]["template_quality"] == "min"
        np.testing.assert_allclose(rec["curves"]["prefiqs"]["fnmr"], curve.fnmr)
        # template quality "mean" is another curve over the same pairs
        rec_mean = foo.get_operator(URI)(faces_ds, "person", "prefiqs", eval_key="ev_tmpl", template_field="tmpl",
                                         template_quality="mean", plot_path=False, overwrite=True)
        assert rec_mean["num_mated"] == rec["num_mated"]
        assert rec_mean["curves"]["prefiqs"]["discard_fractions"] != rec["curves"]["prefiqs"]["discard_fractions"]
        with pytest.raises(Exception, match="template_quality"):  # the form's enum or the API's check
            foo.get_operator(URI)(faces_ds, "person", "prefiqs", eval_key="ev_tmpl2", template_field="tmpl",
                                  template_quality="median", plot_path=False)
        with pytest.raises(ValueError, match=r"template_quality must be one of \('min', 'mean', 'max'\)"):
            ev.evaluate_face_quality(faces_ds, "person", "prefiqs", eval_key="ev_tmpl2", template_field="tmpl",
                                     template_quality="median", plot_path=False)
        with pytest.raises(Exception, match="missing template field 'nope'"):
            foo.get_operator(URI)(faces_ds, "person", "prefiqs", eval_key="ev_tmpl2", template_field="nope",
                                  plot_path=False)
    finally:
        faces_ds.delete_sample_field("tmpl")
        if "ev_tmpl" in faces_ds.list_runs():
            ev.delete_evaluation(faces_ds, "ev_tmpl")


@pytest.mark.parametrize("params, view, message", [
    (dict(identity_field="nobody"), None, "missing identity field 'nobody'"),
    (dict(quality_fields=["no_such_quality"]), None, "unknown quality field 'no_such_quality'"),
    (dict(), F("name") == "obama", "fewer than 2 identities"),
    (dict(), (F("variant") == "clean") & (F("name") != "obama"), "no genuine pairs"),
])
def test_clear_errors(faces_ds, ev, params, view, message):
    params = dict(dict(identity_field="person", quality_fields=["prefiqs"], eval_key="ev_err",
                       write_plot=False), **params)
    with pytest.raises(Exception, match=message):
        # execute_operator raises the operator's error itself; raise_exceptions covers older versions
        run(faces_ds, view=faces_ds.match(view) if view is not None else None, **params).raise_exceptions()
    assert "ev_err" not in faces_ds.list_runs()


def test_panel_draws_the_stored_evaluation(faces_ds, ev):
    """End to end: the Face Quality panel finds a real evaluate_face_quality run and draws its curves."""
    from fiftyone.operators.executor import ExecutionContext, Executor

    run(faces_ds, identity_field="person", quality_fields=["prefiqs", "sharpness"],
        eval_key="for_panel").raise_exceptions()
    try:
        stored = ev.load_evaluation(faces_ds, "for_panel")["curves"]
        state = dict(run_key="prefiqs")
        ctx = ExecutionContext(request_params=dict(dataset_name=faces_ds.name, params=dict(
            panel_id="p1", __method__="on_load", state=state, panel_state=state)), executor=Executor())
        foo.get_operator(f"{PLUGIN}/prefiqs_panel").execute(ctx)
        edc = shown_plots(ctx.executor._requests)["edc"]  # the curves travel in the rendered layout
        traces = [t for t in edc if t["name"].startswith("for_panel: ")]  # other tests' runs too
        assert len(traces) == len(stored) == 2
        for trace in traces:
            name = trace["name"].split(": ", 1)[1].split(" (")[0]  # "for_panel: prefiqs (FMR ..., pAUC ...)"
            assert trace["x"] == pytest.approx(stored[name]["discard_fractions"])
    finally:
        ev.delete_evaluation(faces_ds, "for_panel")
