"""prefiqs_core.combined: the detector score's reference percentiles, the combined column of ``score``,
the ``detector-reference`` command, and the shipped reference against a refit on LFW-dev half A."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prefiqs_core import assets
from prefiqs_core.calibration import shipped
from prefiqs_core.cli import (CALIBRATION_COLUMNS, COMBINED_COLUMNS, COMBINED_FNMR_COLUMNS, CSV_COLUMNS,
                              DISTINCTIVENESS_COLUMNS, main)
from prefiqs_core.combined import (DetectorReference, combined, fit_detector_reference,
                                   resolve_detector_reference, shipped_detector_reference)

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "data" / "lfw_dev"


def _ref(values=None):
    return DetectorReference(np.arange(101, dtype=float).tolist() if values is None else values)


def _dense_of_faces(folder, backbone):
    """Unit dense embeddings of every face ``score`` finds in ``folder``, in the CSV's order."""
    from prefiqs_core.backbones import load_backbone
    from prefiqs_core.pipeline import ChipDataset, expand_paths, iter_images, score_images
    from prefiqs_core.scoring import PreFIQs

    scorer = PreFIQs(load_backbone(backbone))
    paths, _ = expand_paths([str(folder)])  # the files, in the order the command reads them
    rows = score_images(scorer, iter_images(ChipDataset(paths, scorer.backbone.preprocess, "detect"), 0),
                        keep_embeddings=True)
    return np.stack([r.dense for r in rows if r.error is None])


def test_percentile_is_the_share_of_reference_scores_below():
    ref = _ref([v / 50 for v in range(101)])  # scores 0, 0.02, ..., 2.0 at percentiles 0..100
    np.testing.assert_allclose(ref.percentile([0.0, 0.5, 1.01, 2.0]), [0, 25, 50.5, 100])
    np.testing.assert_array_equal(ref.percentile([-3.0, 9.0]), [0, 100])  # clipped outside the reference
    assert np.isnan(ref.percentile([np.nan, 1.0])[0])  # no score: no percentile
    # ties in the reference: a tied score sits at the highest percentile it holds
    tied = _ref([0.0] * 10 + list(np.linspace(0.1, 1.0, 91)))
    assert tied.percentile(0.0) == 9


def test_fit_leaves_missed_faces_out_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.normal(1.5, 0.6, 500)
    with_missed = np.r_[s, [np.nan] * 7]
    ref = fit_detector_reference(with_missed, {"half": "A"})
    np.testing.assert_allclose(ref.quantiles, np.percentile(s, np.arange(101)))
    assert ref.made == {"half": "A", "n_faces": 500} and ref.detector == "dlib_hog" and ref.upsample == 1
    # about the share of the sample below: the reference reads back what it was fitted on
    assert abs(ref.percentile(np.median(s)) - 50) < 0.5
    back = DetectorReference.load(ref.save(tmp_path / "d.json"))
    assert back.to_dict() == ref.to_dict()
    with pytest.raises(ValueError, match="at least 100 detected faces"):
        fit_detector_reference(np.r_[s[:50], [np.nan] * 100])


def test_bad_references_are_refused(tmp_path):
    with pytest.raises(ValueError, match="101 non-decreasing"):
        _ref(list(range(100)))
    with pytest.raises(ValueError, match="101 non-decreasing"):
        _ref(list(range(101))[::-1])
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": 2, "quantiles": list(range(101))}))
    with pytest.raises(ValueError, match="schema 2"):
        DetectorReference.load(p)
    p.write_text("{")
    with pytest.raises(ValueError, match="not JSON"):
        DetectorReference.load(p)
    with pytest.raises(FileNotFoundError, match="not found"):
        DetectorReference.load(tmp_path / "none.json")


def test_mismatch_names_what_differs():
    ref = _ref()
    assert ref.mismatch("dlib_hog", 1) is None
    assert "detector 'yunet'" in ref.mismatch("yunet", 1)
    assert "upsample 2" in ref.mismatch("dlib_hog", 2)


