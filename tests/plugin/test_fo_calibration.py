"""Calibrated fields through the plugin: compute_prefiqs writes K_percentile / K_expected_fnmr from the
shipped table (face- and sample-level), leaves them out (and says why) when no table applies, refuses a
named table of another setting, and tag_low_quality by percentile or expected FNMR tags exactly the
faces the stored fields and the equivalent raw threshold select."""
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
