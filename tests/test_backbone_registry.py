"""The backbone registry and wrapping any torch module."""
import numpy as np
import pytest
import torch
from torch import nn

from prefiqs_core.backbones import NAMES, from_module, load_backbone
from prefiqs_core.backbones.base import Preprocess
from prefiqs_core.checkpoints import CheckpointError
from prefiqs_core.pruning import PruneSpec
from prefiqs_core.scoring import PreFIQs


def test_unknown_backbone_lists_the_names():
    with pytest.raises(ValueError, match="dlib_resnet29"):
        load_backbone("resnet9000")
    assert {"dlib_resnet29", "sface", "iresnet100", "magface_iresnet100"} <= set(NAMES)


def test_registry_loads_real_networks():
    sface = load_backbone("sface")
    assert sface.preprocess.size == 112 and sface.preprocess.template == "arcface112"
    assert sface.embedding_dim == 128
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_backbone("iresnet50")  # no weights ship offline: a clear message, not random weights
    with pytest.raises(ValueError, match="preprocess"):
        load_backbone("onnx", checkpoint="model.onnx")


def test_any_module_with_its_preprocessing(real_chips):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 5, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 32))
    pre = Preprocess(size=150, channels="BGR", mean=(127.5,) * 3, std=(127.5,) * 3, template="dlib150")
    bb = from_module(net, pre, name="tiny")
    assert bb.embedding_dim == 32
    out = PreFIQs(bb, PruneSpec("layerwise_l1", 0.3)).score(real_chips[:4])
    assert out.dense.shape == (4, 32) and np.isfinite(out.drift).all() and (out.drift > 0).all()
    # BGR really is applied: the same chips with channels swapped give the RGB module's input
    x_bgr = bb.prepare(real_chips[:1])
    x_rgb = from_module(net, Preprocess(150, "RGB", (127.5,) * 3, (127.5,) * 3, "dlib150")).prepare(real_chips[:1])
    assert torch.equal(x_bgr, x_rgb.flip(1))
    with pytest.raises(ValueError, match="nothing for PreFIQs to prune"):
        from_module(nn.Sequential(nn.Flatten()), pre)


def test_preprocess_validation():
    with pytest.raises(ValueError, match="RGB"):
        Preprocess(112, "GBR")
    with pytest.raises(ValueError, match="positive"):
        Preprocess(0)


def test_onnx_backbones_say_what_is_missing(monkeypatch):
    import sys

    from prefiqs_core.backbones import load_backbone

    for mod in ("prefiqs_core.backbones.onnx_model", "prefiqs_core.backbones.onnx_convert"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ModuleNotFoundError, match="backbone 'sface' needs the onnx package.*pip install onnx"):
        load_backbone("sface")
