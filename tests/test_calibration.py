"""Calibration tables: the shipped tables belong to the current defaults and weights, round-trip,
convert monotonically, refuse a setting they were not measured for, reach the CLI's CSV; a table fitted
on real identities (the ORL faces) by the ``calibrate`` command; and, where the LFW development folder is
present, the shipped table is exactly what its recorded command makes and holds on the held-out half."""
import csv
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prefiqs_core import assets
from prefiqs_core.calibration import (Calibration, CalibrationMismatch, Reference, check, make_bands,
                                      pav_decreasing, resolve, shipped, shipped_path, wilson)
from prefiqs_core.cli import CALIBRATION_COLUMNS, CSV_COLUMNS, main
from prefiqs_core.defaults import COMBINED_DISTINCTIVENESS, DEFAULT_BACKBONE, DEFAULTS, default_pruning
from prefiqs_core.combined import DetectorReference
from prefiqs_core.pruning import format_prune

ROOT = Path(__file__).resolve().parent.parent
LFW = ROOT.parent / "shared" / "data" / "lfw_dev"
SHIPPED = ["dlib_resnet29", "sface"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def table():
    cal = shipped("dlib_resnet29")
    assert cal is not None, f"no shipped table {shipped_path('dlib_resnet29')}: run `make calibration`"
    return cal


# ---- the shipped tables belong to the defaults ---------------------------------------------------

@pytest.mark.parametrize("backbone", SHIPPED)
def test_shipped_table_is_for_the_current_default_spec(backbone):
    # fails when a default changes without `make calibration` (needs no LFW, no weights)
    assert set(SHIPPED) == set(DEFAULTS)
    cal = Calibration.load(shipped_path(backbone))
    assert cal.backbone == backbone
    assert cal.prune == format_prune(default_pruning(backbone)), (
        f"{shipped_path(backbone).name} was made for {cal.prune}, the default is now "
        f"{format_prune(default_pruning(backbone))}: re-run `make calibration`")
    assert cal.made["half"] == "A" and cal.made["command"].startswith("python -m prefiqs_core calibrate")
    assert 100 <= len(cal.quantiles) + 8 * len(cal.bands) <= 600  # a few hundred numbers, not data


@pytest.mark.parametrize("backbone", SHIPPED)
def test_shipped_table_has_a_distinctiveness_reference_where_combined_uses_one(backbone):
    # fails when COMBINED_DISTINCTIVENESS changes without `make calibration`
    cal = Calibration.load(shipped_path(backbone))
    assert (cal.distinctiveness is not None) == (backbone in COMBINED_DISTINCTIVENESS)
    if cal.distinctiveness is not None:
        assert len(cal.distinctiveness.direction) == 128  # dlib's embedding


@pytest.mark.parametrize("backbone", SHIPPED)
def test_shipped_table_is_for_the_installed_weights(backbone):
    from prefiqs_core.backbones import load_backbone

    bb = load_backbone(backbone)  # the sha the run config and the CSV sidecar record
    cal, why = resolve(bb.name, format_prune(default_pruning(backbone)), bb.source_sha256)
    assert why is None and cal.weights_sha256 == bb.source_sha256


def test_package_data_carries_the_tables():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    assert "*.json" in data and (ROOT / "prefiqs_core" / "calibrations" / "__init__.py").exists()


# ---- the table itself ----------------------------------------------------------------------------

def test_round_trip(table, tmp_path):
    p = table.save(tmp_path / "t.json")
    back = Calibration.load(p)
    assert back.to_dict() == table.to_dict()
    q = np.linspace(0.5, 1.0, 301)
    assert np.array_equal(back.percentile(q), table.percentile(q))
    assert np.array_equal(back.expected_fnmr(q), table.expected_fnmr(q))


def _cone(n, dim=16, spread=0.3, seed=0):
    """Unit embeddings scattered around one direction (as dlib's crowd into a cone)."""
    rng = np.random.default_rng(seed)
    axis = np.zeros(dim)
    axis[0] = 1.0
    e = axis + spread * rng.normal(size=(n, dim))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_distinctiveness_reference_ranks_faces_by_their_angle_from_the_mean_direction(tmp_path):
    from prefiqs_core.calibration import Distinctiveness

    ref = _cone(2000)
    dist = Distinctiveness.fit(ref)
    assert np.asarray(dist.direction) @ np.eye(16)[0] > 0.99  # the cone's axis
    own = dist.percentile(ref)  # the reference faces themselves: spread evenly over 0..100
    assert abs(np.mean(own) - 50) < 1.5 and abs(np.mean(own < 10) - 0.10) < 0.02
    np.testing.assert_allclose(dist.of(ref), 1 - ref @ np.asarray(dist.direction))
    along, across = np.eye(16)[0], np.eye(16)[1]
    assert dist.percentile(along[None])[0] == 0 and dist.percentile(across[None])[0] == 100
    # monotone in the angle from the axis
    angles = np.linspace(0, np.pi / 2, 50)
    faces = np.outer(np.cos(angles), along) + np.outer(np.sin(angles), across)
    assert np.all(np.diff(dist.percentile(faces)) >= 0)
    # a NaN row (a face with no embedding) stays NaN; another embedding size is refused
    assert np.isnan(dist.percentile(np.full((1, 16), np.nan)))[0]
    with pytest.raises(ValueError, match="embeddings of size 16"):
        dist.percentile(np.ones((2, 8)))
    with pytest.raises(ValueError, match="unit vector"):
        Distinctiveness([1.0, 1.0], dist.quantiles)
    with pytest.raises(ValueError, match="101 non-decreasing"):
        Distinctiveness(dist.direction, dist.quantiles[::-1])
    with pytest.raises(ValueError, match="at least 100 faces"):
        Distinctiveness.fit(ref[:50])


def test_a_table_carries_its_distinctiveness_reference_through_its_file(table, tmp_path):
    from prefiqs_core.calibration import Distinctiveness
    from prefiqs_core.combined import combined, combined_values, shipped_detector_reference

    plain = Calibration.from_dict({k: v for k, v in table.to_dict().items() if k != "distinctiveness"})
    assert plain.distinctiveness is None and "distinctiveness" not in plain.to_dict()
    assert plain.summary()["distinctiveness"] is False
    with_d = Calibration.from_dict(plain.to_dict() | {"distinctiveness": Distinctiveness.fit(_cone(500)).to_dict()})
    back = Calibration.load(with_d.save(tmp_path / "t.json"))
    assert back.to_dict() == with_d.to_dict() and back.summary()["distinctiveness"] is True
    bad = with_d.to_dict()
    bad["distinctiveness"]["quantiles"] = bad["distinctiveness"]["quantiles"][:5]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="bad.json: distinctiveness: 'quantiles'"):
        Calibration.load(tmp_path / "bad.json")
    # combined: two percentiles without the reference, three with it (and then it needs the embeddings)
    ref = shipped_detector_reference()
    q, det, dense = np.array([0.88, 0.9, 0.92]), np.array([0.5, 1.5, np.nan]), _cone(3, seed=1)
    two = combined_values(plain, ref, q, det)
    np.testing.assert_allclose(two[:2], combined(plain.percentile(q), ref.percentile(det))[:2])
    three = combined_values(back, ref, q, det, dense)
    want = (back.percentile(q) + ref.percentile(det) + back.distinctiveness.percentile(dense)) / 3
    np.testing.assert_allclose(three[:2], want[:2])
    assert np.isnan(two[2]) and np.isnan(three[2])  # no detector score, no combined value
    with pytest.raises(ValueError, match="dense embeddings are needed"):
        combined_values(back, ref, q, det)


