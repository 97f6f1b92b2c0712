"""Default pruning per backbone, chosen by ``benchmarks/sweep.py`` on real recognition errors
(LFW development people; README, "How the defaults were chosen")."""
from __future__ import annotations

from .pruning import PruneSpec

# The backbone a plain call uses, and the fast one. On the LFW development people SFace both ranks
# faces better (held-out nAUC20 0.55 vs 0.85) and recognises far better (FNMR 0.9 % vs 8.2 % at FMR
# 1e-3); dlib's ResNet-29 costs about half of SFace's MACs per face (README, "Which backbone").
DEFAULT_BACKBONE = "sface"
FAST_BACKBONE = "dlib_resnet29"

DEFAULTS = {
    # LFW-dev half A nAUC20 0.826 (best: layerwise_l1@0.1 at 2 forwards, 0.817); held-out half B 0.846
    "dlib_resnet29": [PruneSpec("global_l1", 0.7, start="blocks.12")],
    # LFW-dev half A nAUC20 0.538 (the best swept, 1.09 forwards): 30 % random pruning of the
    # embedding layer, the drift averaged over 8 seeds; held-out half B 0.554 (was 0.638 with
    # global_l1@0.5+from:conv_14_dw_conv2d, A 0.571)
    "sface": [PruneSpec("random", 0.3, seed=s, start="pre_fc1") for s in range(8)],
}
FALLBACK = [PruneSpec("global_l1", 0.3)]

# Backbones whose calibration table (``calibrate --distinctiveness auto``) stores a distinctiveness
# reference, which ``combined`` then averages in. dlib: PreFIQs + detector score + distinctiveness,
# LFW-dev half A nAUC20 0.736 (quality + detector alone 0.744), held-out half B 0.761 (0.807), every
# one of 40 split halves <= 0.80. SFace: distinctiveness ranks faces worse than random there (A 1.10),
# and with it the combination is worse than without (A 0.91 against 0.47).
COMBINED_DISTINCTIVENESS = frozenset({"dlib_resnet29"})


def default_pruning(backbone_name: str) -> list[PruneSpec]:
    return list(DEFAULTS.get(backbone_name, FALLBACK))


def exact_pruning(backbone_name: str, method: str | None = None, sparsity: float | None = None,
                  **options) -> PruneSpec:
    """One pruned copy that is exactly what is given: a ``method`` or ``sparsity`` left out takes the
    backbone default's; every other option (``seed``, ``keep_first``, ``keep_last``, ``start``) is
    as given, never inherited from the default (CLI flags, the SDK and the compute form share it)."""
    base = default_pruning(backbone_name)[0]
    return PruneSpec(method or base.method, float(sparsity) if sparsity is not None else base.sparsity, **options)
