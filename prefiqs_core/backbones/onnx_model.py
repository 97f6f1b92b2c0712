"""ONNX face-recognition models as plain PyTorch modules.

An ONNX file is turned into a ``torch.fx.GraphModule`` by the project's own converter
(``onnx_convert``: the ops face-recognition CNNs use, enough for SFace and iResNet exports); graphs
with other ops go through ``onnx2torch`` when it is installed. Two things stand in the way for the
models that registries actually ship:

* **Quantised weights.** Files such as OpenCV-Zoo's ``*_int8bq.onnx`` store every weight as int8 and
  rebuild it at run time with ``DequantizeLinear`` (often *blocked*: one scale per ``block_size``
  values along ``axis``), followed by a ``Reshape`` to the kernel's shape. The weights must end up
  as ``nn.Conv2d`` / ``nn.Linear`` parameters, which pruning needs, so we dequantise those
  constants with numpy first and fold the constant layout ops after them, leaving float initialisers.
* **New opsets** (onnx2torch only). onnx2torch registers converters up to about opset 13-16. We
  declare the newest opset it can convert, but only when every op in the graph has the same inputs,
  outputs and attributes at that opset as at the file's own, i.e. when the newer versions only
  added types.

Dropout nodes are bypassed (they are the identity at inference), and the module is put in eval
mode, so the network is deterministic and its forward is pure torch: it runs on any device and
under ``torch.func`` transforms.

Files are parsed as protobuf by ``onnx.load``; nothing is unpickled.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .. import assets
from . import onnx_convert
from .base import Backbone, Preprocess, sha256_of

# What cv2.FaceRecognizerSF.feature() feeds SFace: it calls
#   dnn::blobFromImage(aligned_bgr_chip, 1.0, Size(112, 112), Scalar(0, 0, 0), swapRB=true)
# (opencv modules/objdetect/src/face_recognize.cpp), i.e. RGB order, 0..255, no mean, no scaling.
# The network normalises itself: its first nodes compute (x - 127.5) * 0.0078125.
SFACE_PREPROCESS = Preprocess(size=112, channels="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                              template="arcface112")

# Ops that only move or relabel constant data; once their inputs are constant they can be folded
# into an initialiser without any loss, which lets onnx2torch see real weight tensors.
_FOLDABLE_OPS = {"DequantizeLinear", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                 "Cast", "Flatten"}

# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------

def load_onnx(path, preprocess: Preprocess, name: str | None = None) -> Backbone:
    """Load an ONNX face-recognition model as a :class:`Backbone` holding a torch module.

    ``preprocess`` says what the network expects (size, colour order, mean/std on 0..255 values);
    it cannot be read from an ONNX file, so the caller supplies it. The graph must take one input of
    shape ``(N, 3, S, S)`` with ``S == preprocess.size`` and return one ``(N, D)`` embedding.
    """
    path = Path(path)
    model = _read_model(path)
    opset = _default_opset(model)
    _keep_real_inputs(model)
    input_name = _check_input(model.graph, preprocess, path)
    n_dequantized, n_folded = _fold_constant_weights(model)
    n_dropouts = _remove_dropout(model)
    _drop_dead_nodes(model)
    _drop_unused_initializers(model)
    _reject_activation_quantisation(model, path)
    try:
        net, converter, converted_opset = onnx_convert.convert(model), "prefiqs", opset
    except onnx_convert.UnsupportedOps as e:
        net, converted_opset = _convert_with_onnx2torch(model, path, e), None
        converter = "onnx2torch"
    net.eval()
    embedding_dim = _probe_embedding_dim(net, preprocess.size, path)
    return Backbone(
        name=name or path.stem, net=net, preprocess=preprocess, embedding_dim=embedding_dim,
        source=str(path), source_sha256=sha256_of(path),
        extra=dict(input_name=input_name, onnx_opset=opset, converted_opset=converted_opset,
                   converter=converter, dequantized_weights=n_dequantized, folded_nodes=n_folded,
                   removed_dropouts=n_dropouts))


def load_sface(path=None) -> Backbone:
    """OpenCV-Zoo SFace (128-d, 112x112), equal to ``cv2.FaceRecognizerSF.feature`` on the same chip."""
    path = assets.sface_model() if path is None else path
    return load_onnx(path, SFACE_PREPROCESS, name="sface")


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
               axis: int = 1, block_size: int = 0, dtype=None) -> np.ndarray:
    """ONNX ``DequantizeLinear`` in numpy: ``(q - zero_point) * scale``.

    The shape of ``scale`` selects the granularity, as in the ONNX spec: a scalar (or one-element
    1-D array) is per-tensor; a 1-D array with ``block_size == 0`` is per-``axis``; with
    ``block_size > 0`` ``scale`` has ``q``'s rank and one entry per block of ``block_size``
    elements along ``axis`` (the last block may be short). The result has ``scale``'s dtype
    unless ``dtype`` is given.
    """
    q = np.asarray(q)
    scale = np.asarray(scale)
    out_dtype = np.dtype(dtype) if dtype is not None else scale.dtype
    zp = np.zeros((), np.float64) if zero_point is None else np.asarray(zero_point)
    axis = axis + q.ndim if axis < 0 else axis
    scale64 = scale.astype(np.float64)
    zp64 = zp.astype(np.float64)
    if block_size > 0:
        if scale.ndim != q.ndim:
            raise ValueError(f"blocked dequantisation needs scale of rank {q.ndim}, got {scale.shape}")
        # Expand each block's scale to its block_size elements, then cut the padding of the last block.
        keep = [slice(None)] * q.ndim
        keep[axis] = slice(0, q.shape[axis])
        scale64 = np.repeat(scale64, block_size, axis=axis)[tuple(keep)]
        if zp64.ndim:
            zp64 = np.repeat(zp64, block_size, axis=axis)[tuple(keep)]
    elif scale.ndim == 1 and scale.size > 1:
        # Per-axis: line the 1-D scale up with `axis`.
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale64 = scale64.reshape(shape)
        if zp64.ndim:
            zp64 = zp64.reshape(shape)
    else:
        scale64 = scale64.reshape(())
        zp64 = zp64.reshape(())
    # float64 keeps int32 biases (beyond float32's 2**24) exact before the final rounding.
    return ((q.astype(np.float64) - zp64) * scale64).astype(out_dtype)


# --------------------------------------------------------------------------------------------
# reading and checking the file
# --------------------------------------------------------------------------------------------

def _read_model(path: Path) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX protobuf, with a clear error for missing or non-ONNX files."""
    if not path.exists():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file, so not an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError/RuntimeError variants for garbage input
        raise ValueError(f"{path}: not an ONNX model (cannot parse it as ONNX protobuf: {e})") from None
    # Arbitrary bytes sometimes parse as an (almost) empty protobuf; a usable model has a graph.
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise ValueError(f"{path}: not an ONNX model (no graph nodes, inputs or outputs found)")
    return model


