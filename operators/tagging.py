"""Turn a run's scores into a decision: tag the low-quality faces and save a worst-first view."""
from __future__ import annotations

import math

import numpy as np

from . import runs


def tag_low_quality(samples, run_key="prefiqs", threshold=None, worst_percent=None, tag="low_quality",
                    label_tags=None, save_view=True) -> dict:
    """Tags the faces of run ``run_key`` whose quality is low.

    Exactly one criterion: ``threshold`` (quality strictly below it) or ``worst_percent`` (the
    ``ceil(worst_percent% × faces)`` lowest qualities, ties broken by order). The tag first
    leaves every sample/label of ``samples`` that had it, so it marks exactly this selection.

    Args:
        samples: the dataset or a view of it
        run_key ("prefiqs"): a PreFIQs run
        threshold (None): quality cutoff in [0, 1]
        worst_percent (None): percentage of faces, in (0, 100]
        tag ("low_quality"): the tag to apply
        label_tags (None): tag the face Detections (label tags) rather than the samples; default
            True for patch-level runs. Sample-level runs always use sample tags
        save_view (True): save the view ``<run_key>_worst``: the tagged samples (or face patches)
            sorted worst first

    Returns:
        a dict with ``num_tagged``, ``cutoff`` (the highest tagged quality), ``tag``, ``label_tags``
        and ``saved_view``
    """
    if (threshold is None) == (worst_percent is None):
        raise ValueError("give exactly one of threshold or worst_percent")
    if threshold is not None and not 0 <= float(threshold) <= 1:
        raise ValueError(f"threshold is a quality in [0, 1], got {threshold}")
    if worst_percent is not None and not 0 < float(worst_percent) <= 100:
        raise ValueError(f"worst_percent must be in (0, 100], got {worst_percent}")
    if not tag:
        raise ValueError("tag must be a non-empty string")
    fields = runs.fields_of(samples, run_key)
    dataset = samples._dataset
    pf = fields.patches_field
    label_tags = bool(pf) if label_tags is None else bool(label_tags and pf)

    if pf:
        sample_ids, label_ids, quality = samples.values(["id", f"{pf}.detections.id", fields.quality])
        rows = [(s, l, q) for s, ls, qs in zip(sample_ids, label_ids, quality) if ls
                for l, q in zip(ls, qs or [None] * len(ls)) if q is not None]
    else:
        rows = [(s, None, q) for s, q in zip(*samples.values(["id", fields.quality])) if q is not None]
    picked = _pick(rows, threshold, worst_percent)

    if label_tags:
        samples.untag_labels(tag, label_fields=[pf])
        if picked:
            dataset.select_labels(ids=[r[1] for r in picked], fields=pf).tag_labels(tag, label_fields=[pf])
        # inside a patches view each row holds one Detection: its path has no ".detections"
        worst = dataset.select_labels(tags=tag, fields=pf).to_patches(pf).sort_by(f"{pf}.{run_key}_quality")
    else:
        samples.untag_samples(tag)
        if picked:
            dataset.select(list(dict.fromkeys(r[0] for r in picked))).tag_samples(tag)
        worst = dataset.match_tags(tag).sort_by(fields.min_quality if pf else fields.quality)

    saved = None
    if save_view:
        saved = fields.saved_view
        dataset.save_view(saved, worst, description=f"PreFIQs run {run_key}: faces tagged {tag!r}, worst first",
                          overwrite=True)
    cutoff = max((r[2] for r in picked), default=None)
    info = dict(tag=tag, label_tags=label_tags, threshold=threshold, worst_percent=worst_percent,
                num_tagged=len(picked), cutoff=cutoff, saved_view=saved)
    runs.update_results(dataset, run_key, tagging=info)
    return info


def _pick(rows, threshold, worst_percent):
    if threshold is not None:
        return [r for r in rows if r[2] < float(threshold)]
    k = math.ceil(float(worst_percent) / 100 * len(rows))
    order = np.argsort([r[2] for r in rows], kind="stable")[:k]
    return [rows[i] for i in order]
