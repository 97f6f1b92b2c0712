"""A small ONNX -> ``torch.fx.GraphModule`` converter for face-recognition CNNs.

Face-recognition networks exported to ONNX use a handful of ops (conv, batch norm, PReLU/ReLU,
residual adds, a flatten and a fully connected layer). Converting those ourselves keeps the
``sface`` backbone free of onnx2torch, which pulls in a torchvision that can replace a user's torch.
Graphs with any other op raise :class:`UnsupportedOps`; the caller may then fall back to onnx2torch.

What pruning and the shared trunk need from the result, and why it is built this way:

* every conv and fully connected layer is a real ``nn.Conv2d`` / ``nn.Linear`` holding its weights as
  parameters (pruning masks them), created in graph order (``keep_first``/``keep_last`` and global
  ranking see the same layer order as the file);
* each node is named after the ONNX node (its name, else its first output), the same names as
  onnx2torch gives, so split points such as ``from:conv_14_dw_conv2d`` mean the same layer;
* the graph is a plain ``fx.Graph`` of modules and torch functions, so ``trunk.graph_stages`` can
  cut it where one activation is live.

The input must be constant-folded first (``onnx_model`` dequantises weights and folds layout ops),
so that every weight reaches its layer as an initialiser.
"""
from __future__ import annotations

import operator
import re

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import fx, nn

SUPPORTED = ("Conv", "BatchNormalization", "PRelu", "Relu", "Add", "Sub", "Mul", "Div", "Flatten",
             "Gemm", "MatMul", "GlobalAveragePool", "Reshape", "Identity")


