"""PreFIQs scoring: how far a face's normalised embedding moves when the network is pruned.

drift = ‖ d/‖d‖ − p/‖p‖ ‖₂ ∈ [0, 2], with d the dense and p the pruned network's embedding.
Larger drift means lower utility for recognition. The quality reported is ``1 − drift / 2``:
in [0, 1], higher is better, a monotone map of the drift (rankings and EDC curves are unchanged).
With several pruned copies (an ensemble) the drift is the mean of the per-copy drifts.

When a copy is pruned only from a split point on (``PruneSpec.start``), the dense network's
activation at that point is computed once and both the dense tail and the pruned tail continue from
it (:mod:`prefiqs_core.trunk`): the drift is exactly that of the whole pruned network, at the cost
of the tail only. The networks run in their fastest form (:mod:`prefiqs_core.inference`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .backbones.base import Backbone
from .inference import as_input, channels_last, execution_copy, mismatch
from .pruning import PruneReport, PruneSpec, format_prune, prune_tail
from .trunk import run_stages, run_with_taps, stage_macs, stages_of


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

    ``fast`` (default): the dense and pruned networks run with their normalisations folded into
    the layers before them, in channels-last layout on the CPU (:mod:`prefiqs_core.inference`;
    the pruning masks are computed on the network as loaded, the scores equal ``fast=False``'s to
    float rounding). It keeps one more copy of the network in memory.
    """

    def __init__(self, backbone: Backbone, pruning=None, device=None, fast: bool = True):
        from .defaults import default_pruning

        self.backbone = backbone
        self.device = torch.device(device) if device is not None else backbone.device
        self.specs = as_specs(pruning if pruning is not None else default_pruning(backbone.name))
        self.dense = backbone.net.eval().to(self.device)
        self.stages = stages_of(self.dense)
        self.tails, self.reports = [], []  # (index of the first pruned stage, pruned copy of the tail)
        for spec in self.specs:
            k, tail, report = prune_tail(self.dense, spec)  # masks from the network as loaded
            self.tails.append((k, tail.eval()))
            self.reports.append(report)
        size = backbone.preprocess.size
        with torch.inference_mode():
            self.stage_macs = stage_macs(self.stages, torch.zeros(1, 3, size, size, device=self.device))
        # what runs: the same networks with their norms folded (and channels-last on the CPU),
        # checked on a probe batch first; a network that folds wrongly runs as loaded
        self.fast, self.execution = False, "as loaded"
        if fast:
            fast_stages = stages_of(execution_copy(self.dense, self.device))
            fast_tails = [(k, execution_copy(tail, self.device)) for k, tail in self.tails]
            dtype = next(self.dense.parameters()).dtype
            probe = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(self.device, dtype)
            why = mismatch(self.stages, self.tails, fast_stages, fast_tails, probe, self.device)
            if why:
                warnings.warn(f"{backbone.name}: scoring with the networks as loaded ({why})", stacklevel=2)
                self.execution = f"as loaded: {why}"
            else:
                self.stages, self.tails, self.fast = fast_stages, fast_tails, True
                self.execution = "norms folded" + (", channels-last" if channels_last(self.device) else "")

    @property
    def forwards_per_face(self) -> float:
        """Cost per face in dense forwards, by multiply-accumulates: 1 for the dense embedding plus,
        per pruned copy, the share of the network it re-runs (1.0 when it prunes every layer)."""
        total = sum(self.stage_macs)
        return 1.0 + sum(sum(self.stage_macs[k:]) / total for k, _ in self.tails)

    @property
    def spec_string(self) -> str:
        return format_prune(self.specs)

    def config(self) -> dict:
        return dict(backbone=self.backbone.name, source=self.backbone.source,
                    source_sha256=self.backbone.source_sha256,
                    preprocess=self.backbone.preprocess.as_dict(),
                    prune=self.spec_string,
                    pruning=[s.as_dict() for s in self.specs],
                    achieved_sparsity=[r.achieved for r in self.reports],
                    zeros_fraction=[r.zeros for r in self.reports],
                    forwards_per_face=round(self.forwards_per_face, 4),
                    execution=self.execution)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return as_input(x, self.device) if self.fast else x

    @torch.inference_mode()
    def dense_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw dense embeddings of a prepared batch, as the scorer computes them (the unit of cost)."""
        return run_stages(self.stages, self._input(x))

    @torch.inference_mode()
    def score_tensor(self, x: torch.Tensor) -> ScoreBatch:
        """Score a batch already prepared by ``backbone.prepare`` (on the scorer's device)."""
        # the dense forward, keeping the activation where each pruned tail starts
        raw, acts = run_with_taps(self.stages, self._input(x), [k for k, _ in self.tails])
        d = F.normalize(raw.float(), dim=1)
        ps = [F.normalize(tail(acts[k]).float(), dim=1) for k, tail in self.tails]
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
