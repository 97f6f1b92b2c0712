"""The demo's ORL part end to end: real identities → detect_faces → compute_prefiqs → baselines →
evaluate_face_quality (faces and templates) → the summary ``make demo`` prints → the panel's EDC.

Every number the plugin stores is recomputed here from the dataset's own values with
``prefiqs_core`` alone (pairs, cosine similarities, FMR threshold, EDC), not read back.
"""
import importlib
import os
from collections import Counter
from math import comb

import numpy as np
import pytest
import fiftyone.operators as foo
from fiftyone import ViewField as F
from panel_output import shown_plots

MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"
P = "@prefiqs/prefiqs/"
PEOPLE = 6  # 60 photos; one of them (s1/2.pgm) shows no face the detector finds


@pytest.fixture(scope="module")
def orl(plugin):
    return importlib.import_module(f"{MODULE}.operators.demo_orl")


@pytest.fixture(scope="module")
def orl_ds(fo, orl):
    ds = fo.Dataset(f"prefiqs-orl-{os.getpid()}")
    orl.add_orl(ds, "faces", "faces_landmarks", people=PEOPLE)
    yield ds
    ds.delete()


def scored_faces(ds, orl):
    """(identity, quality, sharpness, random, dense embedding) of every scored ORL face."""
    view = orl.orl_view(ds).filter_labels("faces", F(f"{orl.ORL_RUN}_quality").exists())
    ident, q, s, r, e = view.values(["identity.label", f"faces.detections.{orl.ORL_RUN}_quality",
                                     "faces.detections.sharpness", "faces.detections.random",
                                     f"faces.detections.{orl.ORL_RUN}_dense"])
    rows = [(who, *vals) for who, *per in zip(ident, q, s, r, e) for vals in zip(*per)]
    return [list(c) for c in zip(*rows)]


def test_every_photo_is_a_sample_and_faceless_ones_say_why(orl_ds, orl):
    view = orl.orl_view(orl_ds)
    assert len(view) == PEOPLE * 10 and set(view.distinct("tags")) == {"orl"}
    assert view.distinct("identity.label") == sorted(f"s{k}" for k in range(1, PEOPLE + 1))
    assert view.count("faces.detections") <= len(view)  # one person per photo: at most one box
    err = f"{orl.ORL_RUN}_error"
    faceless = view.match(F("faces.detections").length() == 0)
    assert len(faceless) >= 1  # s1/2.pgm
    assert faceless.count(err) == len(faceless) and all("no face" in e for e in faceless.values(err))
    summary = orl.orl_summary(orl_ds)
    assert summary["faces"] + len(summary["failed"]) == summary["photos"] == len(view)
    assert {f["photo"] for f in summary["failed"]} >= {"s1/2.pgm"}
    text = orl.format_orl_summary(summary)
    assert "s1/2.pgm: no face detected" in text and "AT&T Laboratories Cambridge" in text


def test_summary_says_when_too_few_pairs_fail_for_the_curves_to_differ(orl):
    def summary(fnmr0, mated=1721):
        method = dict(name=orl.ORL_RUN, pauc_20=0.0003, fnmr={d: fnmr0 for d in orl.DISCARDS})
        return dict(photos=400, people=40, faces=390, failed=[], num_mated=mated, num_nonmated=74134,
                    num_impostors_total=74134, target_fmr=1e-3, achieved_fmr=9.98e-4, threshold=0.39,
                    methods=[method, dict(method, name="random")], plot_path="edc.png")

    few = orl.format_orl_summary(summary(2 / 1721))  # SFace on ORL: 2 failures
    assert "Only 2 of the 1721 genuine pairs fail to match: too few errors" in few
    assert few.splitlines()[-1].startswith("EDC curves: edc.png")
    many = orl.format_orl_summary(summary(40 / 1721))
    assert "too few errors" not in many and "fail to match" not in many