class UnsupportedOps(ValueError):
    """The graph has ops this converter does not handle (listed in ``ops``)."""

    def __init__(self, ops):
        self.ops = sorted(set(ops))
        super().__init__(f"ops this converter does not handle: {', '.join(self.ops)}")


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """ONNX BatchNormalization normalises axis 1 of an input of any rank (the fc embedding's BN is
    2-D, the conv BNs 4-D); ``F.batch_norm`` does too, only the rank check of BatchNorm1d/2d is in
    the way."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least a 2-D input, got {input.dim()}-D")


def reshape_like_onnx(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """ONNX Reshape: a 0 in ``shape`` copies that dimension of the input (the batch, usually)."""
    return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])


def flatten_like_onnx(x: torch.Tensor, axis: int) -> torch.Tensor:
    """ONNX Flatten: always 2-D, the dimensions before ``axis`` times those from it."""
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ident(name: str) -> str:
    out = re.sub(r"\W", "_", name)
    return "_" + out if not out or out[0].isdigit() else out


class _Builder:
    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for n in self.graph.node:  # Constant nodes are initialisers in another form
            if n.op_type == "Constant":
                self.consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        self.root = nn.Module()
        self.g = fx.Graph()
        self.env: dict[str, fx.Node] = {}
        self.names: set[str] = set()

    # ---- helpers -------------------------------------------------------------------------------
    def name_of(self, node: onnx.NodeProto) -> str:
        base = _ident(node.name or node.output[0])
        name, k = base, 1
        while name in self.names or hasattr(self.root, name):
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def module(self, node, m: nn.Module, *args) -> fx.Node:
        name = self.name_of(node)
        self.root.add_module(name, m)
        return self.g.call_module(name, tuple(args))

    def function(self, node, fn, *args) -> fx.Node:
        return self.g.create_node("call_function", fn, tuple(args), name=self.name_of(node))

    def const(self, name: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedOps([f"non-constant weight {name!r}"])
        return self.consts[name]

    def value(self, name: str):
        """A graph input/intermediate, or a constant as a buffer (scalars and normalisation terms)."""
        if name in self.env:
            return self.env[name]
        arr = self.const(name)
        buf = "const_" + _ident(name)
        if not hasattr(self.root, buf):
            self.root.register_buffer(buf, torch.from_numpy(np.array(arr, dtype=np.float32)))
        return self.g.get_attr(buf)

    # ---- ops -----------------------------------------------------------------------------------
    def conv(self, node, a):
        w = self.const(node.input[1])
        if w.ndim != 4:
            raise UnsupportedOps([f"Conv{w.ndim - 2}d"])
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise UnsupportedOps([f"Conv auto_pad={a['auto_pad']}"])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        groups = int(a.get("group", 1))
        m = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1, 1])),
                      dilation=tuple(a.get("dilations", [1, 1])), groups=groups, bias=len(node.input) > 2 and bool(node.input[2]),
                      padding=(pads[0], pads[1]) if pads[:2] == pads[2:] else 0)
        m.weight.data = torch.from_numpy(np.array(w, dtype=np.float32))
        if m.bias is not None:
            m.bias.data = torch.from_numpy(np.array(self.const(node.input[2]), dtype=np.float32))
        x = self.env[node.input[0]]
        if pads[:2] != pads[2:]:  # asymmetric: ONNX pads are (top, left, bottom, right)
            x = self.g.call_function(F.pad, (x, (pads[1], pads[3], pads[0], pads[2])))
        return self.module(node, m, x)

    def batchnorm(self, node, a):
        scale, bias, mean, var = (np.array(self.const(i), dtype=np.float32) for i in node.input[1:5])
        m = BatchNorm(len(scale), eps=float(a.get("epsilon", 1e-5)))
        for t, v in ((m.weight, scale), (m.bias, bias), (m.running_mean, mean), (m.running_var, var)):
            t.data = torch.from_numpy(v)
        return self.module(node, m, self.env[node.input[0]])

    def prelu(self, node, a):
        slope = np.array(self.const(node.input[1]), dtype=np.float32)
        if slope.size > 1 and slope.shape[0] != slope.size:  # only per-channel (C, 1, 1) or (C,) slopes
            raise UnsupportedOps([f"PRelu slope of shape {slope.shape}"])
        m = nn.PReLU(slope.size)
        m.weight.data = torch.from_numpy(slope.reshape(-1))
        return self.module(node, m, self.env[node.input[0]])

    def gemm(self, node, a):
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise UnsupportedOps(["Gemm with transA/alpha/beta"])
        w = np.array(self.const(node.input[1]), dtype=np.float32)
        w = w if a.get("transB", 0) else w.T
        has_bias = len(node.input) > 2 and bool(node.input[2])
        m = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
        m.weight.data = torch.from_numpy(np.ascontiguousarray(w))
        if has_bias:
            b = np.array(self.const(node.input[2]), dtype=np.float32)
            if b.size != w.shape[0]:
                raise UnsupportedOps([f"Gemm bias of shape {b.shape}"])
            m.bias.data = torch.from_numpy(b.reshape(-1))
        return self.module(node, m, self.env[node.input[0]])

    def matmul(self, node, a):
        if node.input[1] not in self.consts or self.consts[node.input[1]].ndim != 2:
            raise UnsupportedOps(["MatMul of two activations"])
        w = np.array(self.consts[node.input[1]], dtype=np.float32).T
        m = nn.Linear(w.shape[1], w.shape[0], bias=False)
        m.weight.data = torch.from_numpy(np.ascontiguousarray(w))
        return self.module(node, m, self.env[node.input[0]])

    def binary(self, node, a):
        fn = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv}[node.op_type]
        return self.function(node, fn, self.value(node.input[0]), self.value(node.input[1]))

    def convert(self) -> fx.GraphModule:
        init = set(self.consts)
        inputs = [i for i in self.graph.input if i.name not in init]
        outputs = list(self.graph.output)
        if len(inputs) != 1 or len(outputs) != 1:
            raise UnsupportedOps([f"{len(inputs)} inputs and {len(outputs)} outputs"])
        unsupported = [n.op_type for n in self.graph.node
                       if n.op_type not in SUPPORTED + ("Constant",) or n.domain not in ("", "ai.onnx")]
        if unsupported:
            raise UnsupportedOps(unsupported)
        self.env[inputs[0].name] = self.g.placeholder(_ident(inputs[0].name))
        for node in self.graph.node:
            a, op = _attrs(node), node.op_type
            if op == "Constant":
                continue
            x = self.env.get(node.input[0]) if node.input else None
            if op == "Conv":
                out = self.conv(node, a)
            elif op == "BatchNormalization":
                out = self.batchnorm(node, a)
            elif op == "PRelu":
                out = self.prelu(node, a)
            elif op == "Relu":
                out = self.module(node, nn.ReLU(), x)
            elif op in ("Add", "Sub", "Mul", "Div"):
                out = self.binary(node, a)
            elif op == "Flatten":
                out = self.function(node, flatten_like_onnx, x, int(a.get("axis", 1)))
            elif op == "Gemm":
                out = self.gemm(node, a)
            elif op == "MatMul":
                out = self.matmul(node, a)
            elif op == "GlobalAveragePool":
                out = self.function(node, F.adaptive_avg_pool2d, x, 1)
            elif op == "Reshape":
                shape = tuple(int(s) for s in self.const(node.input[1]))
                out = self.function(node, reshape_like_onnx, x, shape)
            else:  # Identity
                out = x
            self.env[node.output[0]] = out
        self.g.output(self.env[outputs[0].name])
        gm = fx.GraphModule(self.root, self.g)
        gm.eval()
        return gm


def convert(model: onnx.ModelProto) -> fx.GraphModule:
    """The constant-folded ONNX ``model`` as a GraphModule; :class:`UnsupportedOps` if it cannot be."""
    return _Builder(model).convert()
