"""The App face of the Python API: one ``foo.Operator`` per function, each a form plus a thin call.

Every long operator runs either immediately (``execute`` returns a generator that yields
``set_progress`` triggers, which the App shows as a progress bar) or delegated (``execute`` returns
the result dict, progress goes to ``ctx.set_progress`` and is stored on the delegated operation).
Each operator's ``__call__`` makes it usable from Python:
``foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")(dataset, patches_field="faces")``.
"""
from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types
import fiftyone as fo

from ..prefiqs_core.backbones import NAMES as BACKBONES
from ..prefiqs_core.checkpoints import CheckpointError, check_user_file
from ..prefiqs_core.defaults import default_pruning, exact_pruning
from ..prefiqs_core.pruning import METHODS as PRUNING_METHODS
from ..prefiqs_core.pruning import SPEC_HELP, parse_prune
from . import runs
from .detection import iter_detect_faces
from .scoring import DEFAULT_BACKBONE, iter_compute_prefiqs, split_choices
from .tagging import tag_low_quality
from .visualization import iter_compute_prefiqs_visualization
from .progress import drive

PLUGIN = "@prefiqs/prefiqs"
WHOLE_NETWORK = "(whole network)"


def form_pruning(p: dict):
    """The compute form's pruning as what ``compute_prefiqs`` takes: the spec string when typed;
    else exactly the copy the method, sparsity, prune-from and keep fields describe; else (an SDK
    call that gave only ``pruning``/``sparsity``, or nothing) those values, unchanged."""
    if p.get("prune"):
        return p["prune"]
    backbone = p.get("backbone") or DEFAULT_BACKBONE
    if not any(k in p for k in ("prune_from", "keep_first", "keep_last")):
        if p.get("sparsity") is None:
            return p.get("pruning")
        return exact_pruning(backbone, p.get("pruning"), p["sparsity"]).label()
    start = p.get("prune_from")
    return exact_pruning(backbone, p.get("pruning"), p.get("sparsity"), keep_first=bool(p.get("keep_first")),
                         keep_last=bool(p.get("keep_last")),
                         start=None if start in (None, "", WHOLE_NETWORK) else start).label()


# ------------------------------------------------------------------------------------------------
# shared plumbing
# ------------------------------------------------------------------------------------------------


def _run_progress(ctx, gen, notify):
    """Delegated: drain ``gen`` into ``ctx.set_progress``. Immediate: a generator of App triggers."""
    if ctx.delegated:
        return drive(gen, lambda f, label: ctx.set_progress(progress=f, label=label))
    return _immediate(ctx, gen, notify)


def _immediate(ctx, gen, notify):
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        yield ctx.trigger("set_progress", dict(progress=event.fraction, label=event.label))
    yield ctx.trigger("reload_dataset")
    yield ctx.trigger("notify", dict(message=notify(result), variant="success"))


def _sdk_ctx(sample_collection):
    if isinstance(sample_collection, fo.Dataset):
        return dict(dataset=sample_collection)
    return dict(dataset=sample_collection._dataset, view=sample_collection)


def _execute(uri, sample_collection, params, delegate):
    return foo.execute_operator(uri, ctx=dict(_sdk_ctx(sample_collection), params=params),
                                request_delegation=delegate)


def _delegate_input(inputs, large):
    inputs.bool("delegate", default=large, label="Delegate execution?",
                description="Queue the job for a delegated-operations worker (`fiftyone delegated launch`); "
                            "suggested for large views")


def _prefiqs_runs(ctx):
    return [k for k in ctx.dataset.list_runs() if runs.is_prefiqs_run(ctx.dataset, k)]


def _run_key_choice(ctx, inputs):
    keys = _prefiqs_runs(ctx)
    if not keys:
        inputs.view("none", types.Warning(label="No PreFIQs run on this dataset; run compute_prefiqs first"))
        return None
    choices = types.DropdownView()
    for k in keys:
        choices.add_choice(k, label=k)
    inputs.enum("run_key", choices.values(), default=keys[0], label="PreFIQs run", view=choices)
    return ctx.params.get("run_key", keys[0])


def _free_run_key(dataset, base="prefiqs"):
    """``base``, or the first of ``base_2``, ``base_3``... that no run of ``dataset`` uses."""
    taken = set(dataset.list_runs())
    n = 2
    key = base
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    return key