def test_baselines_are_the_chips_sharpness_and_a_seeded_random(orl_ds, orl):
    who, q, sharp, rand, dense = scored_faces(orl_ds, orl)
    assert len(who) == orl_ds.count(f"faces.detections.{orl.ORL_RUN}_quality")
    assert all(v > 0 for v in sharp) and all(0 <= v < 1 for v in rand)
    assert len(set(rand)) == len(rand)  # distinct chips, distinct hashes
    # random carries no information about the faces: its ranking is unrelated to PreFIQs'
    assert abs(np.corrcoef(np.argsort(np.argsort(q)), np.argsort(np.argsort(rand)))[0, 1]) < 0.5


def test_evaluation_matches_a_direct_computation(orl_ds, orl):
    from prefiqs_core.evaluation import edc, pair_quality_from, pauc
    from prefiqs_core.evaluation.pairs import make_pairs, pair_similarities

    rec = foo.get_operator(P + "evaluate_face_quality")  # registered, and what add_orl called
    assert rec is not None
    ev = orl.load_evaluation(orl_ds, orl.EVAL_KEY)
    assert ev["config"]["quality_run"] == orl.ORL_RUN and ev["config"]["patches_field"] == "faces"
    assert [m["name"] for m in ev["methods"]] == [orl.ORL_RUN, "sharpness", "random"]

    who, q, sharp, rand, dense = scored_faces(orl_ds, orl)
    per_person = Counter(who)
    assert ev["num_faces"] == len(who) and ev["num_identities"] == PEOPLE
    assert ev["num_mated"] == sum(comb(k, 2) for k in per_person.values())
    assert ev["num_nonmated"] == comb(len(who), 2) - ev["num_mated"]
    assert ev["config"]["target_fmr"] == 1e-3  # about 1,700 impostor pairs: 1e-3 is resolvable

    pairs = make_pairs(who, seed=0)
    sims = pair_similarities(np.stack(dense), pairs)
    for name, values in [(orl.ORL_RUN, q), ("sharpness", sharp), ("random", rand)]:
        v = np.asarray(values, float)
        curve = edc(sims, pairs.mated, pair_quality_from(v[pairs.a], v[pairs.b]), 1e-3)
        got = ev["curves"][name]
        np.testing.assert_allclose(got["fnmr"], curve.fnmr)
        np.testing.assert_allclose(got["discard_fractions"], curve.discard_fractions)
        assert got["pauc_20"] == pytest.approx(pauc(curve, 0.2))
    # the summary reads the same curves at 0, 10 and 20 % discarded
    s = orl.orl_summary(orl_ds)
    first = ev["curves"][orl.ORL_RUN]
    assert s["methods"][0]["fnmr"][0.0] == pytest.approx(first["fnmr"][0])
    x, y = np.asarray(first["discard_fractions"]), np.asarray(first["fnmr"])
    assert s["methods"][0]["fnmr"][0.2] == pytest.approx(y[np.searchsorted(x, 0.2, side="right") - 1])


def test_templates_of_real_people(orl_ds, orl):
    view = orl.orl_view(orl_ds)
    # two templates per person: photos 1-5 and 6-10
    half = ["first" if int(os.path.basename(p).split(".")[0]) <= 5 else "second" for p in view.values("filepath")]
    view.set_values("half", half)
    try:
        ev = foo.get_operator(P + "evaluate_face_quality")(
            view, identity_field="identity", quality_fields=[orl.ORL_RUN, "sharpness"], patches_field="faces",
            template_field="half", eval_key="orl_templates", overwrite=True)
    finally:  # leave the dataset as the demo builds it (the panel test counts its curves)
        if "orl_templates" in orl_ds.list_runs():
            orl_ds.delete_run("orl_templates")
        orl_ds.delete_sample_field("half")
    assert ev["num_templates"] == 2 * PEOPLE and ev["num_identities"] == PEOPLE
    assert ev["num_mated"] == PEOPLE and ev["num_nonmated"] == comb(2 * PEOPLE, 2) - PEOPLE
    assert ev["config"]["template_path"] == "half"


def test_lowest_supported_fmr(orl):
    assert orl.lowest_supported_fmr(1000) == 1e-3 and orl.lowest_supported_fmr(74_000) == 1e-3
    assert orl.lowest_supported_fmr(999) == pytest.approx(1e-2)
    assert orl.lowest_supported_fmr(45) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        orl.lowest_supported_fmr(0)


