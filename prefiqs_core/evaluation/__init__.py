"""The evaluation side: how well a quality measure predicts recognition errors.

``curves`` (EDC and pAUC, both published conventions), ``pairs`` (genuine/impostor pairs and
templates), ``baselines`` (other quality measures behind one interface), ``benchmarks_io``
(verification ``.bin`` files, identity folders), ``ijb`` (IJB-B/C releases), ``degrade``
(synthetic degradations), ``lfw`` (the LFW-style development benchmark). The EDC functions are
re-exported here, so ``from prefiqs_core.evaluation import edc, pauc`` reads as before.
"""
from .curves import (CONVENTIONS, DEFAULT_GRID, EDCResult, edc, fmr_threshold, fnmr_at, pair_quality_from,
                     pauc, plot_edc, theoretical_best_area)

__all__ = ["CONVENTIONS", "DEFAULT_GRID", "EDCResult", "edc", "fmr_threshold", "fnmr_at", "pair_quality_from",
           "pauc", "plot_edc", "theoretical_best_area"]
