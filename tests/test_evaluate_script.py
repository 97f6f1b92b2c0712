"""benchmarks/evaluate.py end to end in --quick mode: a tiny insightface-style .bin written here
from the real face chips (ArcFace 112 framing, JPEG bytes, a pickle of (bins, issame)), plus the
built-in real-face, speed and memory sections."""
import io
import pickle

from PIL import Image


def write_tiny_bin(path, chips):
    """8 genuine pairs (a chip and its blurred copy) and 8 impostor pairs (neighbouring faces)."""
    from prefiqs_core.alignment import convert_chip
    from prefiqs_core.evaluation.degrade import blur

    def jpeg(chip):
        buf = io.BytesIO()
        Image.fromarray(convert_chip(chip, "dlib150", "arcface112")).save(buf, "JPEG", quality=95)
        return buf.getvalue()

    bins, issame = [], []
    for i in range(8):
        bins += [jpeg(chips[i]), jpeg(blur(chips[i], 2.0))]
        issame.append(True)
    for i in range(8):  # faces 0..8 are nine different people (the obama photos come later)
        bins += [jpeg(chips[i]), jpeg(chips[i + 1])]
        issame.append(False)
    path.write_bytes(pickle.dumps((bins, issame), protocol=4))


def test_quick_run_prints_every_table(tmp_path, real_chips, run_evaluate):
    write_tiny_bin(tmp_path / "tiny.bin", real_chips)
    out = tmp_path / "out"
    text = run_evaluate("--quick", "--builtin", "--bin", tmp_path / "tiny.bin", "--out", out)

    # the paper-style table, both conventions, with the unreachable FMR said out loud
    assert "### pAUC per benchmark, per_level" in text and "### pAUC per benchmark, fixed" in text
    assert "| tiny @20% | tiny @30% |" in text
    assert "8 genuine / 8 impostor pairs" in text
    assert "FMR 0.001 is unreachable with 8 impostor pairs" in text
    for method in ("PreFIQs (default", "EmbeddingNorm", "Sharpness", "Random"):
        assert f"| {method}" in text

    # the built-in sections
    assert "### Real faces, synthetic degradations" in text
    assert "intra-identity variation is synthetic" in text
    assert "clean > degraded (all)" in text and "face/non-face AUROC" in text
    assert "### Speed and memory" in text and "| dense forward (reference) |" in text

    rows = [line for line in text.splitlines() if line.startswith("| PreFIQs (default")]
    assert len(rows) == 5  # 2 paper tables + EDC table + ranking table + speed table
    vals = [float(v) for v in rows[0].strip("|").split("|")[1:]]
    assert all(0 <= v <= 1 for v in vals)

    assert (out / "evaluate.md").read_text().strip() == text.strip()
    for name in ("tiny_fixed.png", "tiny_per_level.png", "real_faces_fixed.png", "real_faces_per_level.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_flip_embedding_is_a_unit_vector_of_both_views(dlib_backbone, real_chips):
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from evaluate import embed

    chips = real_chips[:5]
    both = embed(dlib_backbone, chips, flip=True)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-6)
    d = both.shape[1] // 2
    np.testing.assert_allclose(both[:, :d] * np.sqrt(2), embed(dlib_backbone, chips), atol=1e-6)
    np.testing.assert_allclose(both[:, d:] * np.sqrt(2), embed(dlib_backbone, chips[:, :, ::-1].copy()), atol=1e-6)