def test_conversions_are_monotone_vectorised_and_bounded(table):
    lo, hi = table.quantiles[0], table.quantiles[-1]
    q = np.linspace(lo - 0.05, hi + 0.05, 5001)
    pct, fnmr = table.percentile(q), table.expected_fnmr(q)
    assert pct.shape == fnmr.shape == q.shape
    assert np.all(np.diff(pct) >= 0) and np.all(np.diff(fnmr) <= 0)
    assert pct[0] == 0 and pct[-1] == 100 and np.all((fnmr >= 0) & (fnmr <= 1))
    assert fnmr[0] > fnmr[-1]  # the table says something: bad faces fail more often
    a, b = table.expected_fnmr_interval(q)
    assert np.all((a <= fnmr) & (fnmr <= b))
    # the percentile is the share of reference faces below: its inverse lands on the quantiles
    for p in (1, 5, 50, 95):
        assert float(table.percentile(table.quality_at_percentile(p))) == pytest.approx(p, abs=1e-6)
    assert np.isnan(table.percentile([np.nan]))[0] and float(table.percentile(0.9)) == table.percentile([0.9])[0]


def test_tied_reference_qualities_keep_the_percentile_monotone(table):
    d = table.to_dict()
    d["quantiles"][10:20] = [d["quantiles"][10]] * 10  # ten percentiles share one quality
    cal = Calibration.from_dict(d)
    q = np.linspace(cal.quantiles[0], cal.quantiles[-1], 4001)
    assert np.all(np.diff(cal.percentile(q)) >= 0)
    assert float(cal.percentile(d["quantiles"][10])) == 19  # the highest percentile that quality holds