def _fields_of_type(ctx, doc_type):
    schema = ctx.dataset.get_field_schema(embedded_doc_type=doc_type)
    return sorted(schema)


def _suggest(names):
    view = types.AutocompleteView()
    for n in names:
        view.add_choice(n, label=n)
    return view


class _DelegableOperator(foo.Operator):
    def resolve_delegation(self, ctx):
        # None leaves the choice to the caller (execute_operator's request_delegation, the App's menu)
        delegate = ctx.params.get("delegate")
        return None if delegate is None else bool(delegate)


def _config(name, label, description, **kwargs):
    return foo.OperatorConfig(name=name, label=label, description=description, dynamic=True,
                              execute_as_generator=True, allow_immediate_execution=True,
                              allow_delegated_execution=True, **kwargs)


# ------------------------------------------------------------------------------------------------
# compute_prefiqs
# ------------------------------------------------------------------------------------------------


def _file_input(inputs, p, name, label, what, max_bytes, description):
    """An optional path typed in the form, checked (exists, a file, not too large) as it is typed."""
    prop = inputs.str(name, required=False, label=label, description=description)
    if p.get(name):
        try:
            check_user_file(p[name], what=what, max_bytes=max_bytes)
        except CheckpointError as e:
            prop.invalid, prop.error_message = True, str(e)


