"""Calibrated fields through the plugin: compute_prefiqs writes K_percentile / K_expected_fnmr from the
shipped table (face- and sample-level), leaves them out (and says why) when no table applies, refuses a
named table of another setting, and tag_low_quality by percentile or expected FNMR tags exactly the
faces the stored fields and the equivalent raw threshold select. K_combined: the quality's percentile
and the detector score's, averaged, for faces the built-in detector found (patches from detect_faces,
and detect=True at sample level), left out with the reason for faces whose confidences are on another
scale, and the detector recorded on the Detections field."""
import numpy as np
import pytest
import fiftyone.operators as foo

P = "@prefiqs/prefiqs/"


@pytest.fixture(scope="module")
def table():
    from prefiqs_core.calibration import shipped
    from prefiqs_core.defaults import DEFAULT_BACKBONE, default_pruning
    from prefiqs_core.pruning import format_prune

    cal = shipped(DEFAULT_BACKBONE)  # read here directly, not through the plugin (which scores with the default)
    assert cal.prune == format_prune(default_pruning(DEFAULT_BACKBONE)), "stale shipped table: `make calibration`"
    return cal


@pytest.fixture(scope="module")
def scored(fo, photos, odd_images):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in photos + [odd_images["corrupt"]]])
    compute = foo.get_operator(P + "compute_prefiqs")
    compute(ds, patches_field="faces", detect=True, store_embeddings=False)
    compute(ds, run_key="whole", detect=True, store_embeddings=False)
    compute(ds, run_key="other", patches_field="faces", pruning="global_l1", sparsity=0.5,
            store_embeddings=False)
    # the same boxes in a field detect_faces did not write, with another detector's kind of confidence
    ds.set_values("mine", [None if d is None else fo.Detections(detections=[
        fo.Detection(label="face", bounding_box=x.bounding_box, confidence=0.99) for x in d.detections])
        for d in ds.values("faces")])
    compute(ds, run_key="theirs", patches_field="mine", store_embeddings=False)
    yield ds
    ds.delete()


def test_fields_written_from_the_shipped_table(scored, table, api):
    ds = scored
    q, pct, fnmr = (ds.values(f"faces.detections.prefiqs_{k}", unwind=True)
                    for k in ("quality", "percentile", "expected_fnmr"))
    assert len(q) == 10 and None not in q
    assert np.allclose(pct, table.percentile(q)) and np.allclose(fnmr, table.expected_fnmr(q))
    assert np.all((np.array(pct) >= 0) & (np.array(pct) <= 100))
    cfg = api.runs.load_config(ds, "prefiqs")
    assert cfg["calibration"] == table.to_dict() and cfg["calibration_file"] == "shipped"
    assert cfg["calibration_absent"] is None
    assert "faces.detections.prefiqs_percentile" in cfg["fields"]
    # sample level: the corrupt image has no quality and so no calibrated value either
    q, pct, fnmr = ds.values(["whole_quality", "whole_percentile", "whole_expected_fnmr"])
    have = [i for i, v in enumerate(q) if v is not None]
    assert len(have) == 4 and pct[4] is None and fnmr[4] is None
    assert np.allclose([pct[i] for i in have], table.percentile([q[i] for i in have]))
    assert np.allclose([fnmr[i] for i in have], table.expected_fnmr([q[i] for i in have]))


def test_no_fields_without_an_applicable_table(scored, api):
    ds = scored
    assert ds.values("faces.detections.other_quality", unwind=True)
    assert not ds.has_field("faces.detections.other_percentile")
    assert not ds.has_field("faces.detections.other_expected_fnmr")
    cfg = api.runs.load_config(ds, "other")
    assert cfg["calibration"] is None and "pruning 'global_l1@0.5'" in cfg["calibration_absent"]
    with pytest.raises(ValueError, match="run 'other' has no calibration table .*global_l1@0.5"):
        api.tagging.tag_low_quality(ds, run_key="other", percentile=10)


