"""Reader for dlib's binary serialisation of its face-recognition ResNet (``*.dat``).

Only the parts the ResNet-29 needs: packed integers, floats, tensors, and the per-layer records tagged
``input_rgb_image_sized``, ``con_4``, ``affine_`` and ``fc_2``. dlib writes a network from the input
layer outwards, so the records come in forward order.

Encoding (dlib/serialize.h, dlib/dnn/tensor.h):
- integer: one control byte (low nibble = number of magnitude bytes, bit 0x80 = negative), then the
  magnitude little-endian;
- float: integer mantissa then integer exponent, value = mantissa * 2**exponent;
- string: integer length then raw bytes;
- tensor: integer version (2), integers n, k, nr, nc, then n*k*nr*nc little-endian float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The file is not a dlib face-recognition ResNet in the expected layout."""


class _Reader:
    def __init__(self, buf: bytes, pos: int = 0):
        self.buf = buf
        self.pos = pos

    def int(self) -> int:
        if self.pos >= len(self.buf):
            raise DlibFormatError("unexpected end of file")
        ctrl = self.buf[self.pos]
        n = ctrl & 0x0F
        if n > 8:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at offset {self.pos}")
        v = int.from_bytes(self.buf[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -v if ctrl & 0x80 else v

    def float(self) -> float:
        m = self.int()
        e = self.int()
        return math.ldexp(m, e)

    def string(self) -> str:
        n = self.int()
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s.decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version} at offset {self.pos}")
        n, k, nr, nc = (self.int() for _ in range(4))
        count = n * k * nr * nc
        end = self.pos + 4 * count
        if count < 0 or end > len(self.buf):
            raise DlibFormatError(f"tensor of {count} floats runs past the end of the file")
        a = np.frombuffer(self.buf, dtype="<f4", count=count, offset=self.pos).reshape(n, k, nr, nc)
        self.pos = end
        return a.astype(np.float32)


@dataclass
class ConvRecord:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray  # (out,)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class DlibResNetWeights:
    input_mean_rgb: tuple[float, float, float]
    convs: list[ConvRecord]
    affines: list[tuple[np.ndarray, np.ndarray]]  # (gamma, beta) per affine layer
    fc_weight: np.ndarray  # (out, in): torch nn.Linear layout

    @property
    def num_parameters(self) -> int:
        n = sum(c.weight.size + c.bias.size for c in self.convs)
        n += sum(g.size + b.size for g, b in self.affines)
        return n + self.fc_weight.size


def _tag_positions(buf: bytes, tag: str) -> list[int]:
    """Offsets just after each occurrence of the serialised string ``tag`` (length byte + text)."""
    raw = tag.encode()
    needle = bytes([0x01, len(raw)]) + raw
    out, i = [], buf.find(needle)
    while i >= 0:
        out.append(i + len(needle))
        i = buf.find(needle, i + 1)
    return out


def parse_dlib_resnet(path) -> DlibResNetWeights:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` into numpy arrays (no dlib needed)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    buf = p.read_bytes()
    if b"loss_metric" not in buf[:64]:
        raise DlibFormatError(f"{p}: not a dlib metric-learning network (no loss_metric header)")

    inputs = _tag_positions(buf, "input_rgb_image_sized")
    if len(inputs) != 1:
        raise DlibFormatError(f"{p}: expected 1 input_rgb_image_sized layer, found {len(inputs)}")
    r = _Reader(buf, inputs[0])
    mean = (r.float(), r.float(), r.float())

    convs = []
    for pos in _tag_positions(buf, "con_4"):
        r = _Reader(buf, pos)
        params = r.tensor().reshape(-1)
        nf, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        per_filter = (params.size - nf) // nf
        k = per_filter // (nr * nc)
        if nf <= 0 or k * nr * nc * nf + nf != params.size:
            raise DlibFormatError(f"{p}: con_4 at {pos}: {params.size} params do not fit {nf} {nr}x{nc} filters")
        w = params[: nf * k * nr * nc].reshape(nf, k, nr, nc)
        convs.append(ConvRecord(w.copy(), params[nf * k * nr * nc:].copy(), (sy, sx), (py, px)))

    affines = []
    for pos in _tag_positions(buf, "affine_"):
        params = _Reader(buf, pos).tensor().reshape(-1)
        c = params.size // 2
        affines.append((params[:c].copy(), params[c:].copy()))

    fcs = _tag_positions(buf, "fc_2")
    if len(fcs) != 1:
        raise DlibFormatError(f"{p}: expected 1 fc_2 layer, found {len(fcs)}")
    r = _Reader(buf, fcs[0])
    n_out, n_in = r.int(), r.int()
    w = r.tensor().reshape(-1)
    if w.size != n_in * n_out:  # a bias row would make it (n_in + 1) * n_out; this net has none
        raise DlibFormatError(f"{p}: fc_2 holds {w.size} values, expected {n_in}x{n_out}")
    fc = w.reshape(n_in, n_out).T.copy()  # dlib computes x @ W; torch Linear computes x @ weight.T

    if len(convs) != 29 or len(affines) != 29:
        raise DlibFormatError(f"{p}: expected 29 con_4 and 29 affine_ layers, found {len(convs)} and {len(affines)}")
    for i, (c, (g, _)) in enumerate(zip(convs, affines)):
        if c.weight.shape[0] != g.size:
            raise DlibFormatError(f"{p}: layer {i}: conv has {c.weight.shape[0]} filters, affine {g.size} channels")
    return DlibResNetWeights(mean, convs, affines, fc)
