"""prefiqs_core's own ONNX converter: equal to ONNX's reference evaluator and to onnx2torch.

SFace goes through it, so the ``sface`` backbone needs the ``onnx`` package only. Graphs with other
ops fall back to onnx2torch when it is installed and say what to install when it is not.
"""
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from prefiqs_core.backbones import onnx_model
from prefiqs_core.backbones.base import Preprocess, prunable_modules
from prefiqs_core.trunk import split_points


def _residual_model(extra_op: str | None = None) -> onnx.ModelProto:
    """Every op the converter handles, in an iResNet-like shape: input normalisation, conv with
    asymmetric padding, BN, per-channel PReLU, a strided conv with bias, a residual add of two
    activations, ReLU, division by a constant, global pooling, Reshape with a 0, MatMul and a 2-D BN."""
    rng = np.random.default_rng(0)

    def t(name, *shape, lo=-0.5, hi=0.5):
        return numpy_helper.from_array(rng.uniform(lo, hi, shape).astype(np.float32), name)

    inits = [
        numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
        numpy_helper.from_array(np.array(0.0078125, np.float32), "scale"),
        t("w1", 6, 3, 3, 3), t("g1", 6, lo=0.5, hi=1.5), t("b1", 6), t("m1", 6), t("v1", 6, lo=0.5, hi=2),
        t("slope", 6, 1, 1, lo=0.0, hi=0.3),
        t("w2", 6, 6, 3, 3), t("c2", 6),
        t("wskip", 6, 6, 1, 1),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
        t("fc", 6, 5),
        t("g3", 5, lo=0.5, hi=1.5), t("b3", 5), t("m3", 5), t("v3", 5, lo=0.5, hi=2),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["xc"]),
        helper.make_node("Mul", ["xc", "scale"], ["xs"]),
        helper.make_node("Conv", ["xs", "w1"], ["c1"], pads=[0, 1, 2, 1]),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"], epsilon=1e-3),
        helper.make_node("PRelu", ["n1", "slope"], ["p1"]),
        helper.make_node("Conv", ["p1", "w2", "c2"], ["c2o"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "wskip"], ["skip"], strides=[2, 2]),
        helper.make_node("Add", ["c2o", "skip"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r"]),
        helper.make_node("Div", ["r", "two"], ["half"]),
        helper.make_node("GlobalAveragePool", ["half"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["flat"]),
        helper.make_node("Identity", ["flat"], ["same"]),
        helper.make_node("MatMul", ["same", "fc"], ["e"]),
        helper.make_node("BatchNormalization", ["e", "g3", "b3", "m3", "v3"], ["y" if extra_op is None else "y0"]),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["y0"], ["y"]))
    graph = helper.make_graph(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _x(n=4):
    return np.random.default_rng(1).uniform(0, 255, (n, 3, 16, 16)).astype(np.float32)


def test_every_supported_op_matches_the_onnx_reference(tmp_path):
    model = _residual_model()
    path = tmp_path / "res.onnx"
    onnx.save(model, str(path))
    bb = onnx_model.load_onnx(path, Preprocess(size=16))
    assert bb.extra["converter"] == "prefiqs"
    assert [type(m).__name__ for _, m in prunable_modules(bb.net)] == ["Conv2d", "Conv2d", "Conv2d", "Linear"]
    ref = ReferenceEvaluator(model).run(None, {"x": _x()})[0]
    with torch.no_grad():
        ours = bb.net(torch.from_numpy(_x())).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    # the skip branch's conv runs while the main branch is live: never a split point
    assert split_points(bb.net) == ["c1", "c2o", "e"]


def test_sface_equals_onnx2torch_layer_for_layer(monkeypatch):
    """The same modules, names, order and outputs as onnx2torch's conversion of the same file, so
    split points (``from:conv_14_dw_conv2d``) and pruning masks mean the same as before."""
    pytest.importorskip("onnx2torch", reason="onnx2torch is the reference here (requirements-dev.txt)")
    ours = onnx_model.load_sface()
    assert ours.extra["converter"] == "prefiqs"
    from prefiqs_core.backbones import onnx_convert

    def refuse(model):
        raise onnx_convert.UnsupportedOps(["(forced)"])
    monkeypatch.setattr(onnx_convert, "convert", refuse)
    theirs = onnx_model.load_sface()
    assert theirs.extra["converter"] == "onnx2torch"

    def layers(net):
        return [(n, type(m).__name__, tuple(m.weight.shape)) for n, m in net.named_modules()
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers(ours.net) == layers(theirs.net)
    assert split_points(ours.net) == split_points(theirs.net)
    x = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, (6, 3, 112, 112)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(ours.net(x), theirs.net(x), rtol=0, atol=1e-5)


def test_sface_needs_no_onnx2torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # as if not installed
    from prefiqs_core.backbones import load_backbone

    bb = load_backbone("sface")
    assert bb.embedding_dim == 128 and bb.extra["converter"] == "prefiqs"


def test_other_ops_say_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "softmax.onnx"
    onnx.save(_residual_model("Softmax"), str(path))
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    with pytest.raises(ModuleNotFoundError, match=r"Softmax.*pip install onnx2torch"):
        onnx_model.load_onnx(path, Preprocess(size=16))


def test_other_ops_fall_back_to_onnx2torch(tmp_path):
    pytest.importorskip("onnx2torch", reason="the fallback converter (requirements-dev.txt)")
    model = _residual_model("Softmax")
    path = tmp_path / "softmax.onnx"
    onnx.save(model, str(path))
    bb = onnx_model.load_onnx(path, Preprocess(size=16))
    assert bb.extra["converter"] == "onnx2torch"
    ref = ReferenceEvaluator(model).run(None, {"x": _x()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(bb.net(torch.from_numpy(_x())).numpy(), ref, rtol=1e-4, atol=1e-5)

