"""What every face-recognition backbone carries: the network and the exact input it expects.

A backbone bundles its preprocessing with its weights so that a caller cannot feed it chips of the
wrong size, colour order, normalisation or alignment template: the commonest way FIQA scores go wrong.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Preprocess:
    """How an aligned RGB uint8 chip becomes the network's input tensor.

    ``mean`` and ``std`` apply to 0..255 pixel values, per channel, in the network's own channel
    order (``channels``). ``template`` names the alignment template (see ``prefiqs_core.alignment``).
    """

    size: int
    channels: str = "RGB"  # "RGB" or "BGR": the order the network was trained on
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    template: str = "arcface112"

    def __post_init__(self):
        if self.channels not in ("RGB", "BGR"):
            raise ValueError(f"channels must be 'RGB' or 'BGR', not {self.channels!r}")
        if self.size <= 0:
            raise ValueError(f"size must be positive, not {self.size}")

    def as_dict(self) -> dict:
        return dict(size=self.size, channels=self.channels, mean=list(self.mean),
                    std=list(self.std), template=self.template)


@dataclass
class Backbone:
    """A face-recognition network with its preprocessing.

    ``net`` maps a normalised float batch ``(N, 3, size, size)`` to raw (un-normalised) embeddings
    ``(N, D)``. Use :meth:`prepare` to turn aligned RGB uint8 chips into that batch.
    """

    name: str
    net: nn.Module
    preprocess: Preprocess
    embedding_dim: int
    source: str = ""  # file the weights came from, for provenance
    source_sha256: str = ""
    extra: dict = field(default_factory=dict)

    def prepare(self, chips, device=None) -> torch.Tensor:
        """Aligned RGB uint8 chips ``(N, H, W, 3)`` (array or tensor) → normalised float ``(N, 3, S, S)``."""
        if isinstance(chips, np.ndarray):
            chips = torch.from_numpy(np.ascontiguousarray(chips))
        if chips.ndim != 4 or chips.shape[-1] != 3:
            raise ValueError(f"chips must be (N, H, W, 3) RGB, got shape {tuple(chips.shape)}")
        s = self.preprocess.size
        if chips.shape[1] != s or chips.shape[2] != s:
            raise ValueError(
                f"backbone {self.name!r} expects {s}x{s} chips, got {chips.shape[2]}x{chips.shape[1]}; "
                "align or resize first (prefiqs_core.alignment)")
        x = chips.to(device=device).permute(0, 3, 1, 2).float()
        if self.preprocess.channels == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.preprocess.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def to(self, device) -> "Backbone":
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")


def sha256_of(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def prunable_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and linear layers (the weights pruning may touch), in registration order."""
    out = []
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out.append((name, m))
    return out


def check_batch_shape(x: torch.Tensor, sizes: Sequence[int]):
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(sizes):
        raise ValueError(f"expected input (N, 3, {sizes[0]}, {sizes[1]}), got {tuple(x.shape)}")