def _default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    raise ValueError("ONNX model declares no default-domain opset")


def _set_default_opset(model: onnx.ModelProto, version: int):
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = version


def _keep_real_inputs(model: onnx.ModelProto):
    """Keep only the graph inputs that are real, used inputs.

    Old exporters list every initialiser as a graph input too, and quantisers may leave the
    original float weights declared as inputs that no node reads any more. onnx2torch would turn
    each of those into an argument of ``forward``.
    """
    inits = {t.name for t in model.graph.initializer}
    used = {n for node in model.graph.node for n in node.input} | {o.name for o in model.graph.output}
    real = [i for i in model.graph.input if i.name not in inits and i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(real)


def _dims(value_info) -> list[int | None] | None:
    """Static dims of a graph value (None for symbolic ones), or None if it has no shape."""
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def _check_input(graph: onnx.GraphProto, preprocess: Preprocess, path: Path) -> str:
    """The graph must take a single image batch (N, 3, S, S) with S == preprocess.size."""
    if len(graph.input) != 1:
        raise ValueError(f"{path}: expected one graph input (N, 3, S, S), found "
                         f"{len(graph.input)}: {[i.name for i in graph.input]}")
    inp = graph.input[0]
    dims = _dims(inp)
    want = f"(N, 3, {preprocess.size}, {preprocess.size})"
    if dims is None:
        return inp.name  # shape not recorded; the dummy forward pass checks it instead
    shown = tuple("?" if d is None else d for d in dims)
    if len(dims) != 4 or dims[1] not in (None, 3) or (
            None not in dims[2:] and dims[2] != dims[3]):
        raise ValueError(f"{path}: graph input {inp.name!r} has shape {shown}; a face-recognition "
                         f"backbone must take {want} (N images, 3 channels, square)")
    for d in dims[2:]:
        if d is not None and d != preprocess.size:
            raise ValueError(f"{path}: graph input {inp.name!r} has shape {shown} but "
                             f"preprocess.size is {preprocess.size}; expected {want}")
    return inp.name


# --------------------------------------------------------------------------------------------
# quantised weights -> float initialisers
# --------------------------------------------------------------------------------------------

def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every value known without running the graph: initialisers and Constant nodes' tensors."""
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _eval_dequantize(node: onnx.NodeProto, consts: dict) -> np.ndarray:
    ins = list(node.input) + [""] * (3 - len(node.input))
    a = _attrs(node)
    zp = consts[ins[2]] if ins[2] else None
    return dequantize(consts[ins[0]], consts[ins[1]], zp, axis=a.get("axis", 1),
                      block_size=a.get("block_size", 0),
                      dtype=onnx.helper.tensor_dtype_to_np_dtype(a["output_dtype"])
                      if a.get("output_dtype") else None)


def _eval_layout_op(node: onnx.NodeProto, consts: dict, opsets) -> list[np.ndarray]:
    """Run one data-movement node on constant inputs with ONNX's reference implementation."""
    from onnx.reference import ReferenceEvaluator  # imported lazily: only needed while loading

    inputs = [n for n in node.input if n]
    inits = [numpy_helper.from_array(consts[n], n) for n in inputs]
    outputs = [onnx.helper.make_empty_tensor_value_info(o) for o in node.output]
    graph = onnx.helper.make_graph([node], "fold", [], outputs, initializer=inits)
    model = onnx.helper.make_model(graph, opset_imports=list(opsets))
    return ReferenceEvaluator(model).run(None, {})


def _fold_constant_weights(model: onnx.ModelProto) -> tuple[int, int]:
    """Replace DequantizeLinear-on-constants, and layout ops on constants, by float initialisers.

    Returns (number of DequantizeLinear nodes folded, number of other nodes folded).
    Nodes are visited in order; ONNX graphs are topologically sorted, so a Reshape after a
    DequantizeLinear sees the dequantised tensor as a constant.
    """
    graph = model.graph
    consts = _constants(graph)
    kept, new_inits = [], {}
    n_deq = n_other = 0
    for node in graph.node:
        inputs = [n for n in node.input if n]
        foldable = (node.op_type in _FOLDABLE_OPS and node.domain in ("", "ai.onnx")
                    and inputs and all(n in consts for n in inputs))
        if node.op_type == "DequantizeLinear" and foldable:
            values = [_eval_dequantize(node, consts)]
            n_deq += 1
        elif foldable:
            values = _eval_layout_op(node, consts, model.opset_import)
            n_other += 1
        else:
            kept.append(node)
            continue
        for name, value in zip(node.output, values):
            consts[name] = np.asarray(value)
            new_inits[name] = consts[name]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in new_inits.items())
    # Shape annotations of folded values are now redundant (they are initialisers).
    stale = [vi for vi in graph.value_info if vi.name in new_inits]
    for vi in stale:
        graph.value_info.remove(vi)
    return n_deq, n_other


