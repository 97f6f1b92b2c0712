"""PreFIQs scoring: how far a face's normalised embedding moves when the network is pruned.

drift = ‖ d/‖d‖ − p/‖p‖ ‖₂ ∈ [0, 2], with d the dense and p the pruned network's embedding.
Larger drift means lower utility for recognition. The quality reported is ``1 − drift / 2``:
in [0, 1], higher is better, a monotone map of the drift (rankings and EDC curves are unchanged).
With several pruned copies (an ensemble) the drift is the mean of the per-copy drifts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbones.base import Backbone
from .pruning import PruneReport, PruneSpec, prune_copy


def quality_from_drift(drift):
    """The documented drift → quality map: ``1 − drift / 2`` (higher is better, in [0, 1])."""
    return 1.0 - np.asarray(drift) / 2.0


@dataclass
class ScoreBatch:
    """Per-face results of one batch; arrays are numpy, one row per face."""

    dense: np.ndarray  # (N, D) L2-normalised dense embeddings
    pruned: np.ndarray  # (N, D) L2-normalised pruned embeddings (ensemble: normalised mean)
    drift_vector: np.ndarray  # (N, D) dense − pruned
    drift: np.ndarray  # (N,) in [0, 2]
    quality: np.ndarray  # (N,) 1 − drift/2

    def __len__(self):
        return len(self.drift)

    @staticmethod
    def concat(batches: Sequence["ScoreBatch"]) -> "ScoreBatch":
        return ScoreBatch(*(np.concatenate([getattr(b, k) for b in batches]) for k in
                            ("dense", "pruned", "drift_vector", "drift", "quality")))


def as_specs(pruning) -> list[PruneSpec]:
    if isinstance(pruning, PruneSpec):
        return [pruning]
    specs = list(pruning)
    if not specs or not all(isinstance(s, PruneSpec) for s in specs):
        raise ValueError("pruning must be a PruneSpec or a non-empty list of PruneSpec")
    return specs


class PreFIQs:
    """A backbone and its pruned copies, ready to score aligned chips.

    Example::

        scorer = PreFIQs(load_backbone("dlib_resnet29"))
        out = scorer.score(chips)          # chips: (N, 150, 150, 3) RGB uint8
        out.quality, out.drift
    """

    def __init__(self, backbone: Backbone, pruning=None, device=None):
        from .defaults import default_pruning

        self.backbone = backbone
        self.device = torch.device(device) if device is not None else backbone.device
        self.specs = as_specs(pruning if pruning is not None else default_pruning(backbone.name))
        self.dense = backbone.net.eval().to(self.device)
        self.pruned, self.reports = [], []
        for spec in self.specs:
            net, report = prune_copy(self.dense, spec)
            self.pruned.append(net.eval())
            self.reports.append(report)

    @property
    def forwards_per_face(self) -> int:
        return 1 + len(self.pruned)

    def config(self) -> dict:
        return dict(backbone=self.backbone.name, source=self.backbone.source,
                    source_sha256=self.backbone.source_sha256,
                    preprocess=self.backbone.preprocess.as_dict(),
                    pruning=[s.as_dict() for s in self.specs],
                    achieved_sparsity=[r.achieved for r in self.reports],
                    zeros_fraction=[r.zeros for r in self.reports])

    @torch.inference_mode()
    def score_tensor(self, x: torch.Tensor) -> ScoreBatch:
        """Score a batch already prepared by ``backbone.prepare`` (on the scorer's device)."""
        d = F.normalize(self.dense(x).float(), dim=1)
        ps = [F.normalize(net(x).float(), dim=1) for net in self.pruned]
        drift = torch.stack([(d - p).norm(dim=1) for p in ps]).mean(0)
        p = ps[0] if len(ps) == 1 else F.normalize(torch.stack(ps).mean(0), dim=1)
        dn, pn = d.cpu().numpy(), p.cpu().numpy()
        dr = drift.cpu().numpy().astype(np.float64)
        return ScoreBatch(dn, pn, dn - pn, dr, quality_from_drift(dr))

    def score(self, chips, batch_size: int = 64) -> ScoreBatch:
        """Score aligned RGB uint8 chips ``(N, S, S, 3)`` of the backbone's size, in batches."""
        n = len(chips)
        if n == 0:
            d = self.backbone.embedding_dim
            e = np.zeros((0, d), np.float32)
            return ScoreBatch(e, e.copy(), e.copy(), np.zeros(0), np.zeros(0))
        out = []
        for i in range(0, n, batch_size):
            out.append(self.score_tensor(self.backbone.prepare(chips[i:i + batch_size], self.device)))
        return ScoreBatch.concat(out)


def summary_reports(reports: Sequence[PruneReport]) -> list[dict]:
    return [r.as_dict() | {"per_layer": None} for r in reports]
