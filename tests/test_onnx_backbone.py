"""ONNX backbones: SFace converted to torch must equal OpenCV's own SFace on real faces.

The oracle is ``cv2.FaceRecognizerSF`` on the real demo photos: YuNet finds the faces, OpenCV's
``alignCrop`` makes the 112x112 chips, and ``feature()`` gives the reference embeddings. Missing
assets make these tests fail (``assets.require`` says how to fetch them); nothing is skipped.
"""
import copy

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from prefiqs_core import assets
from prefiqs_core.backbones.base import Preprocess, prunable_modules, sha256_of
from prefiqs_core.backbones.onnx_model import SFACE_PREPROCESS, dequantize, load_onnx, load_sface

TOL = 1e-4  # max-abs difference allowed against OpenCV (embeddings have entries of size ~1-4)


# ------------------------------------------------------------------------------------------
# fixtures: the converted model, and OpenCV's view of the real faces
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sface():
    return load_sface()


def _opencv_recognizer() -> "cv2.FaceRecognizerSF":
    """``cv2.FaceRecognizerSF`` on the shipped SFace model.

    OpenCV 4 runs the file as it is. The file also declares its original float weights as graph
    inputs that no node reads; OpenCV 5's default DNN engine takes those for extra network inputs
    and refuses to run ``feature()``. Only then do we hand OpenCV the same model with just those
    dangling declarations removed (no node, weight or attribute changes);
    ``test_sface_matches_opencv_dnn_on_unmodified_file`` covers the file byte for byte there.
    """
    path = str(assets.sface_model())
    recognizer = cv2.FaceRecognizerSF.create(path, "")
    try:
        recognizer.feature(np.zeros((112, 112, 3), np.uint8))
        return recognizer
    except cv2.error:
        pass
    model = onnx.load(path)
    used = {name for node in model.graph.node for name in node.input}
    live = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(live)
    buf = np.frombuffer(model.SerializeToString(), np.uint8)
    return cv2.FaceRecognizerSF.create("onnx", buf, np.zeros(0, np.uint8))


@pytest.fixture(scope="module")
def faces():
    """Every face YuNet finds in the demo photos: dicts of photo, score, BGR chip, OpenCV feature."""
    from prefiqs_core.images import load_rgb

    detector = cv2.FaceDetectorYN.create(str(assets.yunet_model()), "", (320, 320))
    recognizer = _opencv_recognizer()
    out = []
    for photo in assets.demo_photos():
        bgr = np.ascontiguousarray(load_rgb(photo)[..., ::-1])
        detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, dets = detector.detect(bgr)
        for det in [] if dets is None else dets:
            chip = recognizer.alignCrop(bgr, det)
            out.append(dict(photo=photo.name, score=float(det[-1]), chip=chip,
                            feature=recognizer.feature(chip)[0].copy()))
    return out


def _embed(backbone, bgr_chips) -> np.ndarray:
    """Our embeddings of OpenCV's BGR chips (``prepare`` takes RGB, as the contract says)."""
    rgb = np.stack([c[..., ::-1] for c in bgr_chips])
    with torch.no_grad():
        return backbone.net(backbone.prepare(rgb)).numpy()


# ------------------------------------------------------------------------------------------
# SFace against OpenCV
# ------------------------------------------------------------------------------------------

def test_sface_matches_opencv_feature(sface, faces):
    assert len(faces) >= 8, f"expected at least 8 faces in the demo photos, found {len(faces)}"
    ours = _embed(sface, [f["chip"] for f in faces])
    diffs = np.abs(ours - np.stack([f["feature"] for f in faces])).max(axis=1)
    for f, d in zip(faces, diffs):
        assert d <= TOL, f"{f['photo']} (score {f['score']:.2f}): max-abs diff {d:.2e} vs OpenCV"
    print(f"\nSFace vs cv2.FaceRecognizerSF.feature: {len(faces)} faces, max-abs diff {diffs.max():.2e}")


