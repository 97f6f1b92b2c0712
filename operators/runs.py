"""What a PreFIQs run is on a dataset: its field names and its record in FiftyOne's custom runs.

One run key ``K`` owns a fixed family of fields (``K_quality``, ``K_drift``, ``K_error``,
``K_dense``, ``K_pruned``, ``K_drift_vector``, ``K_percentile`` and ``K_expected_fnmr`` when a
calibration table applied, ``K_combined`` beside them for faces of the built-in detector, and, for
face patches, ``K_min_quality``) plus the
brain visualization runs ``K_dense_umap`` / ``K_pruned_umap``. The run record (``dataset.get_run_info(K)``)
holds the configuration, its results hold the summary statistics, so that everything written
under ``K`` can be explained and removed again from the record alone.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import __version__

RUN_METHOD = "prefiqs"
VECTORS = ("dense", "pruned", "drift_vector")


def check_run_key(run_key: str) -> str:
    # Field names are built from the key and must survive ViewField expressions and Mongo paths.
    if not isinstance(run_key, str) or not run_key.isidentifier() or keyword.iskeyword(run_key):
        raise ValueError(f"run key must be a Python identifier, got {run_key!r}")
    return run_key


@dataclass(frozen=True)
class RunFields:
    """Field paths of run ``key``; per face Detection when ``patches_field`` is set."""

    key: str
    patches_field: Optional[str] = None

    def label_path(self, name: str) -> str:
        """Where a per-face value lives: on the sample, or on each Detection of the patches field."""
        leaf = f"{self.key}_{name}"
        return f"{self.patches_field}.detections.{leaf}" if self.patches_field else leaf

    def sample_path(self, name: str) -> str:
        return f"{self.key}_{name}"

    @property
    def quality(self):
        return self.label_path("quality")

    @property
    def drift(self):
        return self.label_path("drift")

    @property
    def error(self):
        return self.label_path("error")

    @property
    def percentile(self):
        """Reference percentile of the quality (only when a calibration table applied)."""
        return self.label_path("percentile")

    @property
    def expected_fnmr(self):
        """Expected FNMR at FMR 1e-3 for the quality (only when a calibration table applied)."""
        return self.label_path("expected_fnmr")

    @property
    def combined(self):
        """The quality's and the detector score's reference percentiles (and, where the table has that
        reference, the distinctiveness percentile) averaged (only with a calibration table, for
        faces found by the built-in detector: ``prefiqs_core.combined``)."""
        return self.label_path("combined")

    @property
    def combined_expected_fnmr(self):
        """Expected FNMR at FMR 1e-3 for the combined value (only where the calibration table has
        bands of combined fitted with the run's detector reference)."""
        return self.label_path("combined_expected_fnmr")

    @property
    def distinctiveness(self):
        """Reference percentile of how far the face's dense embedding sits from the average face's
        direction (only where ``combined`` averages it in: the calibration table has that reference)."""
        return self.label_path("distinctiveness")

    @property
    def sample_error(self):
        """Image-level failures (unreadable file, no face): always a sample field."""
        return self.sample_path("error")

    @property
    def min_quality(self):
        return self.sample_path("min_quality") if self.patches_field else None

    def vector(self, name: str) -> str:
        return self.label_path(name)

    @property
    def done(self) -> list[str]:
        """Sample fields of which one is set once a sample has been processed (for ``resume``)."""
        return [self.min_quality if self.patches_field else self.quality, self.sample_error]

    def all_paths(self, vectors=VECTORS, calibrated: bool = True, combined: bool = True,
                  distinctiveness: bool = False, combined_fnmr: bool = False) -> list[str]:
        paths = [self.quality, self.drift, self.error] + [self.vector(v) for v in vectors]
        if calibrated:
            paths += [self.percentile, self.expected_fnmr]
        if calibrated and combined:
            paths.append(self.combined)
            if distinctiveness:
                paths.append(self.distinctiveness)
            if combined_fnmr:
                paths.append(self.combined_expected_fnmr)
        if self.patches_field:
            paths += [self.sample_error, self.min_quality]
        return paths

    def brain_key(self, which: str) -> str:
        return f"{self.key}_{which}_umap"

    @property
    def brain_keys(self) -> list[str]:
        return [self.brain_key("dense"), self.brain_key("pruned")]

    @property
    def saved_view(self) -> str:
        return f"{self.key}_worst"


def run_exists(samples, run_key: str) -> bool:
    return run_key in samples._dataset.list_runs()


def is_prefiqs_run(samples, run_key: str) -> bool:
    return run_exists(samples, run_key) and samples._dataset.get_run_info(run_key).config.method == RUN_METHOD


def load_config(samples, run_key: str) -> dict:
    """The recorded configuration of run ``run_key`` (raises if it is not a PreFIQs run)."""
    if not is_prefiqs_run(samples, run_key):
        raise ValueError(f"no PreFIQs run with key {run_key!r} on dataset {samples._dataset.name!r}")
    cfg = samples._dataset.get_run_info(run_key).config.serialize()
    return {k: v for k, v in cfg.items() if k not in ("cls", "type", "method")}


def calibration_of(samples, run_key: str):
    """The calibration table run ``run_key`` converted its qualities with (kept whole in its record),
    or raises ``ValueError`` saying why the run has none."""
    from ..prefiqs_core.calibration import Calibration

    cfg = load_config(samples, run_key)
    table = cfg.get("calibration")
    if not table:
        why = cfg.get("calibration_absent") or "it was computed before calibration tables existed"
        raise ValueError(f"run {run_key!r} has no calibration table ({why}); give a raw quality threshold or "
                         "worst_percent, or rerun compute_prefiqs with calibration=<table.json>")
    return Calibration.from_dict(table)


def fields_of(samples, run_key: str) -> RunFields:
    return RunFields(run_key, load_config(samples, run_key).get("patches_field"))


def has_combined_fnmr(samples, run_key: str) -> bool:
    """Whether the run wrote ``K_combined_expected_fnmr`` (its table's bands of combined)."""
    return fields_of(samples, run_key).combined_expected_fnmr in (load_config(samples, run_key).get("fields") or [])


def has_combined(samples, run_key: str) -> bool:
    """Whether the run wrote ``K_combined`` (PreFIQs and the detector's score, 0-100)."""
    return fields_of(samples, run_key).combined in (load_config(samples, run_key).get("fields") or [])


# what a run's K_combined averages, by whether it averages distinctiveness in (labels and notes)
COMBINED_PARTS = {False: "PreFIQs and the detector's score",
                  True: "PreFIQs, the detector's score and distinctiveness"}


def combined_parts(samples, run_key: str) -> str:
    """What the run's ``K_combined`` averages, for labels: with distinctiveness where it wrote that."""
    fields = load_config(samples, run_key).get("fields") or []
    return COMBINED_PARTS[fields_of(samples, run_key).distinctiveness in fields]


def record_run(samples, run_key: str, config: dict, overwrite: bool = False):
    cfg = samples.init_run(method=RUN_METHOD, plugin_version=__version__, **config)
    samples.register_run(run_key, cfg, overwrite=overwrite)


def load_results(samples, run_key: str) -> dict:
    res = samples._dataset.load_run_results(run_key, cache=False, load_view=False)
    if res is None:
        return {}
    d = res.serialize()
    return {k: v for k, v in d.items() if k != "cls"}


def update_results(samples, run_key: str, **changes):
    """Merge ``changes`` into the run's results (the summary, the visualization keys...)."""
    data = load_results(samples, run_key) | changes
    dataset = samples._dataset
    dataset.save_run_results(run_key, dataset.init_run_results(run_key, **data), overwrite=True, cache=False)


def summary_stats(quality, drift, num_errors: int, combined=None) -> dict:
    """Summary of a run over every face it has scored so far (JSON-friendly floats); with the faces'
    ``combined`` values, their percentiles too (the panel's starting threshold when ranking by it)."""
    def scored(values):
        return np.asarray([v for v in (values or []) if v is not None], dtype=np.float64)

    def percentiles(x):
        levels = (5, 25, 50, 75, 95)
        return {str(p): float(v) for p, v in zip(levels, np.percentile(x, levels))}

    q, d, c = scored(quality), scored(drift), scored(combined)
    out = dict(num_scored=int(q.size), num_errors=int(num_errors))
    if q.size:
        out.update(quality_mean=float(q.mean()), quality_std=float(q.std()), quality_min=float(q.min()),
                   quality_max=float(q.max()), quality_percentiles=percentiles(q),
                   drift_mean=float(d.mean()) if d.size else None)
    if c.size:
        out["combined_percentiles"] = percentiles(c)
    return out


def delete_run(samples, run_key: str) -> dict:
    """Remove run ``run_key``: its fields, its visualization runs, its saved view, its tags and its record."""
    dataset = samples._dataset
    check_run_key(run_key)
    if not is_prefiqs_run(dataset, run_key):
        raise ValueError(f"no PreFIQs run with key {run_key!r} on dataset {dataset.name!r}")
    config = load_config(dataset, run_key)
    results = load_results(dataset, run_key)
    fields = RunFields(run_key, config.get("patches_field"))
    # The record lists what was written; the standard names are added in case a run was cut short.
    paths = list(dict.fromkeys((config.get("fields") or []) + fields.all_paths()))
    present = [p for p in paths if dataset.has_field(p)]
    # Embedded attributes first: deleting them after a parent would address a field that is gone.
    for path in sorted(present, key=lambda p: -p.count(".")):
        dataset.delete_sample_field(path, error_level=1)
    brain = [k for k in fields.brain_keys if k in dataset.list_brain_runs()]
    for key in brain:
        dataset.delete_brain_run(key)
    view = fields.saved_view if dataset.has_saved_view(fields.saved_view) else None
    if view:
        dataset.delete_saved_view(view)
    tagging = results.get("tagging") or {}
    if tagging.get("tag"):
        if tagging.get("label_tags") and fields.patches_field and dataset.has_field(fields.patches_field):
            dataset.untag_labels(tagging["tag"], label_fields=[fields.patches_field])
        else:
            dataset.untag_samples(tagging["tag"])
    dataset.delete_run(run_key)
    return dict(run_key=run_key, deleted_fields=present, deleted_brain_runs=brain, deleted_saved_view=view,
                removed_tag=tagging.get("tag"))
