"""Face-image-quality baselines behind one interface, so an EDC benchmark can loop over methods.

Every method is a :class:`QualityMethod`: ``method.score(chips, sizes=None, det_scores=None)`` maps aligned RGB uint8
chips ``(N, S, S, 3)`` (``S`` = the backbone's input size) to an ``(N,)`` float64 array where
**higher means better quality**. ``name`` labels it in plots, ``forwards_per_face`` is a rough
cost in dense forward passes. All methods are deterministic given their seeds, and a face's score
never depends on the batch it is scored in.

=================  =================================================================================
PreFIQsMethod      1 − drift/2, drift between dense and pruned normalised embeddings (this project)
EmbeddingNorm      MagFace: L2 norm of the un-normalised embedding (a quality only for MagFace-trained
                   networks; for others it is a weak, untrained proxy)
SERFIQ             SER-FIQ: agreement of T embeddings under random dropout at the embedding layer
GraFIQs            GraFIQs: −Σ|∂L_BNS/∂image|, L_BNS the batch-norm-statistics loss (BN networks only)
JVPSensitivity     1 − ‖J_θ n(x)·Δθ‖/2: first-order (exact JVP) version of the PreFIQs drift
Sharpness          variance of the Laplacian of the grey chip (no network)
FaceSize           detected face box size, given by the caller (no network)
DetectorScore      the face detector's own score for the face, given by the caller (no network)
RandomQuality      a seeded uniform random number per chip: the no-information reference
=================  =================================================================================
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.base import Backbone, prunable_modules
from ..pruning import prune_copy
from ..scoring import PreFIQs, as_specs, quality_from_drift
from ..sensitivity import jvp_norm


class QualityMethod:
    """Base class: a named quality measure for aligned chips (higher = better)."""

    name: str = "quality"
    forwards_per_face: float = 0.0  # approximate cost, in dense forward passes per face
    caller_values: str | None = None  # the ``score`` keyword a method reads per face, if any

    def score(self, chips, sizes=None, det_scores=None) -> np.ndarray:
        """Quality of each chip, ``(N,)`` float64, higher = better. ``sizes`` is used by
        :class:`FaceSize` only, ``det_scores`` by :class:`DetectorScore` only; the others ignore them."""
        chips = _check_chips(chips)
        if len(chips) == 0:
            return np.zeros(0)
        given = {"sizes": sizes, "det_scores": det_scores}.get(self.caller_values)
        return np.asarray(self._score(chips, given), dtype=np.float64)

    def _score(self, chips, given) -> np.ndarray:  # pragma: no cover - abstract
        """``given``: the ``score`` keyword named by ``caller_values`` (None for most methods)."""
        raise NotImplementedError

    def config(self) -> dict:
        """What defines this method's scores (for provenance in reports)."""
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}({self.config()})"


def _check_chips(chips):
    if isinstance(chips, torch.Tensor):
        chips = chips.cpu().numpy()
    chips = np.asarray(chips)
    if chips.ndim != 4 or chips.shape[-1] != 3:
        raise ValueError(f"chips must be (N, H, W, 3) RGB uint8, got shape {chips.shape}")
    if chips.dtype != np.uint8:
        raise ValueError(f"chips must be uint8, got {chips.dtype}")
    return chips


class _NetworkMethod(QualityMethod):
    """Shared plumbing for methods that run the backbone: batching and preparation."""

    def __init__(self, backbone: Backbone, batch_size: int = 32):
        self.backbone = backbone
        self.net = backbone.net.eval()
        self.device = backbone.device
        self.batch_size = int(batch_size)

    def _batches(self, chips):
        for i in range(0, len(chips), self.batch_size):
            yield self.backbone.prepare(chips[i:i + self.batch_size], self.device)

    def _score(self, chips, sizes):
        return np.concatenate([self._score_batch(x) for x in self._batches(chips)])

    def config(self) -> dict:
        return {"name": self.name, "backbone": self.backbone.name}


# ---------------------------------------------------------------------------------------------


class PreFIQsMethod(_NetworkMethod):
    """PreFIQs quality ``1 − drift/2`` (see :mod:`prefiqs_core.scoring`); ``pruning`` defaults to
    the backbone's default pruning."""

    name = "PreFIQs"

    def __init__(self, backbone: Backbone, pruning=None, batch_size: int = 64):
        super().__init__(backbone, batch_size)
        self.scorer = PreFIQs(backbone, pruning)
        self.forwards_per_face = float(self.scorer.forwards_per_face)

    def _score(self, chips, sizes):
        return self.scorer.score(chips, batch_size=self.batch_size).quality

    def config(self) -> dict:
        return super().config() | {"pruning": [s.as_dict() for s in self.scorer.specs]}