def test_sface_matches_opencv_dnn_on_unmodified_file(sface, faces):
    """Same check with the file exactly as shipped, through ``cv2.dnn`` directly.

    ``feature()`` is ``blobFromImage(chip, 1.0, (112, 112), 0, swapRB=True)`` then ``forward()``
    (opencv modules/objdetect/src/face_recognize.cpp); we call those two steps ourselves. OpenCV 5
    needs its classic engine for this file (see ``_opencv_recognizer``); OpenCV 4 has only that one.
    """
    engine = (cv2.dnn.ENGINE_CLASSIC,) if hasattr(cv2.dnn, "ENGINE_CLASSIC") else ()
    net = cv2.dnn.readNetFromONNX(str(assets.sface_model()), *engine)
    ours = _embed(sface, [f["chip"] for f in faces])
    for f, emb in zip(faces, ours):
        net.setInput(cv2.dnn.blobFromImage(f["chip"], 1.0, (112, 112), (0, 0, 0), True, False))
        ref = net.forward()[0]
        assert np.abs(emb - ref).max() <= TOL, f["photo"]


def test_sface_preprocess_is_rgb_0_255(sface, faces):
    """Feeding the chip in the wrong colour order must be visibly wrong: the order matters."""
    assert sface.preprocess == SFACE_PREPROCESS
    assert sface.preprocess.channels == "RGB" and sface.preprocess.size == 112
    f = faces[0]
    wrong = _embed(sface, [f["chip"][..., ::-1]])[0]  # BGR passed where RGB is expected
    assert np.abs(wrong - f["feature"]).max() > 100 * TOL


# ------------------------------------------------------------------------------------------
# the converted module
# ------------------------------------------------------------------------------------------

def test_sface_module_has_float_conv_and_linear_layers(sface):
    layers = prunable_modules(sface.net)
    convs = [m for _, m in layers if isinstance(m, torch.nn.Conv2d)]
    linears = [m for _, m in layers if isinstance(m, torch.nn.Linear)]
    assert (len(convs), len(linears)) == (27, 1)  # SFace: 27 convolutions, then the fc1 head
    assert linears[0].out_features == sface.embedding_dim == 128
    # No quantised leftovers: no integer weights or quantisation modules.
    for name, t in sface.net.state_dict().items():
        assert t.dtype not in (torch.int8, torch.uint8, torch.int32), name
    assert all(p.dtype == torch.float32 for p in sface.net.parameters())
    assert not any("quant" in type(m).__name__.lower() for m in sface.net.modules())
    assert sface.extra["dequantized_weights"] == 29  # 27 conv weights + fc weight + fc bias
    assert not sface.net.training
    assert sface.name == "sface"
    assert sface.source_sha256 == sha256_of(assets.sface_model())


def test_sface_batch_size_does_not_change_results(sface, faces):
    chips = [f["chip"] for f in faces[:7]]
    assert len(chips) == 7
    batched = _embed(sface, chips)
    single = np.concatenate([_embed(sface, [c]) for c in chips])
    # float32 sums are ordered differently per batch shape: 6e-6 here on entries up to ~4, where one
    # float32 step is 4.8e-7; the bound leaves room for other CPUs' kernels
    np.testing.assert_allclose(batched, single, rtol=0, atol=TOL)
    np.testing.assert_array_equal(batched, _embed(sface, chips))  # deterministic


def test_sface_identity_sanity(sface, faces):
    """The three Obama photos resemble each other more than any of them resembles Biden."""
    best = {}
    for f in faces:  # the most confident face of each photo
        if f["photo"] not in best or f["score"] > best[f["photo"]]["score"]:
            best[f["photo"]] = f
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
    emb = _embed(sface, [best[n]["chip"] for n in names])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cos = emb @ emb.T
    same = [cos[0, 1], cos[0, 2], cos[1, 2]]
    other = cos[:3, 3]
    assert min(same) > max(other), f"Obama-Obama {same} vs Obama-Biden {other}"


def test_sface_works_with_torch_func_and_any_device(sface):
    net = sface.net
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 112, 112, generator=g) * 255
    params = {k: v.detach() for k, v in net.named_parameters()}
    tangents = {k: torch.randn(v.shape, generator=g) * v.abs() for k, v in params.items()}

    def f(p):
        return torch.func.functional_call(net, p, (x,))

    out, jvp_out = torch.func.jvp(f, (params,), (tangents,))
    with torch.no_grad():
        torch.testing.assert_close(out, net(x))
    # Dot-product test: forward mode and reverse mode must agree, <u, J t> == <J^T u, t>. (A
    # finite difference would be at the mercy of PReLU kinks near the random input's zeros.)
    u = torch.randn(out.shape, generator=g)
    _, vjp_fn = torch.func.vjp(f, params)
    (grads,) = vjp_fn(u)
    forward = (u * jvp_out).sum().double()
    reverse = sum((grads[k].double() * tangents[k].double()).sum() for k in params)
    assert abs(forward - reverse) <= 1e-4 * abs(forward), (forward, reverse)
    # On the meta device any numpy call or CPU-made constant inside forward() would fail.
    meta = copy.deepcopy(net).to("meta")
    assert meta(torch.empty(5, 3, 112, 112, device="meta")).shape == (5, 128)


