"""Turn a run's scores into a decision: tag the low-quality faces and save a worst-first view."""
from __future__ import annotations

import math

import numpy as np

from . import runs


BY = ("quality", "combined")


def tag_low_quality(samples, run_key="prefiqs", threshold=None, worst_percent=None, tag="low_quality",
                    label_tags=None, save_view=True, percentile=None, max_expected_fnmr=None, by="quality") -> dict:
    """Tags the faces of run ``run_key`` whose quality is low.

    Exactly one criterion: ``threshold`` (quality strictly below it), ``worst_percent`` (the
    ``ceil(worst_percent% × faces)`` lowest qualities, ties broken by order), ``percentile`` (faces
    below this reference percentile) or ``max_expected_fnmr`` (faces whose expected FNMR at FMR 1e-3
    exceeds it). The last two need the run's calibration table and are converted by it to a raw
    quality threshold (returned as ``threshold_quality``). The tag first leaves every sample/label
    of ``samples`` that had it, so it marks exactly this selection.

    ``by="combined"`` ranks faces by ``K_combined`` (the quality's and the detector score's, and on
    dlib's network the distinctiveness, reference percentiles averaged, 0–100) instead of the
    quality: ``threshold`` is then a combined value, ``worst_percent`` the worst by it and
    ``max_expected_fnmr`` converted by the table's bands of combined (``K_combined_expected_fnmr``,
    returned as ``threshold_combined``); the run must have written them (faces of the built-in
    detector). ``percentile`` converts the quality only.

    Args:
        samples: the dataset or a view of it
        run_key ("prefiqs"): a PreFIQs run
        threshold (None): quality cutoff in [0, 1] (with ``by="combined"``: a combined value in [0, 100])
        worst_percent (None): percentage of faces, in (0, 100]
        percentile (None): reference percentile in [0, 100]: tag faces whose ``K_percentile`` is below it
        max_expected_fnmr (None): in [0, 1]: tag faces whose ``K_expected_fnmr`` (with ``by="combined"``:
            ``K_combined_expected_fnmr``) is above it
        tag ("low_quality"): the tag to apply
        label_tags (None): tag the face Detections (label tags) rather than the samples; default
            True for patch-level runs. Sample-level runs always use sample tags
        save_view (True): save the view ``<run_key>_worst``: the tagged samples (or face patches)
            sorted worst first
        by ("quality"): rank faces by ``"quality"`` or by ``"combined"``

    Returns:
        a dict with ``num_tagged``, ``cutoff`` (the highest tagged quality, or combined value),
        ``threshold_quality`` (the raw quality threshold used, None for ``worst_percent`` and with
        ``by="combined"``), ``threshold_combined`` (the combined threshold used with ``by="combined"``,
        None for ``worst_percent``), ``tag``, ``label_tags`` and ``saved_view``
    """
    given = [k for k, v in dict(threshold=threshold, worst_percent=worst_percent, percentile=percentile,
                                max_expected_fnmr=max_expected_fnmr).items() if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of threshold, worst_percent, percentile or max_expected_fnmr"
                         + (f" (got {', '.join(given)})" if given else ""))
    if percentile is not None and not 0 <= float(percentile) <= 100:
        raise ValueError(f"percentile is a reference percentile in [0, 100], got {percentile}")
    if max_expected_fnmr is not None and not 0 <= float(max_expected_fnmr) <= 1:
        raise ValueError(f"max_expected_fnmr is a rate in [0, 1], got {max_expected_fnmr}")
    if by not in BY:
        raise ValueError(f"by is one of {', '.join(BY)}, got {by!r}")
    if by == "combined" and percentile is not None:
        raise ValueError("percentile converts the quality; with by='combined' give a threshold (a combined "
                         "value, 0-100), worst_percent or max_expected_fnmr")
    top = 100 if by == "combined" else 1
    if threshold is not None and not 0 <= float(threshold) <= top:
        raise ValueError(f"threshold is a{' combined value' if by == 'combined' else ' quality'} in [0, {top}], "
                         f"got {threshold}")
    if worst_percent is not None and not 0 < float(worst_percent) <= 100:
        raise ValueError(f"worst_percent must be in (0, 100], got {worst_percent}")
    if not tag:
        raise ValueError("tag must be a non-empty string")
    fields = runs.fields_of(samples, run_key)
    dataset = samples._dataset
    if by == "combined":
        if not runs.has_combined(samples, run_key):
            why = (runs.load_config(samples, run_key).get("combined_absent")
                   or "it was computed before combined values existed")
            raise ValueError(f"run {run_key!r} has no combined values ({why}); rank by quality")
        if max_expected_fnmr is not None and not runs.has_combined_fnmr(samples, run_key):
            why = (runs.load_config(samples, run_key).get("combined_expected_fnmr_absent")
                   or "it was computed before the tables had bands of combined")
            raise ValueError(f"run {run_key!r} has no expected FNMR of combined ({why}); give a combined "
                             "threshold or worst_percent")
    value = fields.combined if by == "combined" else fields.quality
    cut = None if threshold is None else float(threshold)
    if by == "combined" and max_expected_fnmr is not None:
        # the same bands wrote K_combined_expected_fnmr: "expected FNMR > x" is "combined < cut"
        cut = runs.calibration_of(samples, run_key).combined.combined_for_fnmr(float(max_expected_fnmr))
    elif percentile is not None or max_expected_fnmr is not None:
        cal = runs.calibration_of(samples, run_key)
        # the same table wrote K_percentile / K_expected_fnmr, so "percentile < p" is "quality < cut"
        cut = (float(cal.quality_at_percentile(float(percentile))) if percentile is not None
               else cal.quality_for_fnmr(float(max_expected_fnmr)))
    pf = fields.patches_field
    label_tags = bool(pf) if label_tags is None else bool(label_tags and pf)

    if pf:
        sample_ids, label_ids, quality = samples.values(["id", f"{pf}.detections.id", value])
        rows = [(s, l, q) for s, ls, qs in zip(sample_ids, label_ids, quality) if ls
                for l, q in zip(ls, qs or [None] * len(ls)) if q is not None]
    else:
        rows = [(s, None, q) for s, q in zip(*samples.values(["id", value])) if q is not None]
    picked = _pick(rows, cut, worst_percent)

    if label_tags:
        samples.untag_labels(tag, label_fields=[pf])
        if picked:
            dataset.select_labels(ids=[r[1] for r in picked], fields=pf).tag_labels(tag, label_fields=[pf])
        # inside a patches view each row holds one Detection: its path has no ".detections"
        worst = dataset.select_labels(tags=tag, fields=pf).to_patches(pf).sort_by(f"{pf}.{run_key}_{by}")
    else:
        samples.untag_samples(tag)
        if picked:
            dataset.select(list(dict.fromkeys(r[0] for r in picked))).tag_samples(tag)
        if not pf:
            order = value
        elif by == "quality":
            order = fields.min_quality
        else:  # a sample's worst face by the combined value
            from fiftyone import ViewField as F

            order = F(f"{pf}.detections").map(F(f"{run_key}_combined")).min()
        worst = dataset.match_tags(tag).sort_by(order)

    saved = None
    if save_view:
        saved = fields.saved_view
        dataset.save_view(saved, worst, description=f"PreFIQs run {run_key}: faces tagged {tag!r}, worst first",
                          overwrite=True)
    cutoff = max((r[2] for r in picked), default=None)
    info = dict(by=by, tag=tag, label_tags=label_tags, threshold=threshold, worst_percent=worst_percent,
                percentile=percentile, max_expected_fnmr=max_expected_fnmr,
                threshold_quality=None if by == "combined" or cut is None or cut == -float("inf") else cut,
                threshold_combined=None if by != "combined" or cut is None or cut == -float("inf") else cut,
                num_tagged=len(picked), cutoff=cutoff, saved_view=saved)
    runs.update_results(dataset, run_key, tagging=info)
    return info


def _pick(rows, threshold, worst_percent):
    if threshold is not None:
        return [r for r in rows if r[2] < float(threshold)]
    k = math.ceil(float(worst_percent) / 100 * len(rows))
    order = np.argsort([r[2] for r in rows], kind="stable")[:k]
    return [rows[i] for i in order]
