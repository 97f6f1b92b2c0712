"""K_combined through the plugin: the quality's percentile and the detector score's, averaged, for faces
the built-in detector found (patches from detect_faces, and detect=True at sample level), left out with
the reason for faces whose confidences are on another scale, and the detector recorded on the field."""
import numpy as np
import pytest
import fiftyone.operators as foo

P = "@prefiqs/prefiqs/"


@pytest.fixture(scope="module")
def refs():
    from prefiqs_core.calibration import shipped
    from prefiqs_core.combined import shipped_detector_reference
    from prefiqs_core.defaults import DEFAULT_BACKBONE

    return shipped(DEFAULT_BACKBONE), shipped_detector_reference()


@pytest.fixture(scope="module")
def scored(fo, photos, odd_images):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in photos + [odd_images["corrupt"]]])
    compute = foo.get_operator(P + "compute_prefiqs")
    compute(ds, patches_field="faces", detect=True, store_embeddings=False)
    compute(ds, run_key="whole", detect=True, store_embeddings=False)
    # the same boxes in a field detect_faces did not write, with another detector's kind of confidence
    ds.set_values("mine", [None if d is None else fo.Detections(detections=[
        fo.Detection(label="face", bounding_box=x.bounding_box, confidence=0.99) for x in d.detections])
        for d in ds.values("faces")])
    compute(ds, run_key="theirs", patches_field="mine", store_embeddings=False)
    yield ds
    ds.delete()


def test_face_level_combined_is_the_mean_of_the_two_percentiles(scored, refs, api):
    cal, ref = refs
    q, conf, comb = (scored.values(f"faces.detections.{k}", unwind=True)
                     for k in ("prefiqs_quality", "confidence", "prefiqs_combined"))
    assert len(q) == 10 and None not in comb
    np.testing.assert_allclose(comb, (cal.percentile(q) + ref.percentile(conf)) / 2)
    # the detector's view differs from the network's: the two orders are not the same
    assert not np.array_equal(np.argsort(comb), np.argsort(q))
    cfg = api.runs.load_config(scored, "prefiqs")
    assert cfg["detector_reference"] == ref.summary() and cfg["combined_absent"] is None
    assert "faces.detections.prefiqs_combined" in cfg["fields"]
    assert scored.get_field("faces").info["detector"] == "dlib_hog"


def test_sample_level_combined_uses_the_best_face(scored, refs):
    cal, ref = refs
    pct, comb = scored.values(["whole_percentile", "whole_combined"])
    best = [max(c) if c else None for c in scored.values("faces.detections.confidence")]
    have = [i for i, v in enumerate(comb) if v is not None]
    assert len(have) == 4 and comb[4] is None  # the corrupt image has no face, so no value
    np.testing.assert_allclose([comb[i] for i in have],
                               [(pct[i] + float(ref.percentile(best[i]))) / 2 for i in have])


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