class EmbeddingNorm(_NetworkMethod):
    """MagFace-style quality: the L2 norm of the raw (un-normalised) embedding.

    MagFace trains the norm to grow with recognisability; on networks not trained that way the
    norm carries some, but untrained, quality information.
    """

    name = "EmbeddingNorm"
    forwards_per_face = 1.0

    @torch.inference_mode()
    def _score_batch(self, x):
        return self.net(x).float().norm(dim=1).cpu().numpy()


def _head_linear(net: nn.Module) -> tuple[str, nn.Linear]:
    mods = prunable_modules(net)
    if not mods or not isinstance(mods[-1][1], nn.Linear):
        raise ValueError("SER-FIQ needs the network's last conv/linear layer to be an nn.Linear "
                         "(the embedding layer that dropout is applied to)")
    return mods[-1]


def serfiq_score(embeddings) -> np.ndarray:
    """SER-FIQ's score from ``(N, T, D)`` stochastic embeddings: ``2 / (1 + exp(mean_dist))``.

    The embeddings are L2-normalised; ``mean_dist`` is the mean Euclidean distance over the
    ``T(T−1)/2`` distinct pairs (the upper triangle without the diagonal, as the official MXNet
    code; the ser-fiq-pytorch port also averages the zero diagonal and lower half, which only
    rescales). The value is in (2/(1+e²), 1]; 1 means all passes agree. The official code's extra
    sigmoid (alpha=130, r=0.88) is monotone and omitted: it changes no ranking.
    """
    e = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    if e.ndim != 3 or e.shape[1] < 2:
        raise ValueError(f"embeddings must be (N, T, D) with T >= 2, got {tuple(e.shape)}")
    e = F.normalize(e, dim=2)
    t = e.shape[1]
    iu = torch.triu_indices(t, t, offset=1)
    d = torch.cdist(e, e)[:, iu[0], iu[1]]
    return (2.0 / (1.0 + torch.exp(d.mean(dim=1)))).numpy()


