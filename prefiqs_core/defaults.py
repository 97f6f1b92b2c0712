"""Default pruning per backbone, chosen by ``benchmarks/sweep.py`` on the real faces (see README)."""
from __future__ import annotations

from .pruning import PruneSpec

DEFAULTS = {
    # benchmarks/sweep.py: best utility of the single-copy settings (README, "How the defaults were chosen")
    "dlib_resnet29": [PruneSpec("ln_structured", 0.05, keep_first=True, keep_last=True)],
    "sface": [PruneSpec("global_l1", 0.4, keep_first=True)],
}
FALLBACK = [PruneSpec("global_l1", 0.3)]


def default_pruning(backbone_name: str) -> list[PruneSpec]:
    return list(DEFAULTS.get(backbone_name, FALLBACK))