def test_a_named_table_of_another_setting_is_refused(scored, table, tmp_path):
    path = table.save(tmp_path / "default.json")
    with pytest.raises(Exception, match="does not apply.*pruning 'global_l1@0.5'"):
        foo.get_operator(P + "compute_prefiqs")(scored, run_key="refused", patches_field="faces",
                                                pruning="global_l1", sparsity=0.5, calibration=str(path))
    assert "refused" not in scored.list_runs()


def test_tag_by_percentile_equals_the_raw_threshold(scored, table):
    from fiftyone import ViewField as F

    ds = scored
    tag = foo.get_operator(P + "tag_low_quality")
    ids, pct = ds.values(["faces.detections.id", "faces.detections.prefiqs_percentile"], unwind=True)
    s = np.sort(pct)
    p = float((s[4] + s[5]) / 2)  # between two faces: about half of them below
    want = sorted(i for i, v in zip(ids, pct) if v < p)
    assert 0 < len(want) < len(ids)

    def tagged():
        return sorted(ds.filter_labels("faces", F("tags").contains("low_quality")).values("faces.detections.id",
                                                                                          unwind=True))

    info = tag(ds, percentile=p)
    assert info["num_tagged"] == len(want) and tagged() == want
    assert info["threshold_quality"] == pytest.approx(float(table.quality_at_percentile(p)))
    raw = tag(ds, threshold=float(table.quality_at_percentile(p)))
    assert raw["num_tagged"] == len(want) and tagged() == want

    fnmr = np.array(ds.values("faces.detections.prefiqs_expected_fnmr", unwind=True))
    levels = np.unique(fnmr)
    assert len(levels) > 1, "the 10 faces should fall in more than one band"
    x = float((levels[-1] + levels[-2]) / 2)  # between two bands: tags the faces of the worse one(s)
    info = tag(ds, max_expected_fnmr=x)
    want = sorted(i for i, v in zip(ids, fnmr) if v > x)
    assert info["num_tagged"] == len(want) and tagged() == want
    assert info["threshold_quality"] == pytest.approx(table.quality_for_fnmr(x))
    with pytest.raises(Exception, match="exactly one of"):
        tag(ds, percentile=5, threshold=0.5)


# ---- K_combined --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def det_ref():
    from prefiqs_core.combined import shipped_detector_reference

    return shipped_detector_reference()


def test_face_level_combined_is_the_mean_of_the_two_percentiles(scored, table, det_ref, api):
    cal, ref = table, det_ref
    q, conf, comb = (scored.values(f"faces.detections.{k}", unwind=True)
                     for k in ("prefiqs_quality", "confidence", "prefiqs_combined"))
    assert len(q) == 10 and None not in comb
    np.testing.assert_allclose(comb, (cal.percentile(q) + ref.percentile(conf)) / 2)
    # the detector's view differs from the network's: the two orders are not the same
    assert not np.array_equal(np.argsort(comb), np.argsort(q))
    cfg = api.runs.load_config(scored, "prefiqs")
    assert cfg["detector_reference"] == ref.to_dict() and cfg["combined_absent"] is None
    assert cfg["detector_reference_file"] == "shipped"
    assert "faces.detections.prefiqs_combined" in cfg["fields"]
    assert scored.get_field("faces").info["detector"] == "dlib_hog"


