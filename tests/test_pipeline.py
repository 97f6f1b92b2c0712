"""The streaming pipeline: its workers (forked processes for detection, threads for chips), the
JPEG decoding it uses, and that the faster path scores exactly what the previous one did."""
import io
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prefiqs_core import assets
from prefiqs_core.alignment import resize_chip
from prefiqs_core.images import ImageError, load_rgb
from prefiqs_core.pipeline import (ChipDataset, _plain_jpeg_rgb, decode_rgb, default_workers, iter_images,
                                   score_images)

SCRIPT = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    import cv2, numpy as np
    from PIL import Image
    from prefiqs_core import assets
    from prefiqs_core.backbones.base import Preprocess
    from prefiqs_core.pipeline import ChipDataset, iter_images

    # the parent uses OpenCV's thread pool first (as alignment of big photos does) ...
    big = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
    cv2.pyrDown(big); cv2.warpAffine(big, np.eye(2, 3), (2000, 2000))
    if sys.argv[1] == "aligned":
        # ... then decoding threads resize non-square chips with OpenCV
        d = Path(tempfile.mkdtemp())
        for i in range(32):
            Image.fromarray(np.full((100, 120, 3), i, np.uint8)).save(d / f"c{i}.png")
        ds = ChipDataset(sorted(d.glob("*.png")), Preprocess(112), "aligned")
    else:
        # ... then forked detection workers decode JPEGs and warp faces to the ArcFace template with OpenCV
        photos = [assets.photos_dir() / n for n in ("obama.jpg", "obama2.jpg", "friends_t1.jpg")]
        ds = ChipDataset(photos, Preprocess(112, template="arcface112"), "detect")
    print(sum(len(im.chips) for im in iter_images(ds, num_workers=2)))
