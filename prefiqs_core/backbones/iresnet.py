"""iResNet face-recognition backbones (r18/r34/r50/r100) that load public checkpoints unchanged.

Parameter and buffer names equal those of insightface ``arcface_torch`` ``backbone.pth`` files
(also used by ElasticFace, CR-FIQA and GraFIQs), so a checkpoint loads with no key renaming:
``conv1``, ``bn1``, ``prelu``, ``layer1..4.<i>.{bn1,conv1,bn2,prelu,conv2,bn3}``,
``layer<k>.0.downsample.{0,1}``, ``bn2``, ``fc``, ``features``.

Two variants, matching the two training codebases:

* ``"arcface"`` (arcface_torch, ElasticFace, CosFace): BatchNorm eps 1e-5; ``features`` is a
  BatchNorm1d whose scale is fixed to 1.0; input RGB, (x - 127.5) / 127.5.
* ``"magface"`` (IrvingMeng/MagFace ``models/iresnet.py``): same key names, BatchNorm eps 2e-5,
  ``Dropout2d(0.4)`` before flattening, a ``features`` BatchNorm1d with a *learned* scale;
  input BGR, x / 255.

Dropout is inactive in eval mode, so inference is deterministic; computation is always float32.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CheckpointError, load_state_dict, match_state_dict
from .base import Backbone, Preprocess, sha256_of

__all__ = ["ARCH_LAYERS", "IBasicBlock", "IResNet", "build_iresnet", "load_iresnet", "parse_arch"]

# Residual blocks per stage, from arcface_torch (identical in MagFace).
ARCH_LAYERS = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}

# Per-variant hyper-parameters that differ between the two source codebases.
_VARIANTS = {
    "arcface": dict(eps=1e-5, dropout2d=False, fixed_feature_scale=True),
    "magface": dict(eps=2e-5, dropout2d=True, fixed_feature_scale=False),
}

_PREPROCESS = {
    # arcface_torch inference.py: BGR->RGB, /255, -0.5, /0.5  ==  RGB (x - 127.5) / 127.5
    "arcface": Preprocess(size=112, channels="RGB", mean=(127.5,) * 3, std=(127.5,) * 3,
                          template="arcface112"),
    # MagFace gen_feat.py: cv2.imread (BGR), ToTensor (/255), Normalize(mean=0, std=1)
    "magface": Preprocess(size=112, channels="BGR", mean=(0.0,) * 3, std=(255.0,) * 3,
                          template="arcface112"),
}

INPUT_SIZE = 112
_FINAL_SPATIAL = 7  # 112 halved by the four stride-2 stages


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: bn1, conv1, bn2, prelu, conv2 (strided), bn3, + shortcut.

    There is no activation after the addition, unlike a classic ResNet block.
    """

    norm_pairs = (("conv1", "bn2"), ("conv2", "bn3"))  # prefiqs_core.inference folds these

    def __init__(self, cin: int, cout: int, stride: int = 1, eps: float = 1e-5):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=eps)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)  # the stride sits on the second conv
        self.bn3 = nn.BatchNorm2d(cout, eps=eps)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, eps=eps),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut  # out of place, so torch.func transforms see no mutation