def test_combined_expected_fnmr_comes_from_the_tables_bands_of_combined(scored, table, det_ref, api):
    comb, fnmr = (scored.values(f"faces.detections.prefiqs_{k}", unwind=True)
                  for k in ("combined", "combined_expected_fnmr"))
    assert table.combined is not None and table.combined.mismatch(det_ref) is None
    assert len(fnmr) == 10 and None not in fnmr
    np.testing.assert_allclose(fnmr, table.combined.expected_fnmr(comb))
    cfg = api.runs.load_config(scored, "prefiqs")
    assert "faces.detections.prefiqs_combined_expected_fnmr" in cfg["fields"]
    assert cfg["combined_expected_fnmr_absent"] is None
    # sample level likewise; the corrupt image has none
    comb, fnmr = scored.values(["whole_combined", "whole_combined_expected_fnmr"])
    assert fnmr[4] is None and None not in fnmr[:4]
    np.testing.assert_allclose(fnmr[:4], table.combined.expected_fnmr(comb[:4]))
    # faces with no combined value have no field, and the reason is that of combined
    assert not scored.has_field("mine.detections.theirs_combined_expected_fnmr")
    assert api.runs.load_config(scored, "theirs")["combined_expected_fnmr_absent"] is None


def test_sample_level_combined_uses_the_best_face(scored, det_ref):
    ref = det_ref
    pct, comb = scored.values(["whole_percentile", "whole_combined"])
    best = [max(c) if c else None for c in scored.values("faces.detections.confidence")]
    have = [i for i, v in enumerate(comb) if v is not None]
    assert len(have) == 4 and comb[4] is None  # the corrupt image has no face, so no value
    np.testing.assert_allclose([comb[i] for i in have],
                               [(pct[i] + float(ref.percentile(best[i]))) / 2 for i in have])


def test_dlib_runs_average_distinctiveness_into_combined_and_store_its_percentile(fo, make_dataset, photos,
                                                                                   det_ref, api):
    from prefiqs_core.calibration import shipped

    cal, ref = shipped("dlib_resnet29"), det_ref
    assert cal.distinctiveness is not None
    ds = make_dataset(photos[:3])
    compute = foo.get_operator(P + "compute_prefiqs")
    compute(ds, run_key="d", patches_field="faces", detect=True, backbone="dlib_resnet29")
    compute(ds, run_key="dw", detect=True, backbone="dlib_resnet29", store_embeddings=False)
    q, conf, comb, distinct, dense = (ds.values(f"faces.detections.{k}", unwind=True) for k in (
        "d_quality", "confidence", "d_combined", "d_distinctiveness", "d_dense"))
    assert len(q) >= 5 and None not in comb and None not in distinct
    want_distinct = cal.distinctiveness.percentile(np.stack(dense))
    np.testing.assert_allclose(distinct, want_distinct, atol=1e-6)
    np.testing.assert_allclose(comb, (cal.percentile(q) + ref.percentile(conf) + want_distinct) / 3, atol=1e-6)
    assert np.ptp(distinct) > 10  # the faces' embeddings are not all equally far from the average face
    cfg = api.runs.load_config(ds, "d")
    assert cfg["calibration"]["distinctiveness"] == cal.distinctiveness.to_dict()
    assert {"faces.detections.d_combined", "faces.detections.d_distinctiveness"} <= set(cfg["fields"])
    # sample level: the best face of each image, its embedding not stored
    pct, comb, distinct = ds.values(["dw_percentile", "dw_combined", "dw_distinctiveness"])
    best = [max(c) for c in ds.values("faces.detections.confidence")]
    assert None not in comb and None not in distinct
    np.testing.assert_allclose(comb, (np.array(pct) + ref.percentile(best) + np.array(distinct)) / 3, atol=1e-6)
    assert "dw_distinctiveness" in api.runs.load_config(ds, "dw")["fields"]
    # SFace's table has no such reference: its runs write no distinctiveness field
    compute(ds, run_key="s", patches_field="faces", store_embeddings=False)
    assert ds.values("faces.detections.s_combined", unwind=True)
    assert not ds.has_field("faces.detections.s_distinctiveness")


def test_faces_from_elsewhere_get_no_combined_value_and_the_reason(scored, api):
    assert scored.values("mine.detections.theirs_quality", unwind=True)
    assert scored.values("mine.detections.theirs_percentile", unwind=True)
    assert not scored.has_field("mine.detections.theirs_combined")
    cfg = api.runs.load_config(scored, "theirs")
    assert cfg["detector_reference"] is None and "were not found by detect_faces" in cfg["combined_absent"]