def _remove_dropout(model: onnx.ModelProto) -> int:
    """Bypass Dropout nodes: they are the identity at inference, which is all a backbone does.

    onnx2torch's Dropout reads its ratio from a tensor, which costs a ``.item()`` (a device sync,
    and an error on the meta device or under vmap) in every forward, and it would drop
    activations at random whenever someone calls ``net.train()``.
    """
    graph = model.graph
    used = {n for node in graph.node for n in node.input}
    outputs = {o.name for o in graph.output}
    rename, kept = {}, []
    for node in graph.node:
        mask_used = len(node.output) > 1 and node.output[1] and node.output[1] in used | outputs
        training_mode = node.input[2] if len(node.input) > 2 else ""
        if (node.op_type != "Dropout" or node.domain not in ("", "ai.onnx") or mask_used
                or training_mode or node.output[0] in outputs):
            kept.append(node)
            continue
        rename[node.output[0]] = rename.get(node.input[0], node.input[0])
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    return len(rename)


def _drop_dead_nodes(model: onnx.ModelProto):
    """Remove nodes none of whose outputs is used (e.g. a Dropout's ratio Constant)."""
    graph = model.graph
    while True:
        used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        live = [node for node in graph.node if any(o in used for o in node.output if o)]
        if len(live) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(live)