def test_resolve_uses_the_shipped_reference_where_it_fits_and_refuses_a_named_one_that_does_not(tmp_path):
    ref, why = resolve_detector_reference(calibrated=True, detector="dlib_hog")
    assert why is None and ref.to_dict() == shipped_detector_reference().to_dict()
    # the shipped reference is left out, with the reason
    assert resolve_detector_reference(calibrated=False, detector="dlib_hog") == (
        None, "no calibration table applies (the combined value averages the quality's percentile)")
    assert resolve_detector_reference(calibrated=True, detector=None, no_detector="chips") == (None, "chips")
    assert "upsample 2" in resolve_detector_reference(calibrated=True, detector="dlib_hog", upsample=2)[1]
    # a named one is used, or refused with the same reason
    mine = _ref().save(tmp_path / "mine.json")
    ref, why = resolve_detector_reference(mine, calibrated=True, detector="dlib_hog")
    assert why is None and ref.quantiles == list(range(101))
    for kw, reason in ((dict(calibrated=False, detector="dlib_hog"), "no calibration table"),
                       (dict(calibrated=True, detector=None, no_detector="chips"), "chips"),
                       (dict(calibrated=True, detector="yunet"), "detector 'yunet'")):
        with pytest.raises(ValueError, match=f"mine.json: cannot be used here: .*{reason}"):
            resolve_detector_reference(mine, **kw)


def test_combined_is_the_mean_and_nan_without_a_detector_score():
    np.testing.assert_array_equal(combined([10.0, 80.0, 50.0], [30.0, 100.0, np.nan])[:2], [20.0, 90.0])
    assert np.isnan(combined(50.0, np.nan))


def test_shipped_reference_is_dlib_hog_on_half_a():
    ref = shipped_detector_reference()
    assert ref.detector == "dlib_hog" and ref.upsample == 1
    assert ref.made["half"] == "A" and ref.made["n_faces"] > 2000
    # dlib's HOG margins on in-the-wild faces: around 1.7, almost all between 0 and 3.5
    assert 1.0 < ref.quantiles[50] < 2.5 and 0 <= ref.quantiles[0] and ref.quantiles[100] < 5