def test_another_upsample_or_a_mixed_field_is_refused(fo, make_dataset, photos, api):
    ds = make_dataset(photos[:2])
    detect = foo.get_operator(P + "detect_faces")
    detect(ds, label_field="up2", upsample=2)
    assert ds.get_field("up2").info["upsample"] == 2
    out = api.scoring.compute_prefiqs(ds, run_key="u", patches_field="up2", store_embeddings=False)
    assert out["num_scored"] > 0 and not ds.has_field("up2.detections.u_combined")
    assert "upsample 2" in api.runs.load_config(ds, "u")["combined_absent"]
    # faces of upsample 1 added to the field next to those of upsample 2: a mixed field
    detect(ds.limit(1), label_field="up2", upsample=1, overwrite=True)
    assert ds.get_field("up2").info["detector"] == "mixed"
    # all of them detected again at one upsample: the record is clean again
    detect(ds, label_field="up2", upsample=1, overwrite=True)
    assert ds.get_field("up2").info == ds.get_field("up2").info | {"detector": "dlib_hog", "upsample": 1}


def test_detect_into_a_field_holding_other_faces_is_mixed_and_a_resume_reads_the_same_record(scored, api):
    compute = foo.get_operator(P + "compute_prefiqs")
    # "mine" holds faces of unknown origin; detect=True keeps them and detects only the rest
    compute(scored, run_key="more", patches_field="mine", detect=True, store_embeddings=False)
    assert scored.get_field("mine").info["detector"] == "mixed"
    assert not scored.has_field("mine.detections.more_combined")
    assert "mixed" in api.runs.load_config(scored, "more")["combined_absent"]
    # a resumed run (as each shard of a sharded run is) finds the record it started with
    before = scored.values("faces.detections.prefiqs_combined", unwind=True)
    compute(scored, patches_field="faces", detect=True, store_embeddings=False, resume=True)
    assert api.runs.load_config(scored, "prefiqs")["combined_absent"] is None
    assert scored.values("faces.detections.prefiqs_combined", unwind=True) == before


def test_a_sharded_run_prepared_before_detection_resumes_with_the_same_record(make_dataset, photos, api):
    # queue_compute_prefiqs_shards prepares the run before any shard has detected a face; each shard
    # then prepares it again with resume=True and must find the same detector record
    ds = make_dataset(photos[:2])
    api.scoring.prepare_compute_prefiqs(ds, run_key="sh", patches_field="found", detect=True, store_embeddings=False)
    again = api.scoring.prepare_compute_prefiqs(ds, run_key="sh", patches_field="found", detect=True,
                                                store_embeddings=False, resume=True)
    assert again["detector_reference"] is not None
    assert ds.get_field("found").info["detector"] == "dlib_hog"


def test_a_named_detector_reference_is_used_recorded_and_held_to_on_resume(scored, table, tmp_path, api):
    from prefiqs_core.combined import fit_detector_reference

    mine = fit_detector_reference(np.linspace(0.0, 4.0, 500), dict(source="test")).save(tmp_path / "mine.json")
    compute = foo.get_operator(P + "compute_prefiqs")
    compute(scored, run_key="ref", patches_field="faces", store_embeddings=False, detector_reference=mine)
    q, conf, comb = (scored.values(f"faces.detections.{k}", unwind=True)
                     for k in ("ref_quality", "confidence", "ref_combined"))
    from prefiqs_core.combined import DetectorReference, shipped_detector_reference

    ref = DetectorReference.load(mine)
    np.testing.assert_allclose(comb, (table.percentile(q) + ref.percentile(conf)) / 2)
    assert not np.allclose(comb, scored.values("faces.detections.prefiqs_combined", unwind=True))
    cfg = api.runs.load_config(scored, "ref")
    assert cfg["detector_reference"] == ref.to_dict() and cfg["detector_reference_file"] == str(mine)
    # the table's bands of combined were fitted with the shipped reference: no expected FNMR of these values
    assert not scored.has_field("faces.detections.ref_combined_expected_fnmr")
    assert "fitted with another detector reference" in cfg["combined_expected_fnmr_absent"]
    assert ref.to_dict() != shipped_detector_reference().to_dict()
    # a resume must convert with the same reference
    with pytest.raises(Exception, match="cannot resume run 'ref': its detector_reference differ"):
        compute(scored, run_key="ref", patches_field="faces", store_embeddings=False, resume=True)
    compute(scored, run_key="ref", patches_field="faces", store_embeddings=False, resume=True,
            detector_reference=mine)