def test_fnmr_threshold_conversion(table):
    for x in (0.5, 0.1, 0.05, table.bands[-1].fnmr):
        cut = table.quality_for_fnmr(x)
        q = np.linspace(table.quantiles[0], table.quantiles[-1], 2001)
        assert np.all(table.expected_fnmr(q[q >= cut]) <= x)
        assert np.all(table.expected_fnmr(q[q < cut]) > x)
    with pytest.raises(ValueError, match="no quality band"):
        table.quality_for_fnmr(table.bands[-1].fnmr / 2 - 1e-9 if table.bands[-1].fnmr > 0 else -1)


def test_refused_when_spec_or_weights_differ(table):
    assert table.applies_to(table.backbone, table.prune, table.weights_sha256)
    # an equivalent spelling of the same spec applies
    head, _, rest = table.prune.partition("+")
    method, sparsity = head.split("@")
    assert table.applies_to(table.backbone, f"{method}@{float(sparsity):.3f}" + (f"+{rest}" if rest else ""),
                            table.weights_sha256)
    with pytest.raises(CalibrationMismatch, match=r"pruning 'global_l1@0\.5'.*table is for"):
        table.applies_to(table.backbone, "global_l1@0.5", table.weights_sha256)
    with pytest.raises(CalibrationMismatch, match="weights sha256 0000000000") as e:
        table.applies_to(table.backbone, table.prune, "0" * 64)
    assert "pruning" not in str(e.value)
    with pytest.raises(CalibrationMismatch, match="backbone 'sface'"):
        table.applies_to("sface", table.prune, table.weights_sha256)
    cal, why = resolve(table.backbone, "global_l1@0.5", table.weights_sha256)
    assert cal is None and "pruning 'global_l1@0.5'" in why and "calibrate" in why