class ComputePrefiqs(_DelegableOperator):
    @property
    def config(self):
        return _config("compute_prefiqs", "PreFIQs: compute face quality",
                       "Score every face with PreFIQs (embedding drift under pruning)")

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = ctx.target_view()
        p = ctx.params
        proposed = _free_run_key(ctx.dataset)  # the form opens ready to run, not in an error state
        key = p.get("run_key") or proposed
        prop = inputs.str("run_key", default=proposed, label="Run key",
                          description="Prefix of every field written, and the key of the run record")
        exists = key in ctx.dataset.list_runs()
        if not key.isidentifier():
            prop.invalid, prop.error_message = True, "The run key must be a Python identifier"
        elif exists and not (p.get("overwrite") or p.get("resume")):
            prop.invalid = True
            prop.error_message = f"Run {key!r} exists: tick overwrite or resume"

        det_fields = _fields_of_type(ctx, fo.Detections)
        kp_fields = _fields_of_type(ctx, fo.Keypoints)
        # free text with suggestions: detect=True may name a field that does not exist yet
        inputs.str("patches_field", required=False, label="Face patches field",
                   description="Score each Detection of this field (leave empty to score whole images)",
                   view=_suggest(det_fields))
        inputs.str("keypoints_field", required=False, label="Landmarks field",
                   description="5-point Keypoints linked to the faces (arcface5 order unless recorded)",
                   view=_suggest(kp_fields))
        inputs.bool("aligned", default=False, label="Images are aligned face chips")
        inputs.bool("detect", default=not det_fields, label="Detect faces first",
                    description="Built-in dlib detector; with a patches field, detections are written there")
        if not (p.get("patches_field") or p.get("aligned") or p.get("detect", not det_fields)):
            inputs.view("how", types.Warning(label="Choose a patches field, aligned images, or detection"))

        backbone = p.get("backbone") or DEFAULT_BACKBONE
        spec = default_pruning(backbone)[0]
        inputs.enum("backbone", list(BACKBONES), default=DEFAULT_BACKBONE, label="Backbone",
                    view=types.DropdownView())
        ck = inputs.str("checkpoint", required=False, label="Checkpoint",
                        description="Weights file for the backbone (default: the backbone's own)")
        if p.get("checkpoint"):
            try:
                check_user_file(p["checkpoint"])  # a typed path: checked, never passed to a shell
            except CheckpointError as e:
                ck.invalid, ck.error_message = True, str(e)
        inputs.enum("pruning", list(PRUNING_METHODS), default=spec.method, label="Pruning method",
                    view=types.DropdownView())
        sp = inputs.float("sparsity", default=spec.sparsity, label="Sparsity",
                          description="Fraction of weights pruned, in (0, 1)")
        s = p.get("sparsity")
        if s is not None and not 0 < s < 1:
            sp.invalid, sp.error_message = True, "Sparsity must lie strictly between 0 and 1"
        splits = split_choices(backbone)
        start = spec.start if spec.start in splits else WHOLE_NETWORK
        inputs.enum("prune_from", [WHOLE_NETWORK, *splits], default=start, label="Prune from",
                    description="Prune only from this layer on: the dense part before it runs once for "
                                "both networks (cheaper; see the README's cost/quality table)",
                    view=types.DropdownView())
        inputs.bool("keep_first", default=spec.keep_first, label="Keep the first layer dense")
        inputs.bool("keep_last", default=spec.keep_last, label="Keep the embedding layer dense")
        pr = inputs.str("prune", required=False, label="Pruning spec (overrides the four fields above)",
                        description=SPEC_HELP)
        if p.get("prune"):
            try:
                parse_prune(p["prune"])
            except ValueError as e:
                pr.invalid, pr.error_message = True, str(e)
        elif p.get("prune_from") not in (None, WHOLE_NETWORK, *splits):
            inputs.view("split", types.Warning(label=f"{p['prune_from']} is not a split point of {backbone}"))
        _file_input(inputs, p, "calibration", "Calibration table", "calibration table", 16 << 20,
                    "JSON from `python -m prefiqs_core calibrate`, for percentile and expected FNMR fields "
                    "(default: the shipped table when it fits backbone and pruning)")
        _file_input(inputs, p, "detector_reference", "Detector reference", "detector reference", 1 << 20,
                    "JSON from `python -m prefiqs_core detector-reference`, for the combined field "
                    "(default: the shipped one, dlib's HOG detector)")
        inputs.int("batch_size", default=64, label="Batch size")
        inputs.str("device", required=False, label="Device", description="cpu, cuda, cuda:1... (default: auto)")
        inputs.bool("store_embeddings", default=True, label="Store embeddings",
                    description="Dense, pruned and drift vectors (needed for the UMAP maps)")
        inputs.bool("overwrite", default=False, label="Overwrite an existing run")
        inputs.bool("resume", default=False, label="Resume: score only samples not scored yet")
        ns = inputs.int("num_shards", default=1, label="Shards (parallel workers)",
                        description="Queue N delegated runs, one per `fiftyone delegated launch` worker")
        if (p.get("num_shards") or 1) < 1:
            ns.invalid, ns.error_message = True, "At least 1"
        _delegate_input(inputs, len(view) > 500)
        return types.Property(inputs, view=types.View(label="PreFIQs: compute face quality"))

    def execute(self, ctx):
        p = ctx.params
        if (p.get("num_shards") or 1) > 1:
            return self._queue_shards(ctx, p)
        gen = iter_compute_prefiqs(
            ctx.target_view(), run_key=p.get("run_key") or "prefiqs", patches_field=p.get("patches_field"),
            keypoints_field=p.get("keypoints_field"), aligned=p.get("aligned", False),
            detect=p.get("detect", False), backbone=p.get("backbone") or DEFAULT_BACKBONE,
            checkpoint=p.get("checkpoint") or None, pruning=form_pruning(p),
            batch_size=p.get("batch_size", 64), device=p.get("device") or None,
            store_embeddings=p.get("store_embeddings", True), overwrite=p.get("overwrite", False),
            resume=p.get("resume", False), calibration=p.get("calibration") or None,
            detector_reference=p.get("detector_reference") or None)
        return _run_progress(ctx, gen, lambda r: f"PreFIQs {r['run_key']}: {r['num_scored']} faces scored, "
                                                 f"{r['num_errors']} errors")

    def _queue_shards(self, ctx, p):
        from .shards import queue_compute_prefiqs_shards

        keys = ("patches_field", "keypoints_field", "aligned", "detect", "backbone", "checkpoint",
                "batch_size", "device", "store_embeddings", "overwrite", "resume", "calibration",
                "detector_reference")
        key = p.get("run_key") or "prefiqs"
        queued = queue_compute_prefiqs_shards(ctx.target_view(), int(p["num_shards"]), run_key=key,
                                              pruning=form_pruning(p),
                                              **{k: p[k] for k in keys if p.get(k) not in (None, "")})
        if ctx.delegated:
            return dict(run_key=key, shards=queued)
        msg = f"Queued {len(queued)} shards of {key}: start one `fiftyone delegated launch` per GPU/machine"
        return (t for t in [ctx.trigger("notify", dict(message=msg, variant="info"))])

    def __call__(self, sample_collection, run_key="prefiqs", patches_field=None, keypoints_field=None,
                 aligned=False, detect=False, backbone=DEFAULT_BACKBONE, checkpoint=None, pruning=None,
                 sparsity=None, batch_size=64, device=None, store_embeddings=True, overwrite=False,
                 resume=False, num_shards=1, delegate=False, calibration=None, detector_reference=None):
        """See ``operators.scoring.compute_prefiqs``. Returns the run's summary (or, when delegated,
        the ``ExecutionResult`` of the queued operation)."""
        params = dict(run_key=run_key, patches_field=patches_field, keypoints_field=keypoints_field,
                      aligned=aligned, detect=detect, backbone=backbone, checkpoint=checkpoint,
                      pruning=pruning, sparsity=sparsity, batch_size=batch_size, device=device,
                      store_embeddings=store_embeddings, overwrite=overwrite, resume=resume,
                      num_shards=num_shards, delegate=delegate,
                      calibration=str(calibration) if calibration else None,
                      detector_reference=str(detector_reference) if detector_reference else None)
        result = _execute(self.uri, sample_collection, {k: v for k, v in params.items() if v is not None},
                          delegate)
        result.raise_exceptions()
        if delegate:
            return result
        return runs.load_results(sample_collection, run_key).get("summary")


