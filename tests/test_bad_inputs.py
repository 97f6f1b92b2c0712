"""Bad input at the engine and CLI levels: one clear message per file, and the rest of the run goes on.

Every odd image is made from the real photos (``make_odd_images``; the plugin tests reuse it), so a
decoder that quietly mangles a format shows up as a face that is no longer found.
"""
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prefiqs_core import assets
from prefiqs_core.alignment import DlibDetector, get_template
from prefiqs_core.checkpoints import CheckpointError, check_user_file
from prefiqs_core.cli import main
from prefiqs_core.images import ImageError, load_rgb
from prefiqs_core.pipeline import ChipDataset, detect_bounded, iter_images, score_images

# name -> (what the run must report: "face" = scored, else a substring of the error)
EXPECTED = {
    "corrupt.jpg": "cannot decode",
    "truncated.png": "cannot decode",
    "empty.jpg": "empty file",
    "missing.jpg": "no such file",
    "gray.jpg": "face",
    "rgba.png": "face",
    "gray16.png": "face",
    "rgb16.png": "face",
    "cmyk.jpg": "face",
    "exif_rotated.jpg": "face",
    "tiny_1x1.png": "too small",
    "huge_10000.jpg": "face",
    "nonface.png": "no face detected",
    "face_too_small.png": "no face detected",
}