def test_bad_files_give_clear_errors(table, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Calibration.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        Calibration.load(tmp_path / "x.json")
    d = table.to_dict()
    d["bands"][0]["fnmr"], d["bands"][-1]["fnmr"] = d["bands"][-1]["fnmr"], d["bands"][0]["fnmr"] + 0.1
    (tmp_path / "y.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="must not increase"):
        Calibration.load(tmp_path / "y.json")


def test_pool_adjacent_violators():
    assert np.allclose(pav_decreasing([3, 1, 2], [1, 1, 1]), [3, 1.5, 1.5])
    assert np.allclose(pav_decreasing([1, 2, 3], [1, 1, 2]), [2.25] * 3)
    assert np.allclose(pav_decreasing([0.5, 0.2, 0.3, 0.1], [1, 3, 1, 1]), [0.5, 0.225, 0.225, 0.1])
    rng = np.random.default_rng(0)
    v, w = rng.uniform(size=40), rng.uniform(0.1, 2, 40)
    fit = pav_decreasing(v, w)
    assert np.all(np.diff(fit) <= 1e-12) and np.dot(fit, w) == pytest.approx(np.dot(v, w))  # weighted means


def test_wilson_interval_known_values():
    lo, hi = wilson([0, 5], [100, 10])
    assert lo[0] == 0 and hi[0] == pytest.approx(0.0370, abs=1e-4)  # the "rule of three"-like bound
    assert lo[1] == pytest.approx(0.2366, abs=1e-4) and hi[1] == pytest.approx(0.7634, abs=1e-4)


def test_bootstrap_threshold_with_unit_weights_is_the_projects_rule():
    from prefiqs_core.calibration import _weighted_threshold
    from prefiqs_core.evaluation.lfw import threshold_at

    imp = np.random.default_rng(5).normal(size=20000)
    top = np.sort(imp)[::-1][:200]
    assert _weighted_threshold(top, np.ones((1, 200)), np.array([20000.0]), 1e-3)[0] == threshold_at(imp, 1e-3)
    # a person drawn twice counts their impostor pairs twice: the threshold rises
    w = np.ones((1, 200))
    w[0, :30] = 2
    assert _weighted_threshold(top, w, np.array([20030.0]), 1e-3)[0] > threshold_at(imp, 1e-3)


def _identities(n_people, per_person=10, dim=32, seed=0, twins=False):
    """Unit embeddings of ``n_people`` synthetic people (photos scattered around a person's own
    direction) with qualities that make the scattered photos the bad ones. ``twins``: the first
    two people look alike, so they hold every high impostor score."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    if twins:
        centres[1] = centres[0] + 0.3 * rng.normal(size=dim)
    noise = rng.uniform(0.2, 1.2, size=n_people * per_person)
    e = np.repeat(centres, per_person, 0) / np.sqrt(dim) + noise[:, None] * rng.normal(size=(len(noise), dim)) / np.sqrt(dim)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e, 1.0 - noise / 2, np.repeat([f"p{i}" for i in range(n_people)], per_person)


def test_bootstrap_with_few_people_keeps_every_impostor_score_when_the_tail_is_not_enough():
    """With few people a resample often draws neither of the two people behind every high impostor
    score; the bootstrap then reads every impostor score instead of failing."""
    from prefiqs_core import calibration as cal_mod

    e, q, labels = _identities(8, per_person=20, twins=True)
    ref = Reference.build(e, q, labels)
    edges = make_bands(ref.pair_quality, ref.errors, 4, 1, 20)
    seen = []
    real = cal_mod._top_impostors

    def spy(emb, codes, cut, block=1024, every=False):
        seen.append(cut)
        return real(emb, codes, -np.inf if every else cut, block)

    def run(every):
        cal_mod._top_impostors = lambda emb, codes, cut, block=1024: spy(emb, codes, cut, block, every)
        try:
            return ref.bootstrap(edges, reps=300, seed=0)
        finally:
            cal_mod._top_impostors = real

    w, errs = run(every=False)
    assert len(seen) == 2 and seen[1] == ref.pairs.impostor.min()  # the tail, then every score
    assert w.shape == errs.shape == (300, len(edges) + 1) and np.all(errs <= w) and errs.sum() > 0
    # exactly what reading every impostor score from the start gives
    w_all, errs_all = run(every=True)
    assert len(seen) == 3 and np.array_equal(w, w_all) and np.array_equal(errs, errs_all)


def test_too_few_people_for_the_bootstrap_is_a_clear_error():
    e, q, labels = _identities(3, per_person=40)  # 4,800 impostor pairs, but 3 people
    ref = Reference.build(e, q, labels)
    with pytest.raises(ValueError, match="3 people are too few for the people-level bootstrap"):
        ref.bootstrap(np.array([0.6]), reps=1000, seed=0)


def test_calibrate_command_on_too_few_people_says_so_in_one_line(tmp_path, capsys):
    orl = assets.orl_dir()
    if not orl.is_dir():
        pytest.fail(f"ORL faces missing at {orl}: run `make assets`")
    few = tmp_path / "few"
    for person in ("s1", "s2", "s3", "s4", "s5"):
        shutil.copytree(orl / person, few / person)
    out = tmp_path / "few.json"
    assert main(["calibrate", "--identity-folder", str(few), "--out", str(out), "--backbone", "dlib_resnet29",
                 "--cache", str(tmp_path / "cache"), "--quiet", "--workers", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "too few" in err[-1] and "Traceback" not in "".join(err)
    assert not out.exists()
    # ten people are enough for a table, and too few failures for more than one band: it says so
    for person in ("s6", "s7", "s8", "s9", "s10"):
        shutil.copytree(orl / person, few / person)
    assert main(["calibrate", "--identity-folder", str(few), "--out", str(out), "--backbone", "dlib_resnet29",
                 "--cache", str(tmp_path / "cache"), "--quiet", "--workers", "0"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    cal = Calibration.load(out)
    assert cal.made["people"] == 10 and len(cal.bands) == 1 and err[-1].startswith("warning: one band only")
    # a photo given for the folder
    photo = next((few / "s1").iterdir())
    assert main(["calibrate", "--identity-folder", str(photo), "--out", str(out), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == f"error: identity folder {photo} is a file, not a folder of <Name>/<images>"


def test_calibrate_command_combined_options(tmp_path, capsys, monkeypatch):
    """--combined no leaves the bands of combined out; a detector reference that cannot be read is
    refused before any face is read; where the bands cannot be fitted, --combined yes fails in one
    line and auto warns and writes the table without them."""
    orl = assets.orl_dir()
    if not orl.is_dir():
        pytest.fail(f"ORL faces missing at {orl}: run `make assets`")
    ten = tmp_path / "ten"
    for i in range(1, 11):
        shutil.copytree(orl / f"s{i}", ten / f"s{i}")
    out = tmp_path / "t.json"
    base = ["calibrate", "--identity-folder", str(ten), "--out", str(out), "--backbone", "dlib_resnet29",
            "--cache", str(tmp_path / "cache"), "--quiet", "--workers", "0", "--reps", "100"]
    assert main(base + ["--combined", "no"]) == 0
    assert Calibration.load(out).combined is None and "of combined" not in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    out.unlink()
    assert main(base + ["--detector-reference", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --detector-reference:") and "not JSON" in err[-1] and not out.exists()
    # bands that cannot be fitted (the library's ValueError, e.g. too few detected faces of a person)
    from prefiqs_core import calibration as cal_mod

    def refuse(*a, **k):
        raise ValueError("no genuine pairs: every person needs at least two faces")

    monkeypatch.setattr(cal_mod, "fit_combined", refuse)
    assert main(base + ["--combined", "yes"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: bands of combined: no genuine pairs: every person needs at least two faces"
    assert not out.exists()
    assert main(base) == 0
    err = capsys.readouterr().err
    assert "warning: no bands of combined (no genuine pairs" in err and Calibration.load(out).combined is None


def _combined_fixture(seed=0):
    """A table fitted on 60 synthetic people whose detector scores (like their qualities) are low
    for the scattered photos; a few faces the detector missed (NaN)."""
    from prefiqs_core.calibration import fit
    from prefiqs_core.combined import fit_detector_reference

    e, q, labels = _identities(60, per_person=10, seed=seed)
    rng = np.random.default_rng(seed + 1)
    det = 3.0 * q + rng.normal(0, 0.05, len(q))
    det[rng.choice(len(q), 7, replace=False)] = np.nan
    cal = fit(Reference.build(e, q, labels), "dlib_resnet29", "global_l1@0.5", "0" * 64, n_bands=8,
              min_errors=5, reps=200)
    return cal, fit_detector_reference(det), e, q, det, labels


def test_bands_of_combined_are_fitted_on_the_faces_combined_values_and_travel_with_the_table(tmp_path):
    from prefiqs_core.calibration import fit_combined
    from prefiqs_core.combined import combined_values, fit_detector_reference

    cal, det_ref, e, q, det, labels = _combined_fixture()
    assert cal.combined is None and cal.summary()["combined_bands"] == 0
    both = fit_combined(cal, det_ref, e, q, det, labels, n_bands=8, min_errors=5, reps=200)
    assert both.bands == cal.bands and both.quantiles == cal.quantiles  # the quality's table is unchanged
    cb = both.combined
    assert len(cb.bands) > 1 and cb.made["left_out_no_detector_score"] == 7
    # the genuine pairs of the faces with a detector score, banded by the lower combined value of the two
    comb = combined_values(cal, det_ref, q, det)
    ok = np.isfinite(comb)
    pairs = [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels))
             if labels[i] == labels[j] and ok[i] and ok[j]]
    pc = np.array([min(comb[i], comb[j]) for i, j in pairs])
    assert sum(b.pairs for b in cb.bands) == len(pairs)
    edges = [b.hi for b in cb.bands[:-1]]
    assert [b.pairs for b in cb.bands] == np.bincount(np.searchsorted(edges, pc, side="right"),
                                                      minlength=len(cb.bands)).tolist()
    fn = cb.expected_fnmr(np.linspace(0, 100, 201))
    assert np.all(np.diff(fn) <= 1e-12) and fn[0] > fn[-1]  # the worst faces are expected to fail more
    assert np.isnan(cb.expected_fnmr([np.nan]))[0]
    lo, hi = cb.expected_fnmr_interval([10.0, 90.0])
    assert np.all(lo <= cb.expected_fnmr([10.0, 90.0])) and np.all(cb.expected_fnmr([10.0, 90.0]) <= hi)
    t = cb.combined_for_fnmr(float(fn[-1]))
    assert cb.expected_fnmr([t])[0] <= fn[-1] and (t == -np.inf or cb.expected_fnmr([t - 1e-6])[0] > fn[-1])
    # through the file
    back = Calibration.load(both.save(tmp_path / "t.json"))
    assert back.to_dict() == both.to_dict() and back.summary()["combined_bands"] == len(cb.bands)
    assert np.array_equal(back.combined.expected_fnmr(np.linspace(0, 100, 51)), cb.expected_fnmr(np.linspace(0, 100, 51)))
    # they hold only for combined values made with the reference they were fitted with
    assert cb.mismatch(det_ref) is None and cb.mismatch(DetectorReference.load(det_ref.save(tmp_path / "d.json"))) is None
    other = fit_detector_reference(np.linspace(0.0, 4.0, 500))
    assert "fitted with another detector reference" in cb.mismatch(other)
    # a table file whose bands of combined lost their reference's digest is refused, naming why
    d = both.to_dict()
    del d["combined"]["detector"]["digest"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="bad.json: calibration table: the combined bands lack"):
        Calibration.load(tmp_path / "bad.json")


def test_bands_hold_enough_failures():
    rng = np.random.default_rng(3)
    q = rng.uniform(size=5000)
    err = (rng.uniform(size=5000) < 0.3 * (1 - q) ** 3).astype(float)
    edges = make_bands(q, err, 16, 10, 200)
    band = np.searchsorted(edges, q, side="right")
    assert np.all(np.bincount(band, weights=err) >= 10) and np.all(np.bincount(band) >= 200)
    assert np.all(np.diff(edges) > 0) and 2 < len(edges) + 1 <= 16


# ---- the command line ----------------------------------------------------------------------------

@pytest.fixture()
def chip_dir(tmp_path, real_chips):
    d = tmp_path / "chips"
    d.mkdir()
    for i, c in enumerate(real_chips):
        Image.fromarray(c).save(d / f"chip{i:02d}.png")
    return d


def test_score_adds_calibrated_columns_from_the_shipped_table(chip_dir, tmp_path, table, dlib_backbone,
                                                              real_chips, capsys):
    from prefiqs_core.scoring import PreFIQs

    out = tmp_path / "s.csv"
    assert main(["score", str(chip_dir), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0", "--quiet"]) == 0
    rows = read_csv(out)
    assert list(rows[0].keys()) == CSV_COLUMNS + CALIBRATION_COLUMNS and len(rows) == len(real_chips)
    q = PreFIQs(dlib_backbone).score(real_chips).quality
    assert np.allclose([float(r["percentile"]) for r in rows], table.percentile(q), atol=0.01)
    assert np.allclose([float(r["expected_fnmr"]) for r in rows], table.expected_fnmr(q), atol=1e-5)
    side = json.loads((tmp_path / "s.csv.json").read_text())
    assert side["calibration"]["prune"] == table.prune and side["calibration"]["file"] == "shipped"
    assert side["calibration"]["weights_sha256"] == side["source_sha256"]
    assert "calibration: dlib_resnet29.json" in capsys.readouterr().err


def test_score_with_a_given_table_and_without_one(chip_dir, tmp_path, table, capsys):
    # a table given by file is used and recorded
    mine = table.save(tmp_path / "mine.json")
    out = tmp_path / "a.csv"
    assert main(["score", str(chip_dir), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0", "--quiet",
                 "--calibration", str(mine)]) == 0
    assert "percentile" in read_csv(out)[0]
    assert json.loads((tmp_path / "a.csv.json").read_text())["calibration"]["file"] == str(mine)
    # other pruning: no table applies, the columns are absent and one stderr line says why
    capsys.readouterr()
    out = tmp_path / "b.csv"
    assert main(["score", str(chip_dir), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0", "--quiet",
                 "--prune", "global_l1@0.5"]) == 0
    assert list(read_csv(out)[0].keys()) == CSV_COLUMNS
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("calibration:")]
    assert len(err) == 1 and "pruning 'global_l1@0.5'" in err[0] and "no percentile/expected_fnmr" in err[0]
    side = json.loads((tmp_path / "b.csv.json").read_text())
    assert side["calibration"] is None and "global_l1@0.5" in side["calibration_absent"]
    # a named table that does not apply is refused: no CSV of wrong numbers
    out = tmp_path / "c.csv"
    assert main(["score", str(chip_dir), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0", "--quiet",
                 "--prune", "global_l1@0.5", "--calibration", str(mine)]) == 1
    assert "does not apply" in capsys.readouterr().err and not out.exists()


def test_calibrate_command_on_real_identities(tmp_path):
    """The ORL faces (40 people x 10 photos, the only identity-labelled faces a fresh machine fetches)
    through ``calibrate``: detection, scoring, pairs, bands, bootstrap, JSON."""
    orl = assets.orl_dir()
    if not orl.is_dir():
        pytest.fail(f"ORL faces missing at {orl}: run `make assets`")
    out = tmp_path / "orl.json"
    cmd = [sys.executable, "-m", "prefiqs_core", "calibrate", "--identity-folder", str(orl), "--out", str(out),
           "--cache", str(tmp_path / "cache"), "--reps", "200", "--min-errors", "5", "--quiet",
           "--distinctiveness", "yes"]  # not SFace's shipped choice: asked for, it is stored
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cal = Calibration.load(out)
    assert cal.backbone == DEFAULT_BACKBONE and cal.prune == format_prune(default_pruning(DEFAULT_BACKBONE))
    m = cal.made
    assert m["people"] == 40 and m["faces"] == 400 and m["genuine_pairs"] == 40 * 45
    assert m["folder"] == orl.name and m["half"] == "all" and "--identity-folder" in m["command"]
    assert sum(b.pairs for b in cal.bands) == 1800 and sum(b.errors for b in cal.bands) == m["false_non_matches"]
    assert all(b.errors >= 5 for b in cal.bands) or len(cal.bands) == 1
    assert all(b.fnmr_lo <= b.fnmr <= b.fnmr_hi for b in cal.bands)
    assert f"wrote {out}" in proc.stderr and "and the distinctiveness reference" in proc.stderr
    # bands of the combined value too, over the faces the detector found (made with the shipped reference)
    from prefiqs_core.combined import shipped_detector_reference
    assert cal.combined is not None and cal.combined.mismatch(shipped_detector_reference()) is None
    n_found = cal.combined.made["faces"]
    assert n_found + cal.combined.made["left_out_no_detector_score"] == 400 and n_found > 300
    assert "of combined" in proc.stderr
    assert cal.distinctiveness is not None and len(cal.distinctiveness.direction) == 128  # SFace's embedding
    # and the CSV can use it: same backbone, weights and pruning as the default; combined then
    # averages the table's distinctiveness in, and the CSV shows it
    assert main(["score", str(orl / "s1"), "--out", str(tmp_path / "s.csv"), "--workers", "0", "--quiet",
                 "--calibration", str(out)]) == 0
    rows = [r for r in read_csv(tmp_path / "s.csv") if not r["error"]]
    assert rows and all(0 <= float(r["percentile"]) <= 100 for r in rows)
    assert all(0 <= float(r["distinctiveness"]) <= 100 for r in rows)
    ref = shipped_detector_reference()
    assert sum(bool(r["det_score"]) for r in rows) >= 5
    for r in (r for r in rows if r["det_score"]):
        want = (float(r["percentile"]) + ref.percentile(float(r["det_score"])) + float(r["distinctiveness"])) / 3
        assert float(r["combined"]) == pytest.approx(float(want), abs=0.02)
        assert float(r["combined_expected_fnmr"]) == pytest.approx(float(cal.combined.expected_fnmr(want)), abs=1e-5)
    assert all(r["combined_expected_fnmr"] == "" for r in rows if not r["det_score"])


# ---- LFW: the shipped table is reproducible and holds on the held-out half ---------------------

def _lfw_or_skip():
    for d in (LFW, Path("/work/shared/data/lfw_dev")):
        if d.is_dir():
            return d
    pytest.skip(f"LFW development folder not found at {LFW}: the shipped tables are not re-measured here")


def test_shipped_dlib_table_is_what_its_command_makes_and_holds_on_half_b(tmp_path):
    lfw = _lfw_or_skip()
    ship = shipped("dlib_resnet29")
    args = shlex.split(ship.made["command"])[3:]  # after "python -m prefiqs_core"
    args[args.index("--identity-folder") + 1] = str(lfw)
    args[args.index("--out") + 1] = str(tmp_path / "again.json")
    cache = ROOT / "out" / "lfw" / "cache"  # the benchmarks' cache: seconds when present, ~15 min when not
    args[args.index("--cache") + 1] = str(cache)
    proc = subprocess.run([sys.executable, "-m", "prefiqs_core", *args, "--quiet"], capture_output=True, text=True,
                          timeout=3600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = Calibration.load(tmp_path / "again.json")
    # the same up to float32 noise (embeddings from another batch size or thread count differ in the
    # 8th digit); the pair and failure counts of every band exactly
    assert again.quantiles == pytest.approx(ship.quantiles, rel=1e-6, abs=1e-7)
    assert [(b.pairs, b.errors) for b in again.bands] == [(b.pairs, b.errors) for b in ship.bands]
    exact = ("lo", "hi", "pairs", "errors", "fnmr_raw", "fnmr")
    for a, b in zip(again.bands, ship.bands):
        assert {k: a.__dict__[k] for k in exact} == pytest.approx({k: b.__dict__[k] for k in exact},
                                                                  rel=1e-5, abs=1e-6)
        # interval ends are bootstrap percentiles: float32 noise in the embeddings can move a replicate's
        # own threshold across one pair, so an end may shift by up to one failure in the band, no more
        for k in ("fnmr_lo", "fnmr_hi", "pred_lo", "pred_hi"):
            assert abs(a.__dict__[k] - b.__dict__[k]) <= 1.0 / b.pairs, (k, a, b)
    # the distinctiveness reference (dlib's table has one): the same direction and percentiles
    assert again.distinctiveness is not None and ship.distinctiveness is not None
    assert np.asarray(again.distinctiveness.direction) @ np.asarray(ship.distinctiveness.direction) > 1 - 1e-9
    assert again.distinctiveness.quantiles == pytest.approx(ship.distinctiveness.quantiles, rel=1e-5, abs=1e-7)
    # held-out half: B's measured FNMR per band against A's stated interval
    from prefiqs_core.backbones import load_backbone
    from prefiqs_core.calibration import reference_scores
    from prefiqs_core.evaluation.lfw import FaceSet, people_halves
    from prefiqs_core.scoring import PreFIQs

    faces = FaceSet.load(lfw, cache, ship.made["max_per_person"])
    dense, quality = reference_scores(faces, PreFIQs(load_backbone("dlib_resnet29")))
    _, b = people_halves(faces.labels, ship.made["split_seed"])
    res = check(ship, Reference.build(dense, quality, faces.labels, b), reps=300)
    assert res["n_bands"] == len(ship.bands)
    assert res["coverage"] >= 0.8, f"only {res['covered']}/{res['n_bands']} bands of half B inside A's interval"
    assert res["percentile_max_gap"] < 5
    # and B's faces spread over A's distinctiveness percentiles as A's own do (no drift between halves)
    from prefiqs_core.calibration import uniform_gap
    assert uniform_gap(ship.distinctiveness.percentile(dense[b])) < 5
    # the bands of combined: the same from the command, and B's combined values fail as A's said
    assert again.combined is not None and ship.combined is not None
    assert again.combined.detector == ship.combined.detector
    assert [(x.pairs, x.errors) for x in again.combined.bands] == [(x.pairs, x.errors) for x in ship.combined.bands]
    for x, y in zip(again.combined.bands, ship.combined.bands):
        assert (x.lo, x.hi, x.fnmr) == pytest.approx((y.lo, y.hi, y.fnmr), rel=1e-4, abs=1e-4)
    from prefiqs_core.calibration import check_combined
    from prefiqs_core.combined import combined_values, shipped_detector_reference

    scores = np.asarray(faces.detections["scores"], np.float64)
    comb = combined_values(ship, shipped_detector_reference(), quality, scores, dense)
    found = np.isfinite(comb)
    res = check_combined(ship, Reference.build(dense, np.where(found, comb, 0.0), faces.labels, b & found), reps=300)
    assert res["n_bands"] == len(ship.combined.bands)
    assert res["coverage"] >= 0.8, f"only {res['covered']}/{res['n_bands']} combined bands of half B inside A's interval"
    # and the combined bands tell faces apart more than the quality's: the worst band fails more often
    assert ship.combined.bands[0].fnmr > ship.bands[0].fnmr and ship.combined.bands[-1].fnmr < ship.bands[-1].fnmr
    shutil.rmtree(tmp_path, ignore_errors=True)