def test_score_writes_the_combined_column_in_detect_mode(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("obama.jpg", "biden.jpg", "friends_t1.jpg"):
        shutil.copy(assets.photos_dir() / name, d / name)
    out = tmp_path / "s.csv"
    assert main(["score", str(d), "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0",
                 "--quiet"]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == (CSV_COLUMNS + CALIBRATION_COLUMNS + COMBINED_COLUMNS + DISTINCTIVENESS_COLUMNS
                             + COMBINED_FNMR_COLUMNS)
    assert len(rows) == 8
    cal, ref = shipped("dlib_resnet29"), shipped_detector_reference()
    # dlib's table averages distinctiveness in: its percentile, from each face's dense embedding
    want_distinct = cal.distinctiveness.percentile(_dense_of_faces(d, "dlib_resnet29"))
    for r, distinct in zip(rows, want_distinct):
        assert float(r["distinctiveness"]) == pytest.approx(float(distinct), abs=0.01)
        want = (cal.percentile(float(r["quality"])) + ref.percentile(float(r["det_score"])) + distinct) / 3
        assert float(r["combined"]) == pytest.approx(float(want), abs=0.02)
        assert abs(float(r["percentile"]) - cal.percentile(float(r["quality"]))) < 0.01
        # the table's bands of combined, fitted with this detector reference
        assert float(r["combined_expected_fnmr"]) == pytest.approx(float(cal.combined.expected_fnmr(want)), abs=1e-5)
    assert len({round(float(r["distinctiveness"])) for r in rows}) > 4  # it tells the faces apart
    assert len({r["combined_expected_fnmr"] for r in rows}) > 1
    # the faces do not all agree: the combined order is not the quality's order
    comb = [float(r["combined"]) for r in rows]
    assert len(set(comb)) == 8
    side = json.loads((tmp_path / "s.csv.json").read_text())
    assert side["detector_reference"]["detector"] == "dlib_hog"
    assert "column combined, and distinctiveness, and combined_expected_fnmr" in capsys.readouterr().err
    assert "combined_expected_fnmr_absent" not in side


def test_score_takes_a_named_detector_reference(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("obama.jpg", "friends_t1.jpg"):
        shutil.copy(assets.photos_dir() / name, d / name)
    # a reference on another scale than the shipped one: every combined value moves
    mine = fit_detector_reference(np.linspace(0.0, 4.0, 500), dict(source="test")).save(tmp_path / "mine.json")
    out = tmp_path / "s.csv"
    args = ["score", str(d), "--backbone", "dlib_resnet29", "--workers", "0", "--quiet"]
    assert main(args + ["--out", str(out), "--detector-reference", str(mine)]) == 0
    err = capsys.readouterr().err
    assert f"(detector reference: {mine})" in err
    # the shipped bands of combined were fitted with the shipped reference: not given for these values
    assert "no combined_expected_fnmr: the combined bands were fitted with another detector reference" in err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert "combined_expected_fnmr" not in rows[0]
    cal, ref, shipped_ref = shipped("dlib_resnet29"), DetectorReference.load(mine), shipped_detector_reference()
    assert len(rows) == 7
    for r in rows:
        q, s, distinct = float(r["quality"]), float(r["det_score"]), float(r["distinctiveness"])
        assert float(r["combined"]) == pytest.approx((cal.percentile(q) + ref.percentile(s) + distinct) / 3,
                                                     abs=0.02)
    assert any(abs(ref.percentile(float(r["det_score"])) - shipped_ref.percentile(float(r["det_score"]))) > 5
               for r in rows)
    side = json.loads((tmp_path / "s.csv.json").read_text())
    assert side["detector_reference"]["file"] == str(mine) and side["detector_reference"]["made"]["source"] == "test"
    assert "another detector reference" in side["combined_expected_fnmr_absent"]
    # named but not applicable, or not a reference: one line, no CSV
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    up2 = fit_detector_reference(np.linspace(0.0, 4.0, 500), upsample=2).save(tmp_path / "up2.json")
    for extra, msg in ((["--aligned"], "aligned chips have no face detector score"),
                       (["--prune", "global_l1@0.5"], "no calibration table applies"),
                       ([], "upsample 1 (the reference is for upsample 2)")):
        ref_file = up2 if not extra else mine
        o = tmp_path / "no.csv"
        assert main(args + extra + ["--out", str(o), "--detector-reference", str(ref_file)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: --detector-reference:") and msg in err[-1] and not o.exists()
    assert main(args + ["--out", str(tmp_path / "no.csv"), "--detector-reference", str(bad)]) == 1
    assert "not JSON" in capsys.readouterr().err


def test_score_has_no_combined_column_without_a_calibration(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(assets.photos_dir() / "obama.jpg", d / "obama.jpg")
    out = tmp_path / "s.csv"
    assert main(["score", str(d), "--backbone", "dlib_resnet29", "--prune", "global_l1@0.5", "--out", str(out),
                 "--workers", "0", "--quiet"]) == 0
    with open(out, newline="") as f:
        assert list(next(csv.DictReader(f))) == CSV_COLUMNS
    side = json.loads((tmp_path / "s.csv.json").read_text())
    assert side["detector_reference"] is None and "no calibration table" in side["combined_absent"]


def test_detector_reference_command_on_real_identities(tmp_path):
    """The ORL faces through ``detector-reference``: detection, halves, JSON."""
    orl = assets.orl_dir()
    if not orl.is_dir():
        pytest.fail(f"ORL faces missing at {orl}: run `make assets`")
    out = tmp_path / "orl_det.json"
    cmd = [sys.executable, "-m", "prefiqs_core", "detector-reference", "--identity-folder", str(orl), "--out", str(out),
           "--cache", str(tmp_path / "cache"), "--quiet", "--half", "A"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = DetectorReference.load(out)
    assert ref.made["half"] == "A" and ref.made["n_faces"] + ref.made["missed"] == 200  # 20 people × 10
    assert f"wrote {out}" in proc.stderr
    proc = subprocess.run(cmd[:5] + [str(tmp_path / "nope"), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 1 and "not found" in proc.stderr


@pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW development folder not at {LFW} (CI has it)")
def test_shipped_reference_is_a_refit_on_lfw_half_a(tmp_path):
    cache = ROOT / "out" / "lfw" / "cache"  # the benchmark's, when a run has filled it; else detected afresh
    out = tmp_path / "ref.json"
    assert main(["detector-reference", "--identity-folder", str(LFW), "--half", "A", "--cache", str(cache),
                 "--out", str(out), "--quiet"]) == 0
    np.testing.assert_allclose(DetectorReference.load(out).quantiles, shipped_detector_reference().quantiles,
                               rtol=1e-9)


def test_uniform_gap_measures_how_far_percentiles_are_from_uniform():
    from prefiqs_core.calibration import uniform_gap

    even = (np.arange(10_000) + 0.5) / 100  # 0.005 ... 99.995: as uniform as 10,000 faces can be
    assert uniform_gap(even) < 0.01
    assert uniform_gap(np.r_[even, [np.nan] * 50]) == uniform_gap(even)  # faces without a value are left out
    assert uniform_gap(np.full(100, 50.0)) == 50  # everyone at 50: none below p = 50, a gap of 50 there
    assert abs(uniform_gap(even / 2) - 50) < 0.01  # everyone in the lower half
