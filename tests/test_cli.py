"""The command line end to end on real photos, including the files it must skip."""
import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from prefiqs_core import assets
from prefiqs_core.cli import CSV_COLUMNS, main

ROOT = assets.REPO


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("obama.jpg", "biden.jpg", "friends_t1.jpg"):
        shutil.copy(assets.photos_dir() / name, d / name)
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    Image.fromarray(np.full((200, 200, 3), 127, np.uint8)).save(d / "grey.png")  # no face in it
    (d / "notes.txt").write_text("folders are searched for images only")
    return d


def test_score_folder_with_detection(photo_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    rc = main(["score", str(photo_dir), str(tmp_path / "missing.jpg"), "--out", str(out), "--workers", "0"])
    assert rc == 0
    rows = read_csv(out)
    # then percentile, expected_fnmr when a calibration table applies (tests/test_calibration.py)
    assert list(rows[0].keys())[:len(CSV_COLUMNS)] == CSV_COLUMNS
    ok = [r for r in rows if not r["error"]]
    bad = {r["path"].rsplit("/", 1)[1]: r["error"] for r in rows if r["error"]}
    assert len(ok) == 1 + 1 + 6  # obama, biden, six friends
    assert "cannot decode" in bad["corrupt.jpg"] and bad["grey.png"] == "no face detected"
    for r in ok:
        assert 0 <= float(r["drift"]) <= 2 and float(r["quality"]) == pytest.approx(1 - float(r["drift"]) / 2, abs=1e-5)
        x0, y0, x1, y1 = map(float, (r["x0"], r["y0"], r["x1"], r["y1"]))
        assert x1 > x0 and y1 > y0
    assert sorted(int(r["face"]) for r in ok if "friends" in r["path"]) == list(range(6))
    err = capsys.readouterr().err
    assert "missing.jpg: no such file" in err and "corrupt.jpg" in err and "scored 8 faces" in err


def test_aligned_chips_match_library_scores(tmp_path, dlib_backbone, real_chips):
    from prefiqs_core.scoring import PreFIQs

    d = tmp_path / "chips"
    d.mkdir()
    for i, c in enumerate(real_chips[:5]):
        Image.fromarray(c).save(d / f"chip{i}.png")
    out = tmp_path / "s.csv"
    assert main(["score", str(d), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0",
                 "--quiet"]) == 0
    rows = read_csv(out)
    expected = PreFIQs(dlib_backbone).score(real_chips[:5]).drift
    assert np.allclose([float(r["drift"]) for r in rows], expected, atol=1e-5)
    assert all(r["x0"] == "" for r in rows)


def test_aligned_chips_decoded_by_threads_score_as_in_one_thread(tmp_path, real_chips):
    # The default for --aligned: decoding threads and OpenCV for JPEGs; --workers 0: the caller's thread
    d = tmp_path / "chips"
    d.mkdir()
    for i, c in enumerate(real_chips):
        Image.fromarray(c).save(d / f"chip{i:02d}.jpg", quality=90)
    (d / "chip99_cut.jpg").write_bytes((d / "chip00.jpg").read_bytes()[:3000])
    for workers in ("0", None):
        args = ["score", str(d), "--aligned", "--out", str(tmp_path / f"{workers}.csv"), "--quiet",
                "--batch-size", "4"] + (["--workers", workers] if workers else [])
        assert main(args) == 0
    one, threads = read_csv(tmp_path / "0.csv"), read_csv(tmp_path / "None.csv")
    assert one == threads and len(one) == len(real_chips) + 1
    assert "cannot decode" in one[-1]["error"] and all(r["quality"] for r in one[:-1])


def test_nothing_scorable_exits_non_zero(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    rc = main(["score", str(tmp_path / "empty.png"), "--out", str(tmp_path / "s.csv"), "--workers", "0", "--quiet"])
    assert rc == 1
    assert read_csv(tmp_path / "s.csv")[0]["error"].endswith("empty file")
    assert main(["score", str(tmp_path / "nothing_here"), "--out", str(tmp_path / "t.csv")]) == 1


@pytest.mark.parametrize("args,msg", [
    (["--sparsity", "1.5"], "strictly between 0 and 1"),
    (["--sparsity", "0"], "strictly between 0 and 1"),
    (["--sparsity", "nan"], "strictly between 0 and 1"),
    (["--backbone", "iresnet50"], "needs a checkpoint"),
    (["--batch-size", "0"], "batch-size"),
    (["--workers", "-1"], "--workers must be 0 or more"),
])
def test_bad_options_give_clear_errors(tmp_path, args, msg, capsys):
    shutil.copy(assets.photos_dir() / "obama.jpg", tmp_path / "obama.jpg")
    try:
        rc = main(["score", str(tmp_path / "obama.jpg"), "--out", str(tmp_path / "s.csv"), *args])
    except SystemExit as e:
        rc, text = 1, str(e)
    else:
        text = capsys.readouterr().err
    assert rc != 0 and msg in text


def test_module_entry_point_with_workers_and_progress(tmp_path):
    out = tmp_path / "s.csv"
    p = subprocess.run([sys.executable, "-m", "prefiqs_core", "score", str(assets.photos_dir()), "--out", str(out),
                        "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "img/s" in p.stderr or "s/img" in p.stderr  # tqdm's progress bar went to stderr
    rows = read_csv(out)
    assert len([r for r in rows if not r["error"]]) >= 10