def make_odd_images(d: Path) -> dict:
    """Write every odd image of :data:`EXPECTED` into ``d`` (from obama.jpg and astronaut.png)."""
    d.mkdir(parents=True, exist_ok=True)
    photo = Image.open(assets.photos_dir() / "obama.jpg").convert("RGB")
    rgb = np.asarray(photo)
    p = {name: d / name for name in EXPECTED}
    p["corrupt.jpg"].write_bytes((assets.photos_dir() / "obama.jpg").read_bytes()[:20] + b"\x00garbage" * 64)
    photo.save(d / "full.png")
    data = (d / "full.png").read_bytes()
    p["truncated.png"].write_bytes(data[:len(data) // 2])
    (d / "full.png").unlink()
    p["empty.jpg"].write_bytes(b"")
    photo.convert("L").save(p["gray.jpg"], quality=95)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 200))
    rgba.save(p["rgba.png"])
    Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257).save(p["gray16.png"])
    import cv2  # Pillow cannot write 48-bit RGB PNGs; OpenCV can
    cv2.imwrite(str(p["rgb16.png"]), (rgb.astype(np.uint16) * 257)[..., ::-1])
    photo.convert("CMYK").save(p["cmyk.jpg"], quality=95)
    # Pixels stored turned 90° counter-clockwise, with Orientation 6 ("rotate 90° clockwise to view")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(p["exif_rotated.jpg"], quality=95, exif=exif.tobytes())
    Image.new("RGB", (1, 1), (128, 128, 128)).save(p["tiny_1x1.png"])
    # 10,000 x 10,000: the photo scaled up 8.8x (aspect kept) on a grey canvas
    canvas = Image.new("RGB", (10000, 10000), (90, 90, 90))
    canvas.paste(photo.resize((8003, 10000), Image.Resampling.BILINEAR), (998, 0))
    canvas.save(p["huge_10000.jpg"], quality=80)
    with Image.open(assets.photos_dir() / "astronaut.png") as im:
        im.convert("RGB").crop((300, 300, 512, 512)).save(p["nonface.png"])  # rocket and sky, no face
    photo.resize((36, 45), Image.Resampling.BILINEAR).save(p["face_too_small.png"])  # a face, too few pixels
    return {k: str(v) for k, v in p.items()}


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return make_odd_images(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def engine_rows(odd, dlib_backbone):
    """The engine's streaming path (ChipDataset → score_images) over all odd files in one run."""
    from prefiqs_core.scoring import PreFIQs

    scorer = PreFIQs(dlib_backbone)
    paths = [odd[name] for name in EXPECTED]
    rows = list(score_images(scorer, iter_images(ChipDataset(paths, dlib_backbone.preprocess, "detect"), 0),
                             batch_size=4))
    return {Path(r.path).name: r for r in rows if r.face <= 0}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_engine_reports_each_odd_file(engine_rows, name):
    row = engine_rows[name]
    if EXPECTED[name] == "face":
        assert row.error is None and 0 < row.quality <= 1 and math.isfinite(row.drift)
    else:
        assert row.quality is None and row.drift is None and EXPECTED[name] in row.error


def test_engine_scores_of_converted_formats_match_the_original(engine_rows):
    # Format conversions must not change the face: same chip, nearly the same score as the RGB JPEG
    ref = engine_rows["rgb16.png"].quality  # lossless 16 -> 8 bit round trip of obama.jpg's pixels
    for name in ("rgba.png", "cmyk.jpg", "exif_rotated.jpg", "huge_10000.jpg"):
        assert engine_rows[name].quality == pytest.approx(ref, abs=0.03), name


def test_exif_rotation_is_applied_and_the_detector_needs_it(odd):
    raw = np.asarray(Image.open(odd["exif_rotated.jpg"]).convert("RGB"))
    upright = load_rgb(odd["exif_rotated.jpg"])
    assert raw.shape == (910, 1137, 3) and upright.shape == (1137, 910, 3)
    det = DlibDetector()
    faces = det.detect(upright)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box  # where the face is in the upright photo
    ref = det.detect(load_rgb(assets.photos_dir() / "obama.jpg"))[0].box
    assert np.allclose((x0, y0, x1, y1), ref, atol=12)
    assert det.detect(raw) == [], "the sideways pixels alone should not give a frontal face"


def test_grayscale_and_16bit_decode_to_rgb(odd):
    gray = load_rgb(odd["gray.jpg"])
    assert gray.shape == (1137, 910, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    g16 = load_rgb(odd["gray16.png"])
    assert Image.open(odd["gray16.png"]).mode == "I;16" and g16.dtype == np.uint8
    assert abs(int(g16.mean()) - int(gray.mean())) <= 2  # scaled 65535 -> 255, not clipped
    rgba = load_rgb(odd["rgba.png"])
    assert rgba.shape[2] == 3 and rgba.min() >= 55  # alpha composited on white, not on black


def test_huge_image_is_detected_on_a_bounded_copy_and_cut_at_full_resolution(odd, dlib_backbone):
    img = load_rgb(odd["huge_10000.jpg"])
    assert img.shape == (10000, 10000, 3)
    calls = []

    class Spy(DlibDetector):
        def detect(self, image_rgb):
            calls.append(image_rgb.shape)
            return super().detect(image_rgb)

    faces = detect_bounded(Spy(), img)
    assert calls == [(2560, 2560, 3)]
    best = faces[0]
    assert 3500 < best.box[0] < 5000 and best.box[2] - best.box[0] > 1500  # in full-resolution pixels
    assert best.shape is not None  # still dlib's own chip
    from prefiqs_core.alignment import align_face
    chip = align_face(img, best, get_template("dlib150"))
    assert chip.shape == (150, 150, 3)


def test_load_rgb_errors_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_rgb(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a regular file"):
        load_rgb(tmp_path)


def test_aligned_mode_scores_a_non_face_without_error(odd, dlib_backbone):
    # With --aligned the input is trusted to be a face chip: a non-face still gets a number
    from prefiqs_core.scoring import PreFIQs

    im = next(iter_images(ChipDataset([odd["nonface.png"]], dlib_backbone.preprocess, "aligned"), 0))
    assert im.error is None
    q = PreFIQs(dlib_backbone).score(im.chips).quality
    assert 0 < q[0] < 1


# ---------------------------------------------------------------- the CLI over the same files

def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cli_rows(odd, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "scores.csv"
    rc = main(["score", *[odd[n] for n in EXPECTED], "--out", str(out), "--workers", "0", "--quiet",
               "--batch-size", "4"])
    assert rc == 0
    return {Path(r["path"]).name: r for r in _read(out) if int(r["face"]) <= 0}


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "missing.jpg"])
def test_cli_row_for_each_odd_file(cli_rows, name):
    row = cli_rows[name]
    if EXPECTED[name] == "face":
        assert row["error"] == "" and 0 < float(row["quality"]) <= 1
    else:
        assert row["quality"] == "" and EXPECTED[name] in row["error"]


def test_cli_reports_missing_file_and_keeps_going(cli_rows, capsys):
    # missing files are reported on stderr by expand_paths and never reach the CSV
    assert "missing.jpg" not in cli_rows and len(cli_rows) == len(EXPECTED) - 1


def test_cli_huge_image_box_is_in_full_resolution_pixels(cli_rows):
    r = cli_rows["huge_10000.jpg"]
    assert float(r["x1"]) - float(r["x0"]) > 1500


@pytest.mark.parametrize("value", ["1", "-0.2"])
def test_cli_sparsity_one_and_negative(tmp_path, value, odd):
    with pytest.raises(SystemExit, match="strictly between 0 and 1"):
        main(["score", odd["gray.jpg"], "--out", str(tmp_path / "s.csv"), "--sparsity", value])


def _state_dict_file(tmp_path, kind):
    # Small files: the loader reports what is wrong before it would need the other ~24M weights
    if kind == "missing_keys":
        sd = {"conv1.weight": torch.zeros(64, 3, 3, 3)}
    elif kind == "wrong_shapes":
        sd = {"conv1.weight": torch.zeros(64, 3, 3, 3), "fc.weight": torch.zeros(256, 7)}
    elif kind == "pickle":
        sd = {"conv1.weight": torch.zeros(64, 3, 3, 3), "net": torch.nn.Identity()}
    elif kind == "not_a_checkpoint":
        p = tmp_path / "weights.pth"
        p.write_text("this is a README, not weights\n")
        return p
    p = tmp_path / "weights.pth"
    torch.save(sd, p)
    return p


@pytest.mark.parametrize("kind,msg", [
    ("missing_keys", "missing keys"),
    ("wrong_shapes", "fc.weight: expected shape"),
    ("pickle", "refused"),
    ("not_a_checkpoint", "not a torch checkpoint"),
])
def test_cli_bad_checkpoints_give_clear_errors(tmp_path, kind, msg, capsys, odd):
    ckpt = _state_dict_file(tmp_path, kind)
    rc = main(["score", odd["gray.jpg"], "--out", str(tmp_path / "s.csv"), "--backbone", "iresnet18",
               "--checkpoint", str(ckpt), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and msg in err and "Traceback" not in err


def test_cli_dlib_backbone_given_a_foreign_file(tmp_path, capsys, odd):
    bad = tmp_path / "model.dat"
    bad.write_bytes(b"\x01\x02 definitely not dlib")
    rc = main(["score", odd["gray.jpg"], "--out", str(tmp_path / "s.csv"), "--checkpoint", str(bad), "--quiet"])
    assert rc == 1 and "model.dat" in capsys.readouterr().err


# ---------------------------------------------------------------- paths typed by a user

def test_check_user_file_accepts_a_readable_weights_file(tmp_path):
    p = tmp_path / "w.pth"
    p.write_bytes(b"x" * 10)
    assert check_user_file(str(p)) == p.resolve()
    link = tmp_path / "link.pth"
    link.symlink_to(p)
    assert check_user_file(link) == p.resolve()


@pytest.mark.parametrize("case,msg", [
    ("missing", "not found"), ("folder", "not a regular file"), ("fifo", "not a regular file"),
    ("device", "not a regular file"), ("empty", "empty"), ("too_large", "too large"),
    ("nul", "NUL"), ("blank", "empty"), ("not_str", "must be a string"), ("shell", "not found"),
    ("unreadable", "not readable"), ("outside", "outside the allowed folders"),
])
def test_check_user_file_refusals(tmp_path, case, msg, monkeypatch):
    import os

    p = tmp_path / "w.pth"
    p.write_bytes(b"x" * 100)
    kwargs = {}
    if case == "missing":
        path = tmp_path / "nope.pth"
    elif case == "folder":
        path = tmp_path
    elif case == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif case == "device":
        path = "/dev/zero"
    elif case == "empty":
        path = tmp_path / "e.pth"
        path.write_bytes(b"")
    elif case == "too_large":
        path, kwargs = p, dict(max_bytes=50)
    elif case == "nul":
        path = str(p) + "\x00.png"
    elif case == "blank":
        path = "   "
    elif case == "not_str":
        path = 42
    elif case == "shell":
        # shell syntax is just an odd file name: never run, so nothing is created
        marker = tmp_path / "pwned"
        path = f"{p}; touch {marker}"
    elif case == "unreadable":
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root reads anything; fake it
        else:
            p.chmod(0)
        path = p
    elif case == "outside":
        other = tmp_path / "models"
        other.mkdir()
        monkeypatch.setenv("PREFIQS_CHECKPOINT_DIRS", str(other))
        path = p
    with pytest.raises(CheckpointError, match=msg):
        check_user_file(path, **kwargs)
    if case == "shell":
        assert not (tmp_path / "pwned").exists()