def test_panel_draws_the_orl_curves_on_first_open(orl_ds, orl):
    from fiftyone.operators.executor import ExecutionContext, Executor

    state = {}
    ctx = ExecutionContext(request_params=dict(dataset_name=orl_ds.name, params=dict(
        panel_id="p1", __method__="on_load", state=state, panel_state=state)), executor=Executor())
    foo.get_operator(P + "prefiqs_panel").execute(ctx)
    assert ctx.panel.state.run_key == orl.ORL_RUN and ctx.panel.state.num_edc == 3
    data = shown_plots(ctx.executor._requests)  # the curves travel in the rendered layout
    names = [t["name"] for t in data["edc"]]
    assert [n.split(":")[0] for n in names] == [orl.EVAL_KEY] * 3
    ev = orl.load_evaluation(orl_ds, orl.EVAL_KEY)
    assert data["edc"][0]["y"] == ev["curves"][orl.ORL_RUN]["fnmr"]


def test_a_second_box_on_a_one_person_photo_is_dropped_with_its_landmarks(fo, orl, make_dataset):
    from prefiqs_core import assets

    path, _ = assets.orl_photos(1)[0]
    ds = make_dataset([str(path)])
    weak, strong = fo.Instance(), fo.Instance()
    box = [0.2, 0.2, 0.5, 0.5]
    points = [[0.3, 0.4], [0.4, 0.4], [0.6, 0.4], [0.7, 0.4], [0.5, 0.6]]
    sample = ds.first()
    sample["faces"] = fo.Detections(detections=[
        fo.Detection(label="face", bounding_box=box, confidence=0.1, instance=weak),
        fo.Detection(label="face", bounding_box=box, confidence=0.9, instance=strong)])
    sample["faces_landmarks"] = fo.Keypoints(keypoints=[
        fo.Keypoint(label="face", points=points, instance=weak),
        fo.Keypoint(label="face", points=points, instance=strong)])
    sample.save()
    orl._keep_best_face(ds, "faces", "faces_landmarks")
    sample.reload()
    (det,) = sample["faces"].detections
    (kp,) = sample["faces_landmarks"].keypoints
    assert det.confidence == 0.9 and det.instance.id == kp.instance.id == strong.id


def test_the_grid_gets_images_a_browser_can_show(orl_ds, orl):
    """ORL ships PGM, which Chromium cannot decode: the samples point at PNG copies, pixel for pixel."""
    from PIL import Image

    from prefiqs_core import assets

    view = orl.orl_view(orl_ds)
    paths, photos = view.values(["filepath", "orl_photo"])
    assert all(p.endswith(".png") for p in paths) and "s1/2.pgm" in photos
    for p, photo in list(zip(paths, photos))[:5]:
        with Image.open(p) as png, Image.open(assets.orl_dir() / photo) as pgm:
            assert png.mode == pgm.mode and np.array_equal(np.asarray(png), np.asarray(pgm))


def test_combined_field_evaluates_beside_the_quality(orl_ds, orl):
    # the demo's ORL faces come from detect_faces, so the run wrote K_combined beside its quality
    combined = f"faces.detections.{orl.ORL_RUN}_combined"
    view = orl.orl_view(orl_ds)
    assert None not in view.values(combined, unwind=True)
    try:
        ev = foo.get_operator(P + "evaluate_face_quality")(
            view, identity_field="identity", quality_fields=[orl.ORL_RUN, combined], patches_field="faces",
            eval_key="orl_combined", overwrite=True)
    finally:  # leave the dataset as the demo builds it (the panel test counts its curves)
        if "orl_combined" in orl_ds.list_runs():
            orl_ds.delete_run("orl_combined")
    assert [m["field"] for m in ev["methods"]][1] == combined
    curves = [ev["curves"][m["name"]] for m in ev["methods"]]
    assert curves[0]["fnmr"][0] == curves[1]["fnmr"][0]  # the same pairs, another order
    assert curves[0]["discard_fractions"] != curves[1]["discard_fractions"]