# ------------------------------------------------------------------------------------------------
# detect_faces
# ------------------------------------------------------------------------------------------------


class DetectFaces(_DelegableOperator):
    @property
    def config(self):
        return _config("detect_faces", "PreFIQs: detect faces",
                       "Detect faces and 5-point landmarks (dlib) into Detections + Keypoints fields")

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = ctx.target_view()
        inputs.str("label_field", default="faces", label="Detections field")
        inputs.str("keypoints_field", required=False, label="Landmarks field",
                   description="Default: <detections field>_landmarks")
        inputs.float("confidence_thresh", default=0.0, label="Confidence threshold",
                     description="Keep faces whose dlib detector score exceeds this (scores run about -1..3)")
        inputs.int("upsample", default=1, label="Upsample", description="Finds smaller faces, slower")
        inputs.bool("overwrite", default=False, label="Re-detect samples already processed")
        _delegate_input(inputs, len(view) > 500)
        return types.Property(inputs, view=types.View(label="PreFIQs: detect faces"))

    def execute(self, ctx):
        p = ctx.params
        gen = iter_detect_faces(ctx.target_view(), label_field=p.get("label_field") or "faces",
                                keypoints_field=p.get("keypoints_field") or None,
                                confidence_thresh=p.get("confidence_thresh", 0.0), upsample=p.get("upsample", 1),
                                overwrite=p.get("overwrite", False))
        return _run_progress(ctx, gen, lambda r: f"{r['num_faces']} faces in {r['num_samples']} images "
                                                 f"({r['num_skipped']} skipped, {r['num_errors']} unreadable)")

    def __call__(self, sample_collection, label_field="faces", keypoints_field=None, confidence_thresh=0.0,
                 upsample=1, overwrite=False, delegate=False):
        """See ``operators.detection.detect_faces``."""
        params = dict(label_field=label_field, keypoints_field=keypoints_field,
                      confidence_thresh=confidence_thresh, upsample=upsample, overwrite=overwrite,
                      delegate=delegate)
        result = _execute(self.uri, sample_collection, {k: v for k, v in params.items() if v is not None},
                          delegate)
        result.raise_exceptions()
        return result


# ------------------------------------------------------------------------------------------------
# compute_prefiqs_visualization
# ------------------------------------------------------------------------------------------------