class SERFIQ(_NetworkMethod):
    """SER-FIQ (Terhörst et al., CVPR 2020): embedding robustness under random dropout.

    Dropout (rate ``p``, inverted scaling ``1/(1−p)`` as ``nn.Dropout``) is applied to the
    **input of the final embedding layer** (the backbone's last ``nn.Linear``), as in the official
    code where dropout sits before the last layer. The body runs **once**: a forward pre-hook on
    that layer repeats its input ``T`` times with ``T`` masks, so only the head (that layer and
    whatever per-sample layers follow it, e.g. iResNet's ``features`` BatchNorm1d) runs T times.
    The same ``T`` masks, drawn once from ``seed``, are used for every face, so a face's score
    does not depend on its batch. Score: :func:`serfiq_score`.

    SER-FIQ assumes a network trained with dropout at that position (dlib's ResNet was not);
    on others the ranking is still meaningful but weaker.
    """

    name = "SER-FIQ"

    def __init__(self, backbone: Backbone, T: int = 100, p: float = 0.5, seed: int = 0,
                 batch_size: int = 16):
        super().__init__(backbone, batch_size)
        if int(T) < 2:
            raise ValueError(f"T must be at least 2, got {T}")
        if not 0 < p < 1:
            raise ValueError(f"dropout rate p must be in (0, 1), got {p}")
        self.T, self.p, self.seed = int(T), float(p), int(seed)
        self.head_name, self.head = _head_linear(self.net)
        # The body runs once; the head's extra T passes are small next to it.
        self.forwards_per_face = 1.0

    def masks(self) -> torch.Tensor:
        """The ``(T, in_features)`` boolean keep-masks (True = kept), fixed by ``seed``."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.rand(self.T, self.head.in_features, generator=g) >= self.p

    def _expand(self, module, args):
        (h,) = args
        n = h.shape[0]
        keep = self.masks().to(h.device, h.dtype) / (1.0 - self.p)
        # Row i*T + t is face i under mask t.
        return (h.repeat_interleave(self.T, dim=0) * keep.repeat(n, 1),)

    @torch.inference_mode()
    def _score_batch(self, x):
        handle = self.head.register_forward_pre_hook(self._expand)
        try:
            out = self.net(x).float()
        finally:
            handle.remove()  # the backbone must stay usable by other methods
        n = x.shape[0]
        if out.shape[0] != n * self.T:
            raise ValueError(f"the layers after {self.head_name!r} change the batch size; SER-FIQ's "
                             "head-only repetition cannot be used with this network")
        return serfiq_score(out.reshape(n, self.T, -1).cpu().numpy())

    def config(self) -> dict:
        return super().config() | {"T": self.T, "p": self.p, "seed": self.seed, "layer": self.head_name}


def bn_layers_with_stats(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The batch-norm layers that carry running statistics (GraFIQs needs them): ``BatchNorm2d``,
    and any other ``_BatchNorm`` such as the ONNX converter's rank-free ``BatchNorm`` (SFace).
    Which of them see feature maps is known only in the forward pass: GraFIQs uses those."""
    return [(n, m) for n, m in net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


class GraFIQs(_NetworkMethod):
    """GraFIQs (Kolf, Damer, Boutros; CVPRW 2024), image-gradient variant.

    For one face, every ``BatchNorm2d`` input ``z`` (C, H, W) gives per-channel mean and biased
    variance over (H, W); the BNS loss is ``Σ_layers [MSE(mean, running_mean) + MSE(var,
    running_var)] / n_layers`` (MSE = mean over channels). The raw GraFIQs value is
    ``Σ |∂loss/∂x|`` over the prepared input image ``x``: lower = better. The returned quality is
    its negative, so higher = better like every other method. Statistics are per face (the
    official code uses batch size 1); since the network is in eval mode faces do not interact,
    so a whole batch is differentiated at once.

    Only networks with batch-norm running statistics on feature maps qualify (iResNet, MagFace,
    SFace; a batch norm of a flat vector, such as an embedding's, has no (H, W) to average over and
    is left out); dlib's ResNet has fixed affine layers instead and is refused with ``ValueError``.
    """

    name = "GraFIQs"
    forwards_per_face = 3.0  # forward + backward

    def __init__(self, backbone: Backbone, batch_size: int = 16):
        super().__init__(backbone, batch_size)
        self.bn = bn_layers_with_stats(self.net)
        if not self.bn:
            raise ValueError(
                f"GraFIQs needs BatchNorm2d layers with running statistics, and backbone "
                f"{backbone.name!r} has none (e.g. dlib_resnet29 uses fixed affine layers); use an "
                "iResNet / MagFace backbone")

    def _score_batch(self, x):
        captured = []
        hooks = [m.register_forward_hook(lambda mod, inp, out: captured.append((mod, inp[0])))
                 for _, m in self.bn]
        try:
            with torch.enable_grad():
                x = x.detach().clone().requires_grad_(True)
                self.net(x)
                captured = [(mod, z) for mod, z in captured if z.dim() == 4]
                if not captured:
                    raise ValueError(f"GraFIQs: no batch norm of {self.backbone.name!r} sees a feature map")
                loss = sum(_bns_loss(mod, z) for mod, z in captured) / len(captured)
                (grad,) = torch.autograd.grad(loss.sum(), x)
        finally:
            for h in hooks:
                h.remove()
        return -grad.abs().flatten(1).sum(1).detach().double().cpu().numpy()


def _bns_loss(bn: nn.BatchNorm2d, z: torch.Tensor) -> torch.Tensor:
    """Per-face BNS loss of one layer: (N,)."""
    mean = z.mean(dim=(2, 3))
    var = z.var(dim=(2, 3), unbiased=False)
    return ((mean - bn.running_mean) ** 2).mean(1) + ((var - bn.running_var) ** 2).mean(1)


class JVPSensitivity(_NetworkMethod):
    """``1 − ‖J_θ n(x)·Δθ‖ / 2`` with Δθ the default (or given) pruning: the first-order PreFIQs
    drift computed exactly by forward-mode AD (:func:`prefiqs_core.sensitivity.jvp_norm`).
    With several pruning specs, the norms are averaged (as PreFIQs averages drifts)."""

    name = "JVP"

    def __init__(self, backbone: Backbone, pruning=None, batch_size: int = 16):
        from ..defaults import default_pruning

        super().__init__(backbone, batch_size)
        self.specs = as_specs(pruning if pruning is not None else default_pruning(backbone.name))
        self.pruned = [prune_copy(self.net, s)[0] for s in self.specs]
        self.forwards_per_face = 3.0 * len(self.pruned)  # a JVP costs about 2–3 forwards

    def _score_batch(self, x):
        norms = torch.stack([jvp_norm(self.net, p, x) for p in self.pruned]).mean(0)
        return quality_from_drift(norms.double().cpu().numpy())

    def config(self) -> dict:
        return super().config() | {"pruning": [s.as_dict() for s in self.specs]}


class Sharpness(QualityMethod):
    """Variance of the 3x3 Laplacian (``cv2.Laplacian``, ksize=1, reflect-101 border) of the
    grey chip (ITU-R 601 luma): a classic focus measure. Needs no network."""

    name = "Sharpness"
    forwards_per_face = 0.0

    def _score(self, chips, sizes):
        import cv2

        return np.array([cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                         for c in chips])


def _per_face(values, chips, keyword: str, what: str, meaning: str) -> np.ndarray:
    """The caller's per-face numbers (``sizes``, ``det_scores``) as one float64 per chip."""
    if values is None:
        raise ValueError(f"this method needs {keyword}=: {meaning}")
    s = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(s) != len(chips):
        raise ValueError(f"{len(s)} {what} for {len(chips)} chips")
    return s


class FaceSize(QualityMethod):
    """Quality = the face's size in the original image, in pixels, passed as ``sizes`` (e.g.
    ``sqrt(w·h)`` of the detection box). It cannot be computed from the chips, which alignment
    has resampled to a fixed size; ``score`` raises ``ValueError`` without ``sizes``."""

    name = "FaceSize"
    forwards_per_face = 0.0
    caller_values = "sizes"

    def _score(self, chips, sizes):
        s = _per_face(sizes, chips, "sizes", "sizes", "the face box size (pixels) of every chip in the original "
                      "image; aligned chips all have the same size")
        if not np.isfinite(s).all() or (s < 0).any():
            raise ValueError("sizes must be finite and non-negative")
        return s


class DetectorScore(QualityMethod):
    """Quality = the face detector's own score for the face, passed as ``det_scores`` (dlib's HOG
    detector: the SVM margin, ``Detections``' ``confidence`` in FiftyOne). Like :class:`FaceSize` it
    comes with detection at no extra cost and cannot be computed from the chip. A face the detector
    missed, placed by a fixed box (score NaN), gets ``missed``, below any detection."""

    name = "DetectorScore"
    forwards_per_face = 0.0
    caller_values = "det_scores"

    def __init__(self, missed: float = -1e3):
        self.missed = float(missed)

    def _score(self, chips, det_scores):
        s = _per_face(det_scores, chips, "det_scores", "detector scores", "the face detector's score of every chip (NaN for "
                      "a face it missed)")
        if np.isinf(s).any():
            raise ValueError("detector scores must be finite (NaN marks a face the detector missed)")
        return np.where(np.isnan(s), self.missed, s)

    def config(self) -> dict:
        return {"name": self.name, "missed": self.missed}


class RandomQuality(QualityMethod):
    """A uniform [0, 1) number per chip, from a hash of the seed and the chip's pixels: the same
    chip and seed always give the same value, whatever the batch or order. No information about
    quality: its EDC is the reference any real method should beat."""

    name = "Random"
    forwards_per_face = 0.0

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def _score(self, chips, sizes):
        out = []
        for c in chips:
            h = hashlib.blake2b(np.ascontiguousarray(c).tobytes(), digest_size=8,
                                key=self.seed.to_bytes(8, "little", signed=True))
            out.append(int.from_bytes(h.digest(), "little") / 2.0 ** 64)
        return np.array(out)

    def config(self) -> dict:
        return {"name": self.name, "seed": self.seed}


# ---------------------------------------------------------------------------------------------


METHODS = {
    "prefiqs": PreFIQsMethod,
    "embedding_norm": EmbeddingNorm,
    "serfiq": SERFIQ,
    "grafiqs": GraFIQs,
    "jvp": JVPSensitivity,
    "sharpness": Sharpness,
    "face_size": FaceSize,
    "detector_score": DetectorScore,
    "random": RandomQuality,
}
_NEEDS_BACKBONE = {"prefiqs", "embedding_norm", "serfiq", "grafiqs", "jvp"}


def make_method(name: str, backbone: Backbone | None = None, **kwargs) -> QualityMethod:
    """Build a method by its key in :data:`METHODS` (network methods need ``backbone``)."""
    if name not in METHODS:
        raise ValueError(f"unknown quality method {name!r}; choose one of {', '.join(METHODS)}")
    if name in _NEEDS_BACKBONE:
        if backbone is None:
            raise ValueError(f"method {name!r} needs a backbone")
        return METHODS[name](backbone, **kwargs)
    return METHODS[name](**kwargs)


def available_methods(backbone: Backbone, names: Sequence[str] | None = None,
                      **per_method_kwargs) -> dict[str, QualityMethod]:
    """Every method in ``names`` (default: all but those that need per-face values from the caller,
    FaceSize and DetectorScore) that applies to ``backbone``;
    methods that refuse the backbone (GraFIQs on a network without BatchNorm) are skipped."""
    names = list(names) if names is not None else [n for n in METHODS if METHODS[n].caller_values is None]
    out = {}
    for n in names:
        try:
            out[n] = make_method(n, backbone if n in _NEEDS_BACKBONE else None,
                                 **per_method_kwargs.get(n, {}))
        except ValueError:
            if n != "grafiqs":
                raise
    return out


__all__ = ["QualityMethod", "PreFIQsMethod", "EmbeddingNorm", "SERFIQ", "GraFIQs", "JVPSensitivity",
           "Sharpness", "FaceSize", "DetectorScore", "RandomQuality", "METHODS", "make_method", "available_methods",
           "serfiq_score", "bn_layers_with_stats"]