class IResNet(nn.Module):
    """iResNet for 112x112 inputs: stem, four stride-2 stages (64/128/256/512), BN-flatten-FC-BN head.

    Maps a normalised ``(N, 3, 112, 112)`` float batch to raw (un-normalised) ``(N, num_features)``
    embeddings.
    """

    norm_pairs = (("conv1", "bn1"), ("fc", "features"))

    def __init__(self, layers, num_features: int = 512, *, eps: float = 1e-5,
                 dropout2d: bool = False, fixed_feature_scale: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=eps)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stage = [IBasicBlock(cin, planes, stride=2, eps=eps)]
            stage += [IBasicBlock(planes, planes, stride=1, eps=eps) for _ in range(1, blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            cin = planes
        self.bn2 = nn.BatchNorm2d(512, eps=eps)
        # Neither dropout has parameters; both are identities in eval mode. They are kept at the
        # source positions so that train mode behaves like the original code.
        self.dropout2d = dropout2d
        self.dropout = nn.Dropout2d(p=0.4) if dropout2d else nn.Dropout(p=0.0)
        self.fc = nn.Linear(512 * _FINAL_SPATIAL * _FINAL_SPATIAL, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=eps)
        self._init_weights()
        if fixed_feature_scale:
            # arcface_torch freezes this scale at 1.0; checkpoints still store it, so it stays a
            # parameter (key "features.weight") but is excluded from training.
            self.features.weight.requires_grad_(False)

    def _init_weights(self):
        # Only matters for allow_random=True networks (tests); real use always loads a checkpoint.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(_stem(self, x)))))
        return _head(self, x)

    def stages(self):
        """Stem, every residual block (``layer1.0`` … ``layer4.N``), the BN-FC-BN head."""
        from ..trunk import Stage

        blocks = [(f"layer{i}.{j}", b) for i in range(1, 5) for j, b in enumerate(getattr(self, f"layer{i}"))]
        head = Stage(_head, bn2=self.bn2, dropout=self.dropout, fc=self.fc, features=self.features)
        head.dropout2d = self.dropout2d
        head.norm_pairs = (("fc", "features"),)
        stem = Stage(_stem, conv1=self.conv1, bn1=self.bn1, prelu=self.prelu)
        stem.norm_pairs = (("conv1", "bn1"),)
        return [("stem", stem)] + blocks + [("head", head)]


def _stem(m, x):
    return m.prelu(m.bn1(m.conv1(x)))


def _head(m, x):
    x = m.bn2(x)
    if m.dropout2d:  # MagFace drops whole channels before flattening
        x = torch.flatten(m.dropout(x), 1)
    else:  # arcface_torch drops flattened elements
        x = m.dropout(torch.flatten(x, 1))
    return m.features(m.fc(x))


def parse_arch(arch: str) -> str:
    """Normalise ``"r50"``, ``"R50"``, ``"iresnet50"``, ``"resnet50"`` to ``"r50"``."""
    m = re.fullmatch(r"(?:r|i?resnet)(\d+)", str(arch).strip().lower())
    key = f"r{m.group(1)}" if m else None
    if key not in ARCH_LAYERS:
        raise ValueError(f"unknown iResNet architecture {arch!r}; choose one of "
                         f"{', '.join(ARCH_LAYERS)} (or iresnet18/34/50/100)")
    return key


def build_iresnet(arch: str, *, variant: str = "arcface", num_features: int = 512) -> IResNet:
    """A randomly initialised iResNet of the given depth and variant (training-mode, float32)."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown iResNet variant {variant!r}; choose 'arcface' or 'magface'")
    return IResNet(ARCH_LAYERS[parse_arch(arch)], num_features, **_VARIANTS[variant])


def load_iresnet(arch: str, checkpoint=None, *, variant: str = "arcface", num_features: int = 512,
                 allow_random: bool = False) -> Backbone:
    """An iResNet backbone with its weights and preprocessing, in eval mode on the CPU.

    ``arch``: ``r18``/``r34``/``r50``/``r100`` (or ``iresnet50`` etc.). ``checkpoint``: path to a
    ``backbone.pth`` (arcface_torch, ElasticFace, CosFace; ``variant="arcface"``) or a MagFace
    checkpoint (``variant="magface"``). No iResNet weights ship with the library, so a checkpoint is
    required unless ``allow_random=True`` asks for random weights (for tests only).
    """
    key = parse_arch(arch)
    if variant not in _PREPROCESS:
        raise ValueError(f"unknown iResNet variant {variant!r}; choose 'arcface' or 'magface'")
    name = f"iresnet{key[1:]}" if variant == "arcface" else f"magface_iresnet{key[1:]}"
    net = build_iresnet(key, variant=variant, num_features=num_features)

    if checkpoint is None:
        if not allow_random:
            raise CheckpointError(
                f"{name} needs a checkpoint: no iResNet weights ship with prefiqs_core. Pass the path "
                "of a backbone.pth (arcface_torch / ElasticFace) or a MagFace .pth; "
                "allow_random=True gives untrained weights, for tests only.")
        source, digest = "random-init", ""
    else:
        path = Path(checkpoint)
        match_state_dict(net, load_state_dict(path), what=f"{name} ({path})")
        source, digest = str(path), sha256_of(path)

    net = net.float().eval()
    return Backbone(name, net, _PREPROCESS[variant], embedding_dim=num_features, source=source,
                    source_sha256=digest,
                    extra=dict(arch=key, variant=variant, random_init=checkpoint is None))
