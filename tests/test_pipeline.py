"""The streaming pipeline's worker processes."""
import subprocess
import sys
import textwrap

from prefiqs_core import assets

SCRIPT = textwrap.dedent("""
    import tempfile
    from pathlib import Path
    import cv2, numpy as np
    from PIL import Image
    from prefiqs_core.backbones.base import Preprocess
    from prefiqs_core.pipeline import ChipDataset, iter_images

    # the parent uses OpenCV's thread pool first (as alignment of big photos does) ...
    big = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
    cv2.pyrDown(big); cv2.warpAffine(big, np.eye(2, 3), (2000, 2000))
    # ... then forked workers resize non-square chips with OpenCV
    d = Path(tempfile.mkdtemp())
    for i in range(32):
        Image.fromarray(np.full((100, 120, 3), i, np.uint8)).save(d / f"c{i}.png")
    ds = ChipDataset(sorted(d.glob("*.png")), Preprocess(112), "aligned")
    print(sum(len(im.chips) for im in iter_images(ds, num_workers=2)))
""")


def test_workers_do_not_deadlock_after_the_parent_used_opencv_threads():
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=assets.REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "32"
