"""Default pruning per backbone, chosen by ``benchmarks/sweep.py`` on the real faces (see README)."""
from __future__ import annotations

from .pruning import PruneSpec

DEFAULTS = {
    "dlib_resnet29": [PruneSpec("global_l1", 0.5)],
}
FALLBACK = [PruneSpec("global_l1", 0.3)]


def default_pruning(backbone_name: str) -> list[PruneSpec]:
    return list(DEFAULTS.get(backbone_name, FALLBACK))
