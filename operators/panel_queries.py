"""The database side of the Face Quality panel: which run, which path, which view, which counts.

Everything here works on a sample collection and returns small values or FiftyOne views; the
heavy lifting is done by MongoDB aggregations (``bounds``, ``histogram_values``, ``count``) so
that the panel stays responsive on 100k faces. No ``foo.Panel`` or App plumbing lives here, so
each function can be tested on its own.

A run is either sample-level (``K_quality`` on each sample) or patch-level (``K_quality`` on
each Detection of ``patches_field``). The current App view may itself be a patches view of that
field (after "Show worst first"), where each row is one face and the quality path loses its
``.detections`` part; :class:`Scope` hides that difference from the panel.
"""
from __future__ import annotations

from dataclasses import dataclass

import fiftyone.core.aggregations as foa
from fiftyone import ViewField as F

from . import runs

HIST_BINS = 20


def prefiqs_runs(dataset) -> list[str]:
    """Keys of every PreFIQs run on ``dataset`` (sample- and patch-level), in creation order."""
    return [k for k in dataset.list_runs() if runs.is_prefiqs_run(dataset, k)]


@dataclass(frozen=True)
class Scope:
    """One run seen through one view: the paths to query and how faces are counted there."""

    fields: runs.RunFields
    view: object  # the SampleCollection the App shows
    value: str = "quality"  # what ranks the faces: the quality, or "combined" (K_combined)

    @property
    def patch_run(self) -> bool:
        return bool(self.fields.patches_field)

    @property
    def in_patches(self) -> bool:
        """The view is a patches view of this run's field: one face per row."""
        view = self.view
        return bool(self.patch_run and view._is_patches
                    and getattr(view, "_patches_field", None) == self.fields.patches_field)

    @property
    def leaf(self) -> str:
        """The ranked value's attribute name on a Detection (or the sample field of a sample run)."""
        return f"{self.fields.key}_{self.value}"

    def path_of(self, name: str) -> str:
        """Where the run's per-face value ``name`` (quality, drift, error) lives in :attr:`view`
        (``faces.K_quality`` inside a patches view)."""
        if self.in_patches:
            return f"{self.fields.patches_field}.{self.fields.key}_{name}"
        return self.fields.label_path(name)

    @property
    def quality_path(self) -> str:
        """Where the ranked value lives: the quality, or ``K_combined`` for a scope of ``value="combined"``."""
        return self.path_of(self.value)

    @property
    def samples(self):
        """The sample-level collection behind the view (patches views are unwrapped)."""
        view = self.view
        if view._is_patches:
            return view._source_collection
        return view

    @property
    def unit(self) -> str:
        return "faces" if self.patch_run else "samples"

    def count_faces(self, view=None) -> int:
        """Number of scored faces (or scored samples) in ``view`` (default: :attr:`view`)."""
        view = self.view if view is None else view
        return int(view.count(self._path_in(view)))

    def _path_in(self, view) -> str:
        return Scope(self.fields, view, self.value).quality_path

    def _quality_filter(self, expr):
        """``view`` restricted to *scored* faces whose quality satisfies ``expr`` (an expression on the value).

        MongoDB orders a missing value before every number, so ``q < t`` alone would also match the
        unscored and errored faces; they never belong to a quality range.
        """
        if self.patch_run:
            # filter_labels works on a sample view and on a patches view of the same field alike
            q = F(self.leaf)
            return self.view.filter_labels(self.fields.patches_field, q.exists() & expr(q))
        q = F(self.quality_path)
        return self.view.match(q.exists() & expr(q))

    def below(self, threshold: float):
        """Faces of the view with quality strictly below ``threshold`` (the rule of tag_low_quality)."""
        return self._quality_filter(lambda q: q < float(threshold))

    def count_below(self, threshold: float) -> int:
        return self.count_faces(self.below(threshold))

    def in_range(self, lo: float, hi: float, include_hi: bool = False):
        """Faces of the view with ``lo <= quality < hi`` (``<= hi`` for the last histogram bar)."""
        lo, hi = float(lo), float(hi)
        if include_hi:
            return self._quality_filter(lambda q: (q >= lo) & (q <= hi))
        return self._quality_filter(lambda q: (q >= lo) & (q < hi))

    def worst_first(self):
        """Scored faces sorted by quality, worst first: face patches for a patch-level run."""
        if not self.patch_run:
            return self.view.exists(self.quality_path).sort_by(self.quality_path)
        pf = self.fields.patches_field
        # unscored faces (errors) have no quality; keep them out rather than sorting them first
        scored = self.samples.filter_labels(pf, F(self.leaf).exists())
        return scored.to_patches(pf).sort_by(f"{pf}.{self.leaf}")

    def count_errors(self) -> int:
        """Faces (or samples) of the view the run could not score: ``K_error`` set, plus for patch
        runs the images that failed as a whole (unreadable, no face)."""
        n = int(self.view.count(self.path_of("error")))
        if self.patch_run and not self.in_patches:
            n += int(self.view.count(self.fields.sample_error))
        return n

    def errors_view(self):
        """What "Show them" displays: the samples holding an error of this run (faces or images)."""
        if not self.patch_run:
            return self.view.exists(self.fields.error)
        pf, err = self.fields.patches_field, f"{self.fields.key}_error"
        failed = F(f"{pf}.detections").filter(F(err).exists()).length() > 0
        return self.samples.match(F(self.fields.sample_error).exists() | failed)

    def below_view(self, threshold: float):
        """What "Show below threshold" displays: the faces below it, worst first (patches for patch runs)."""
        if not self.patch_run:
            return self.below(threshold).sort_by(self.quality_path)
        pf = self.fields.patches_field
        below = Scope(self.fields, self.samples, self.value).below(threshold)
        return below.to_patches(pf).sort_by(f"{pf}.{self.leaf}")


