"""dlib ResNet-29: the project's own .dat parser and torch module against dlib itself."""
import numpy as np
import pytest
import torch

from prefiqs_core import assets
from prefiqs_core.dlib_format import DlibFormatError, parse_dlib_resnet


def test_parser_counts_and_shapes():
    w = parse_dlib_resnet(assets.dlib_recognition_model())
    assert len(w.convs) == 29 and len(w.affines) == 29
    assert w.convs[0].weight.shape == (32, 3, 7, 7) and w.convs[0].stride == (2, 2)
    assert w.convs[-1].weight.shape == (256, 256, 3, 3)
    assert w.fc_weight.shape == (128, 256)
    assert [c.weight.shape[0] for c in w.convs].count(256) == 8
    assert sum(c.stride == (2, 2) for c in w.convs) == 5  # stem + 4 down-sampling blocks
    assert np.allclose(w.input_mean_rgb, (122.782, 117.001, 104.298), atol=1e-3)
    assert w.num_parameters == 5_614_592
    assert all(np.isfinite(c.weight).all() for c in w.convs)


def test_parser_refuses_other_files(tmp_path):
    bad = tmp_path / "x.dat"
    bad.write_bytes(b"not a dlib network at all" * 10)
    with pytest.raises(DlibFormatError, match="not a dlib"):
        parse_dlib_resnet(bad)
    with pytest.raises(FileNotFoundError):
        parse_dlib_resnet(tmp_path / "missing.dat")
    # the 5-point shape predictor is a dlib file but not a network
    with pytest.raises(DlibFormatError):
        parse_dlib_resnet(assets.dlib_shape_predictor_5())


def test_embeddings_equal_dlib_on_real_chips(dlib_backbone, real_chips):
    """dlib's own compute_face_descriptor is the oracle: max-abs difference <= 1e-4."""
    import dlib

    rec = dlib.face_recognition_model_v1(str(assets.dlib_recognition_model()))
    ref = np.stack([np.array(rec.compute_face_descriptor(c)) for c in real_chips])
    with torch.inference_mode():
        ours = dlib_backbone.net(dlib_backbone.prepare(real_chips)).numpy()
    assert ours.shape == (len(real_chips), 128)
    assert np.abs(ours - ref).max() <= 1e-4


def test_identity_sanity(dlib_backbone):
    """Obama's three photos are closer to each other than to Biden (dlib's 0.6 threshold)."""
    from prefiqs_core.pipeline import ChipDataset, iter_images

    paths = [assets.photos_dir() / f for f in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")]
    chips = np.stack([im.chips[0] for im in iter_images(ChipDataset(paths, dlib_backbone.preprocess), 0)])
    with torch.inference_mode():
        e = dlib_backbone.net(dlib_backbone.prepare(chips)).numpy()
    d = np.linalg.norm(e[:, None] - e[None], axis=2)
    assert max(d[0, 1], d[0, 2], d[1, 2]) < 0.6 < min(d[3, :3])


def test_prepare_rejects_wrong_chips(dlib_backbone):
    with pytest.raises(ValueError, match="150x150"):
        dlib_backbone.prepare(np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        dlib_backbone.prepare(np.zeros((1, 150, 150), np.uint8))