# ------------------------------------------------------------------------------------------
# load_onnx on other graphs, and its errors
# ------------------------------------------------------------------------------------------

def _tiny_quantised_model(input_shape=("N", 3, 16, 16)) -> onnx.ModelProto:
    """A small opset-21 net with block-quantised conv and per-axis-quantised fc weights."""
    rng = np.random.default_rng(0)
    wq = rng.integers(-128, 128, (8, 27), dtype=np.int8)  # conv weight, 27 = 3*3*3, blocks of 16
    ws = rng.uniform(1e-3, 1e-2, (8, 2)).astype(np.float32)
    wz = rng.integers(-5, 5, (8, 2), dtype=np.int8)
    fq = rng.integers(0, 256, (4, 8), dtype=np.uint8)  # fc weight, one scale per output row
    fs = rng.uniform(1e-3, 1e-2, (4,)).astype(np.float32)
    fz = np.full((4,), 128, np.uint8)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (wq, "wq"), (ws, "ws"), (wz, "wz"), (np.array([8, 3, 3, 3], np.int64), "wshape"),
        (fq, "fq"), (fs, "fs"), (fz, "fz"), (np.zeros(4, np.float32), "fb")]]
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wflat"], axis=1, block_size=16),
        helper.make_node("Reshape", ["wflat", "wshape"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("DequantizeLinear", ["fq", "fs", "fz"], ["fw"], axis=0),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_load_onnx_matches_onnx_reference_on_a_quantised_graph(tmp_path):
    model = _tiny_quantised_model()
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    bb = load_onnx(path, Preprocess(size=16))
    assert bb.name == "tiny" and bb.embedding_dim == 4
    assert len(prunable_modules(bb.net)) == 2
    x = np.random.default_rng(1).uniform(0, 1, (5, 3, 16, 16)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    with torch.no_grad():
        ours = bb.net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("q_shape, s_shape, axis, block", [
    ((6, 40), (6, 3), 1, 16),    # blocks along axis 1, last block short
    ((40, 6), (3, 6), 0, 16),    # blocks along axis 0
    ((6, 40), (6,), 0, 0),       # per-axis
    ((6, 40), (), 1, 0),         # per-tensor
])
def test_dequantize_matches_onnx_reference(q_shape, s_shape, axis, block):
    rng = np.random.default_rng(2)
    q = rng.integers(-128, 128, q_shape, dtype=np.int8)
    s = rng.uniform(1e-3, 1e-1, s_shape).astype(np.float32)
    z = rng.integers(-10, 10, s_shape, dtype=np.int8)
    attrs = dict(axis=axis, block_size=block) if block else dict(axis=axis)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
    graph = helper.make_graph([node], "dq", [], [helper.make_empty_tensor_value_info("y")],
                              initializer=[numpy_helper.from_array(a, n) for a, n in
                                           [(q, "q"), (s, "s"), (z, "z")]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    ref = ReferenceEvaluator(model).run(None, {})[0]
    np.testing.assert_allclose(dequantize(q, s, z, axis=axis, block_size=block), ref, rtol=1e-6)


def test_load_onnx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        load_onnx(tmp_path / "nope.onnx", SFACE_PREPROCESS)


def test_load_onnx_rejects_a_text_file(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file that someone named .onnx\n" * 20)
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_onnx(path, SFACE_PREPROCESS)


def test_load_onnx_rejects_wrong_input_shape(tmp_path):
    path = tmp_path / "gray.onnx"
    onnx.save(_tiny_quantised_model(input_shape=("N", 1, 16, 16)), str(path))
    with pytest.raises(ValueError, match=r"must take \(N, 3, 16, 16\)"):
        load_onnx(path, Preprocess(size=16))
    with pytest.raises(ValueError, match="preprocess.size is 128"):
        load_onnx(assets.sface_model(), Preprocess(size=128))