def scope_of(ctx_view, dataset, run_key: str, value: str = "quality") -> Scope:
    return Scope(runs.fields_of(dataset, run_key), ctx_view, value)


def combined_default_threshold(dataset, fields: runs.RunFields) -> float:
    """A starting combined threshold: the run's 5th percentile of ``K_combined``, interpolated as
    the quality's is (from the run's summary; a nearest-rank percentile of a few faces is their
    lowest value, below which nothing lies), else the database's over ``dataset``, else 5."""
    pct = _summary_5th(dataset, fields.key, "combined_percentiles")
    if pct is not None:
        return pct
    q = dataset.quantiles(fields.combined, [0.05])
    return 5.0 if not q or q[0] is None else round(float(q[0]), 4)


def quality_bounds(scope: Scope):
    """``(lo, hi)`` of quality in the view, or ``(None, None)`` when nothing is scored there."""
    lo, hi = scope.view.bounds(scope.quality_path)
    return lo, hi


def histogram(scope: Scope, bins: int = HIST_BINS):
    """The quality histogram of the view, computed by the database.

    Returns ``None`` when nothing is scored, else a dict with ``counts``, ``edges`` (``bins + 1``)
    and ``total``. The top edge is nudged above the maximum so that the best face falls inside
    the last bin (MongoDB buckets are half-open) and clicking that bar selects it.
    """
    lo, hi = quality_bounds(scope)
    if lo is None:
        return None
    true_lo, true_hi = lo, hi  # what the panel reports; the widening below only shapes the bars
    span = hi - lo
    if span < 1e-9:  # a single value (or all equal): give the bar some width
        lo, hi = lo - 0.005, hi + 0.005
        span = hi - lo
    top = hi + span * 1e-6
    # asked together with the count, FiftyOne runs one $facet pipeline over only the fields they
    # read: 0.37 s on 100k samples, where the histogram alone took 1.7 s
    hist, total = scope.view.aggregate([foa.HistogramValues(scope.quality_path, bins=bins, range=[lo, top]),
                                        foa.Count(scope.quality_path)])
    counts, edges, _ = hist
    return dict(counts=[int(c) for c in counts], edges=[float(e) for e in edges], total=int(total),
                lo=float(true_lo), hi=float(true_hi))


def _summary_5th(dataset, run_key: str, name: str):
    """The 5th percentile the run's summary keeps under ``name`` (rounded for the slider), or None."""
    pct = ((runs.load_results(dataset, run_key).get("summary") or {}).get(name) or {}).get("5")
    return None if pct is None else round(float(pct), 4)


def default_threshold(dataset, run_key: str, lo=None, hi=None) -> float:
    """A starting threshold: the run's 5th percentile of quality, else the low end of the view."""
    pct = _summary_5th(dataset, run_key, "quality_percentiles")
    if pct is not None:
        return pct
    if lo is not None and hi is not None:
        return round(lo + 0.05 * (hi - lo), 4)
    return 0.5