class ComputePrefiqsVisualization(_DelegableOperator):
    @property
    def config(self):
        return _config("compute_prefiqs_visualization", "PreFIQs: UMAP of dense and pruned embeddings",
                       "One UMAP of a run's dense and pruned embeddings, as two brain visualization runs")

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = ctx.target_view()
        key = _run_key_choice(ctx, inputs)
        if key is not None:
            taken = [k for k in runs.RunFields(key).brain_keys if k in ctx.dataset.list_brain_runs()]
            prop = inputs.bool("overwrite", default=False, label="Overwrite existing maps")
            if taken and not ctx.params.get("overwrite"):
                prop.invalid, prop.error_message = True, f"{', '.join(taken)} exist: tick overwrite"
        inputs.int("seed", default=51, label="Seed")
        inputs.int("num_neighbors", default=15, label="UMAP neighbours")
        inputs.float("min_dist", default=0.1, label="UMAP min_dist")
        inputs.int("pca_dims", default=50, label="PCA dimensions before UMAP (large sets)")
        _delegate_input(inputs, len(view) > 5000)
        return types.Property(inputs, view=types.View(label="PreFIQs: UMAP"))

    def execute(self, ctx):
        p = ctx.params
        gen = iter_compute_prefiqs_visualization(
            ctx.target_view(), run_key=p.get("run_key") or "prefiqs", seed=p.get("seed", 51), num_neighbors=p.get("num_neighbors", 15),
            min_dist=p.get("min_dist", 0.1), pca_dims=p.get("pca_dims", 50), overwrite=p.get("overwrite", False))
        return _run_progress(ctx, gen, lambda r: f"maps {', '.join(r['brain_keys'])} of {r['num_points']} faces")

    def __call__(self, sample_collection, run_key="prefiqs", seed=51, num_neighbors=15, min_dist=0.1, pca_dims=50,
                 overwrite=False, delegate=False):
        """See ``operators.visualization.compute_prefiqs_visualization``."""
        params = dict(run_key=run_key, seed=seed, num_neighbors=num_neighbors, min_dist=min_dist, pca_dims=pca_dims,
                      overwrite=overwrite, delegate=delegate)
        result = _execute(self.uri, sample_collection, params, delegate)
        result.raise_exceptions()
        if delegate:
            return result
        return runs.load_results(sample_collection, run_key).get("visualizations")


# ------------------------------------------------------------------------------------------------
# tag_low_quality and delete_prefiqs_run: quick, always immediate
# ------------------------------------------------------------------------------------------------


def _default_by(dataset, run_key) -> str:
    """What the tag form ranks by unless the user picks: ``combined`` on a run that wrote it (as the
    panel opens), else the quality. The SDK call keeps ``by="quality"``: a script's threshold means
    what it meant."""
    return "combined" if runs.is_prefiqs_run(dataset, run_key) and runs.has_combined(dataset, run_key) else "quality"