def test_a_named_detector_reference_that_does_not_apply_is_refused(fo, scored, tmp_path):
    from prefiqs_core.combined import fit_detector_reference

    mine = fit_detector_reference(np.linspace(0.0, 4.0, 500)).save(tmp_path / "mine.json")
    compute = foo.get_operator(P + "compute_prefiqs")
    scored.set_values("elsewhere", [None if d is None else fo.Detections(detections=[
        fo.Detection(label="face", bounding_box=x.bounding_box) for x in d.detections])
        for d in scored.values("faces")])
    with pytest.raises(Exception, match="mine.json: cannot be used here: the faces of 'elsewhere' were not found "
                                        "by detect_faces"):
        compute(scored, run_key="r1", patches_field="elsewhere", store_embeddings=False, detector_reference=mine)
    with pytest.raises(Exception, match="cannot be used here: no calibration table applies"):
        compute(scored, run_key="r2", patches_field="faces", pruning="global_l1", sparsity=0.5,
                store_embeddings=False, detector_reference=mine)
    with pytest.raises(Exception, match="detector reference .*not found"):
        compute(scored, run_key="r3", patches_field="faces", store_embeddings=False,
                detector_reference=tmp_path / "none.json")
    assert not {"r1", "r2", "r3"} & set(scored.list_runs())  # refused before anything was recorded


def test_tag_by_combined_tags_the_faces_below_and_saves_them_worst_first(scored):
    from fiftyone import ViewField as F

    ds = scored
    tag = foo.get_operator(P + "tag_low_quality")
    ids, comb = ds.values(["faces.detections.id", "faces.detections.prefiqs_combined"], unwind=True)
    s = np.sort(comb)
    t = float((s[3] + s[4]) / 2)
    want = sorted(i for i, v in zip(ids, comb) if v < t)
    assert len(want) == 4

    def tagged():
        return sorted(ds.filter_labels("faces", F("tags").contains("low_quality")).values("faces.detections.id",
                                                                                          unwind=True))

    info = tag(ds, threshold=t, by="combined")
    assert info["num_tagged"] == 4 and tagged() == want and info["by"] == "combined"
    worst = ds.load_saved_view(info["saved_view"])
    assert worst.values("faces.prefiqs_combined") == sorted(s[:4].tolist())  # the patches, worst first
    # the worst 40 % by combined: the same 4 faces
    assert tag(ds, worst_percent=40, by="combined")["num_tagged"] == 4 and tagged() == want
    # sample tags: samples holding a face below, sorted by their worst face's combined value
    info = tag(ds, threshold=t, by="combined", label_tags=False)
    worst = ds.load_saved_view(info["saved_view"])
    firsts = [min(v) for v in worst.values("faces.detections.prefiqs_combined")]
    assert firsts == sorted(firsts) and firsts[0] == s[0]