def _reject_activation_quantisation(model: onnx.ModelProto, path: Path):
    """(De)quantise nodes left after folding act on activations, which we do not emulate."""
    left = [n.op_type for n in model.graph.node if n.op_type in ("DequantizeLinear", "QuantizeLinear")]
    if left:
        raise ValueError(f"{path}: quantises activations ({len(left)} {sorted(set(left))} nodes on "
                         "non-constant tensors); only quantised weights are supported")


def _drop_unused_initializers(model: onnx.ModelProto):
    """Remove initialisers nothing reads any more (the int8 weights, scales, zero points, shapes)."""
    graph = model.graph
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------

def _schema_signature(schema) -> tuple:
    """What a node must look like for this op version: inputs, outputs, attributes (not types)."""
    return (tuple((i.name, i.option) for i in schema.inputs),
            tuple((o.name, o.option) for o in schema.outputs),
            tuple(sorted((name, a.type) for name, a in schema.attributes.items())))


def _converter_opset(model: onnx.ModelProto, path: Path) -> int:
    """Newest default-domain opset <= the file's at which onnx2torch converts every op unchanged.

    Declaring a lower opset is only sound when each op's schema there has the same inputs, outputs
    and attributes as at the file's opset (later versions merely added types such as int4/float8);
    e.g. ReduceMean moved ``axes`` from attribute to input at 18, so it blocks going below 18.
    """
    from onnx2torch.node_converters.registry import get_converter

    opset = _default_opset(model)
    op_types = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")})
    original = {op: _schema_signature(onnx.defs.get_schema(op, opset)) for op in op_types}
    missing: list[str] = []
    for candidate in range(opset, 0, -1):
        missing = []
        for op in op_types:
            try:
                schema = onnx.defs.get_schema(op, candidate)
                get_converter(op, candidate)
            except Exception:  # no schema that old, or no onnx2torch converter for it
                missing.append(op)
                continue
            if _schema_signature(schema) != original[op]:
                missing.append(op)
        if not missing:
            return candidate
        if any(not _has_schema(op, candidate) for op in op_types):
            break  # older opsets cannot help once an op did not exist yet
    raise ValueError(f"{path}: onnx2torch cannot convert these ops of opset {opset}: {missing}")


def _has_schema(op: str, version: int) -> bool:
    try:
        onnx.defs.get_schema(op, version)
        return True
    except Exception:
        return False


def _convert_with_onnx2torch(model: onnx.ModelProto, path: Path, why: Exception) -> nn.Module:
    """Graphs with ops the project's own converter lacks go through onnx2torch (the [onnx] extra)."""
    try:
        from onnx2torch import convert
    except ImportError as e:
        raise ModuleNotFoundError(
            f"{path}: {why}; onnx2torch can convert more ops: pip install onnx2torch "
            "(or the package's [onnx] extra)") from e
    converted_opset = _converter_opset(model, path)
    _set_default_opset(model, converted_opset)
    try:
        return convert(model)
    except NotImplementedError as e:
        raise ValueError(f"{path}: onnx2torch cannot convert this model: {e}") from e


def _probe_embedding_dim(net: nn.Module, size: int, path: Path) -> int:
    """Run a batch of two blank images; the graph must map (N, 3, S, S) to (N, D)."""
    x = torch.zeros(2, 3, size, size)
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as e:
        raise ValueError(f"{path}: the converted network fails on a (2, 3, {size}, {size}) batch "
                         f"(it may hard-code batch size 1): {e}") from e
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{path}: the network has {len(out)} outputs; expected one embedding (N, D)")
    if out.ndim != 2 or out.shape[0] != 2:
        raise ValueError(f"{path}: the network returns shape {tuple(out.shape)} for 2 images; "
                         "expected embeddings (N, D)")
    return int(out.shape[1])