class TagLowQuality(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="tag_low_quality", label="PreFIQs: tag low-quality faces",
                                  description="Tag faces below a quality threshold, the worst percent, a "
                                              "reference percentile or an expected FNMR, and save a worst-first "
                                              "view", dynamic=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        ctx.target_view()
        key = _run_key_choice(ctx, inputs)
        if key is None:
            return types.Property(inputs)
        by = _default_by(ctx.dataset, key)
        if by == "combined":
            choice = types.Dropdown(label="Rank faces by")
            choice.add_choice("quality", label="quality (PreFIQs)")
            choice.add_choice("combined", label=f"combined: {runs.combined_parts(ctx.dataset, key)} (0-100)")
            # as the panel: a run that wrote combined is ranked by it unless the user picks the quality
            inputs.enum("by", choice.values(), default="combined", view=choice, label="Rank faces by")
            by = ctx.params.get("by") or by
        if by == "combined":
            thr = inputs.float("threshold", required=False, label="Combined threshold",
                               description="0-100: tag faces whose combined value is below this")
        else:
            thr = inputs.float("threshold", required=False, label="Quality threshold",
                               description="Tag faces whose quality is below this")
        inputs.float("worst_percent", required=False, label="...or the worst percent")
        calibrated = None
        if by == "quality":
            try:
                runs.calibration_of(ctx.dataset, key)
            except ValueError as e:
                calibrated = str(e)
            allowed = ("percentile", "max_expected_fnmr") if calibrated is None else ()
        else:
            if not runs.has_combined_fnmr(ctx.dataset, key):
                calibrated = (runs.load_config(ctx.dataset, key).get("combined_expected_fnmr_absent")
                              or "this run has no expected FNMR of combined")
            allowed = ("max_expected_fnmr",) if calibrated is None else ()
        if "percentile" in allowed:
            inputs.float("percentile", required=False, label="...or below this reference percentile",
                         description="0-100: share of the calibration's reference faces with lower quality")
        if "max_expected_fnmr" in allowed:
            inputs.float("max_expected_fnmr", required=False, label="...or expected FNMR above",
                         description="A rate, e.g. 0.05: tag faces whose expected FNMR at FMR 1e-3 exceeds it"
                                     + (" (by the combined value's bands)" if by == "combined" else ""))
        if calibrated is not None:
            what = "Percentile and expected-FNMR thresholds" if by == "quality" else "Expected-FNMR threshold"
            inputs.view("uncalibrated", types.Notice(label=f"{what}: {calibrated}"))
        names = ("threshold", "worst_percent") + allowed
        refused = [n for n in ("percentile", "max_expected_fnmr") if n not in allowed and ctx.params.get(n) is not None]
        if refused:
            thr.invalid, thr.error_message = True, (
                "Percentile thresholds convert the quality, not the combined value"
                if by == "combined" and calibrated is None else f"Percentile and expected-FNMR thresholds: {calibrated}")
        elif sum(ctx.params.get(n) is not None for n in names) != 1:
            words = [{"threshold": "threshold", "worst_percent": "worst percent", "percentile": "percentile",
                      "max_expected_fnmr": "expected FNMR"}[n] for n in names]
            thr.invalid, thr.error_message = True, ("Give a threshold or a worst percent" if len(words) == 2 else
                                                    f"Give exactly one of {', '.join(words[:-1])} or {words[-1]}")
        inputs.str("tag", default="low_quality", label="Tag")
        inputs.bool("label_tags", required=False, label="Tag face labels (patch runs; default yes)")
        inputs.bool("save_view", default=True, label="Save the view <run>_worst")
        return types.Property(inputs, view=types.View(label="PreFIQs: tag low-quality faces"))

    def execute(self, ctx):
        p = ctx.params
        info = tag_low_quality(ctx.target_view(), run_key=p.get("run_key") or "prefiqs", threshold=p.get("threshold"),
                               worst_percent=p.get("worst_percent"), tag=p.get("tag") or "low_quality",
                               label_tags=p.get("label_tags"), save_view=p.get("save_view", True),
                               percentile=p.get("percentile"), max_expected_fnmr=p.get("max_expected_fnmr"),
                               by=p.get("by") or _default_by(ctx.dataset, p.get("run_key") or "prefiqs"))
        ctx.ops.reload_dataset()
        if info["saved_view"]:
            ctx.ops.set_view(name=info["saved_view"])
        return info

    def __call__(self, sample_collection, run_key="prefiqs", threshold=None, worst_percent=None,
                 tag="low_quality", label_tags=None, save_view=True, percentile=None, max_expected_fnmr=None,
                 by="quality"):
        """See ``operators.tagging.tag_low_quality``; returns its result dict."""
        params = dict(run_key=run_key, threshold=threshold, worst_percent=worst_percent, tag=tag,
                      label_tags=label_tags, save_view=save_view, percentile=percentile,
                      max_expected_fnmr=max_expected_fnmr, by=by)
        result = _execute(self.uri, sample_collection, {k: v for k, v in params.items() if v is not None}, False)
        result.raise_exceptions()
        return result.result


class DeletePrefiqsRun(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(name="delete_prefiqs_run", label="PreFIQs: delete a run",
                                  description="Remove a run's fields, UMAP maps, saved view, tags and record",
                                  dynamic=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = _run_key_choice(ctx, inputs)
        if key is not None:
            inputs.view("warn", types.Warning(label=f"This deletes every field of run {key!r}"))
        return types.Property(inputs, view=types.View(label="PreFIQs: delete a run"))

    def execute(self, ctx):
        info = runs.delete_run(ctx.dataset, ctx.params.get("run_key") or "prefiqs")
        ctx.ops.reload_dataset()
        return info

    def __call__(self, sample_collection, run_key="prefiqs"):
        """See ``operators.runs.delete_run``; returns what was removed."""
        result = _execute(self.uri, sample_collection, dict(run_key=run_key), False)
        result.raise_exceptions()
        return result.result


OPERATORS = [ComputePrefiqs, DetectFaces, ComputePrefiqsVisualization, TagLowQuality, DeletePrefiqsRun]