def test_tag_by_combined_expected_fnmr_tags_what_the_stored_field_says(scored, table):
    from fiftyone import ViewField as F

    ds = scored
    tag = foo.get_operator(P + "tag_low_quality")
    ids, comb, fnmr = ds.values(["faces.detections.id", "faces.detections.prefiqs_combined",
                                 "faces.detections.prefiqs_combined_expected_fnmr"], unwind=True)
    levels = sorted(set(fnmr))
    assert len(levels) >= 2, "the faces fall in one band of combined: the test cannot tell bands apart"
    x = float(levels[0] + levels[1]) / 2  # between the two best bands' rates: tags the faces of the worse ones
    want = sorted(i for i, f in zip(ids, fnmr) if f > x)
    assert 0 < len(want) < len(ids)
    info = tag(ds, max_expected_fnmr=x, by="combined")
    got = sorted(ds.filter_labels("faces", F("tags").contains("low_quality")).values("faces.detections.id",
                                                                                     unwind=True))
    assert got == want and info["num_tagged"] == len(want)
    assert info["threshold_quality"] is None
    assert info["threshold_combined"] == table.combined.combined_for_fnmr(x)
    assert all(c < info["threshold_combined"] for i, c in zip(ids, comb) if i in want)


def test_tag_by_combined_needs_the_values_and_its_own_scale(scored, api):
    tag = foo.get_operator(P + "tag_low_quality")
    with pytest.raises(Exception, match="run 'theirs' has no combined values .*not found by detect_faces"):
        tag(scored, run_key="theirs", threshold=50, by="combined")
    with pytest.raises(Exception, match="convert the quality|converts the quality"):
        tag(scored, percentile=5, by="combined")
    with pytest.raises(Exception, match=r"combined value in \[0, 100\]"):
        tag(scored, threshold=150, by="combined")
    with pytest.raises(Exception, match="run 'ref' has no expected FNMR of combined .*another detector reference"):
        api.tagging.tag_low_quality(scored, run_key="ref", max_expected_fnmr=0.05, by="combined")
    with pytest.raises(Exception, match="Path: by. Reason: Invalid enum value"):  # the form's own check
        tag(scored, threshold=0.5, by="drift")
    with pytest.raises(ValueError, match="by is one of quality, combined"):
        api.tagging.tag_low_quality(scored, threshold=0.5, by="drift")


def _tag_form(ds, **params):
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, params=params))
    return foo.get_operator(P + "tag_low_quality").resolve_input(ctx).type.properties


def test_the_tag_form_ranks_by_combined_where_the_run_wrote_it_and_executes_what_it_shows(scored):
    from fiftyone import ViewField as F
    from fiftyone.operators.executor import execute_operator

    ds = scored
    form = _tag_form(ds, run_key="prefiqs")
    assert form["by"].default == "combined" and form["threshold"].view.label == "Combined threshold"
    assert "max_expected_fnmr" in form and "percentile" not in form  # the bands of combined convert; no percentile
    assert form["threshold"].invalid  # nothing given yet
    assert "percentile" in _tag_form(ds, run_key="prefiqs", by="quality")
    assert _tag_form(ds, run_key="prefiqs", by="quality")["threshold"].view.label == "Quality threshold"
    # a percentile under the default ranking is refused by the form, as the SDK refuses it
    refused = _tag_form(ds, run_key="prefiqs", percentile=5)["threshold"]
    assert refused.invalid and "convert the quality" in refused.error_message
    # a run without combined values has no choice to make
    theirs = _tag_form(ds, run_key="theirs")
    assert "by" not in theirs and theirs["threshold"].view.label == "Quality threshold"

    # executed with the form's params as shown (no "by" sent), it tags by combined
    comb = sorted(v for v in ds.values("faces.detections.prefiqs_combined", unwind=True) if v is not None)
    t = float((comb[2] + comb[3]) / 2)
    try:
        params = dict(run_key="prefiqs", threshold=t, tag="form_low", save_view=False)
        result = execute_operator(P + "tag_low_quality", ctx=dict(dataset=ds, params=params))
        result.raise_exceptions()
        assert result.result["by"] == "combined" and result.result["num_tagged"] == 3
        got = ds.filter_labels("faces", F("tags").contains("form_low")).values("faces.detections.prefiqs_combined",
                                                                               unwind=True)
        assert sorted(got) == comb[:3]
    finally:
        ds.untag_labels("form_low")