""")


@pytest.mark.parametrize("mode, chips", [("aligned", 32), ("detect", 1 + 1 + 6)])
def test_workers_do_not_deadlock_after_the_parent_used_opencv_threads(mode, chips):
    p = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=assets.REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(chips)


# ------------------------------------------------ decoding: OpenCV for plain JPEGs, Pillow for the rest

@pytest.fixture(scope="module")
def chip_files(tmp_path_factory, real_chips):
    """The real chips as the JPEGs users have: several qualities, progressive, 4:4:4, grey."""
    d = tmp_path_factory.mktemp("chips")
    paths = []
    for i, c in enumerate(real_chips):
        p = d / f"chip{i:02d}.jpg"
        kw = [dict(quality=95), dict(quality=75, progressive=True), dict(quality=90, subsampling=0)][i % 3]
        Image.fromarray(c).save(p, **kw)
        paths.append(p)
    Image.fromarray(real_chips[0]).convert("L").save(d / "grey.jpg", quality=90)
    return paths + [d / "grey.jpg"]


def test_plain_jpegs_take_the_opencv_path_with_the_same_pixels(chip_files):
    photos = sorted(assets.photos_dir().glob("*.jpg"))
    for p in chip_files + photos:
        fast = _plain_jpeg_rgb(p)
        assert fast is not None, f"{p.name} should be decoded by OpenCV"
        ref = load_rgb(p)
        assert fast.dtype == np.uint8 and fast.shape == ref.shape
        assert np.array_equal(fast, ref), f"{p.name}: OpenCV and Pillow pixels differ"


def test_what_opencv_does_not_vouch_for_goes_through_pillow(tmp_path, real_chips):
    buf = io.BytesIO()
    Image.fromarray(real_chips[0]).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) * 2 // 3])  # no end-of-image marker
    Image.fromarray(real_chips[0]).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(real_chips[0]).save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    Image.fromarray(real_chips[0]).save(tmp_path / "chip.png")
    (tmp_path / "png_named.jpg").write_bytes((tmp_path / "chip.png").read_bytes())
    for name in ("truncated.jpg", "cmyk.jpg", "rotated.jpg", "chip.png", "png_named.jpg"):
        assert _plain_jpeg_rgb(tmp_path / name) is None, name
    # ... and decode_rgb gives exactly Pillow's answer for them: the rotation applied, or the error
    for name in ("cmyk.jpg", "rotated.jpg", "chip.png", "png_named.jpg"):
        assert np.array_equal(decode_rgb(tmp_path / name), load_rgb(tmp_path / name)), name
    assert decode_rgb(tmp_path / "rotated.jpg").shape == (150, 150, 3)
    with pytest.raises(ImageError, match="cannot decode"):
        decode_rgb(tmp_path / "truncated.jpg")
    with pytest.raises(ImageError, match="no such file"):
        decode_rgb(tmp_path / "missing.jpg")


def test_threaded_aligned_scores_equal_the_previous_path(chip_files, dlib_backbone):
    """Threads + OpenCV (the CLI's default for --aligned) against Pillow in one thread, the path
    before: the same chips, so the same embeddings and quality, in input order."""
    from prefiqs_core.scoring import PreFIQs

    scorer = PreFIQs(dlib_backbone)
    ref = scorer.score(np.stack([resize_chip(load_rgb(p), 150) for p in chip_files]), batch_size=8)
    ds = ChipDataset(chip_files, dlib_backbone.preprocess, "aligned")
    rows = list(score_images(scorer, iter_images(ds, 3, 8), 8, keep_embeddings=True))
    assert [r.path for r in rows] == [str(p) for p in chip_files]
    assert np.abs(np.stack([r.dense for r in rows]) - ref.dense).max() <= 1e-6
    assert np.abs(np.stack([r.pruned for r in rows]) - ref.pruned).max() <= 1e-6
    assert np.abs(np.array([r.quality for r in rows]) - ref.quality).max() <= 1e-6


def test_threaded_decoding_keeps_order_and_reports_bad_files_per_row(chip_files, tmp_path, dlib_backbone):
    from prefiqs_core.scoring import PreFIQs

    data = chip_files[0].read_bytes()
    bad = {"truncated.jpg": data[:len(data) // 2], "empty.jpg": b"", "text.jpg": b"not an image at all"}
    for name, b in bad.items():
        (tmp_path / name).write_bytes(b)
    paths = [chip_files[0], tmp_path / "truncated.jpg", chip_files[1], tmp_path / "empty.jpg",
             tmp_path / "missing.jpg", chip_files[2], tmp_path / "text.jpg"]
    ds = ChipDataset(paths, dlib_backbone.preprocess, "aligned")
    rows = list(score_images(PreFIQs(dlib_backbone), iter_images(ds, 2, 2), 2))
    assert [Path(r.path).name for r in rows] == [p.name for p in paths]
    errors = {Path(r.path).name: r.error for r in rows if r.error}
    assert set(errors) == {"truncated.jpg", "empty.jpg", "missing.jpg", "text.jpg"}
    assert "cannot decode" in errors["truncated.jpg"] and "empty file" in errors["empty.jpg"]
    assert "no such file" in errors["missing.jpg"] and "cannot decode" in errors["text.jpg"]
    assert all(0 < r.quality <= 1 for r in rows if not r.error)


class CountingDataset(ChipDataset):
    """Counts the images started, to see how far the decoding threads work ahead of the consumer."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.started = 0
        self.lock = threading.Lock()

    def __getitem__(self, i):
        with self.lock:
            self.started += 1
        return super().__getitem__(i)


def test_decoding_threads_stay_a_few_images_ahead_on_the_cpu_and_two_batches_on_a_gpu(chip_files):
    from prefiqs_core.backbones.base import Preprocess

    paths = chip_files * 4  # more than two batches of 8
    ds = CountingDataset(paths, Preprocess(150), "aligned")
    it = iter_images(ds, 2, 8)
    next(it)
    started_cpu = ds.started
    it.close()  # stopping early must not hang: queued images are dropped
    assert 1 <= started_cpu <= 2 * 2  # two threads, twice as many images in flight at most
    ds = CountingDataset(paths, Preprocess(150), "aligned")
    it = iter_images(ds, 2, 8, model_device="cuda")  # only where the model runs; no GPU is used here
    next(it)
    for _ in range(200):  # the threads fill the two-batch window on their own
        if ds.started >= 2 * 8:
            break
        threading.Event().wait(0.05)
    it.close()
    assert ds.started == 2 * 8
    assert not [t for t in threading.enumerate() if t.name.startswith("prefiqs-decode")]


def test_default_workers_follow_the_usable_cores():
    script = ("import os\nfrom prefiqs_core.pipeline import default_workers\n"
              "cpus = sorted(os.sched_getaffinity(0))\n"
              "os.sched_setaffinity(0, cpus[:1]); print(default_workers())\n"
              "os.sched_setaffinity(0, cpus); print(default_workers())\n")
    p = subprocess.run([sys.executable, "-c", script], cwd=assets.REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    one, every = map(int, p.stdout.split())
    assert one == 1 and every == min(4, len(os.sched_getaffinity(0))) == default_workers()
