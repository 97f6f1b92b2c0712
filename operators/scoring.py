"""``compute_prefiqs``: score every face of a sample collection and store the results as fields.

The data path: sample (or face patch) → aligned chip (``faces.py``) → dense and pruned embeddings
→ drift → fields, one batch of samples at a time, each batch written with one bulk update per field.
"""
from __future__ import annotations

import functools
import numbers
import time
from collections import OrderedDict

import numpy as np
import fiftyone as fo
from fiftyone import ViewField as F

from ..prefiqs_core.backbones import load_backbone
from ..prefiqs_core.calibration import resolve as resolve_calibration
from ..prefiqs_core.checkpoints import check_user_file
from ..prefiqs_core.defaults import DEFAULT_BACKBONE, default_pruning, exact_pruning
from ..prefiqs_core.pruning import PruneSpec, parse_prune
from ..prefiqs_core.scoring import PreFIQs
from . import runs
from .detection import _declare as _declare_detection_fields
from .detection import _record_detector
from .detection import default_keypoints_field, iter_detect_faces
from .faces import ImageError, match_keypoints, patch_chips, whole_images
from .progress import Progress, chunks, drive, scaled

_SCORERS: "OrderedDict[tuple, PreFIQs]" = OrderedDict()
_MAX_SCORERS = 2  # each holds a dense and a pruned network; keep the cache small


def compute_prefiqs(samples, run_key="prefiqs", patches_field=None, keypoints_field=None, aligned=False,
                    detect=False, backbone=DEFAULT_BACKBONE, checkpoint=None, pruning=None, sparsity=None,
                    batch_size=64, device=None, store_embeddings=True, overwrite=False, resume=False,
                    calibration=None, detector_reference=None, progress=None) -> dict:
    """Scores the face image quality of ``samples`` with PreFIQs and stores it in fields.

    PreFIQs measures how far a face's L2-normalised embedding moves when the recognition network
    is pruned: ``drift = ‖d/‖d‖ − p/‖p‖‖ ∈ [0, 2]``, and ``quality = 1 − drift / 2`` (higher is
    better).

    Where the faces come from (exactly one of):

    -   ``patches_field``: every ``fo.Detection`` of this Detections field is a face, aligned
        with its 5 landmarks from ``keypoints_field`` when given (linked by ``fo.Instance``, else by
        position), otherwise from its box alone
    -   ``aligned=True``: each image already is an aligned face chip (it is only resized)
    -   ``detect=True``: faces are detected with the built-in dlib detector. Without
        ``patches_field`` the best face of each image is scored at sample level; with it,
        faces are first detected into ``patches_field`` / ``keypoints_field`` (see
        :func:`operators.detection.detect_faces`, samples already detected are kept) and scored per face

    Fields written, for run key ``K``:

    -   sample-level runs: ``K_quality``, ``K_drift``, ``K_error`` on each sample
    -   patch-level runs: ``K_quality``, ``K_drift``, ``K_error`` on each Detection, plus sample
        fields ``K_min_quality`` (the worst face; for sorting) and ``K_error`` (image-level failures)
    -   when ``store_embeddings``: ``VectorField`` s ``K_dense``, ``K_pruned``, ``K_drift_vector``
        beside the quality
    -   when a calibration table applies (``calibration``, or the shipped table of the backbone's
        default pruning and weights): ``K_percentile`` (share of reference faces with lower quality,
        0–100) and ``K_expected_fnmr`` (expected FNMR at FMR 1e-3) beside the quality. Without one
        they are absent and the run's config says why (``calibration_absent``)
    -   with a calibration table, for faces the built-in detector found (``detect=True``, or a
        ``patches_field`` written by ``detect_faces`` at upsample 1): ``K_combined``, the quality's
        and the detector score's reference percentiles averaged (``prefiqs_core.combined``; higher is
        better); where the calibration table has a distinctiveness reference (dlib's), its
        percentile is averaged in too and written as ``K_distinctiveness``. For other faces it is
        absent and the run's config says why (``combined_absent``)
    -   beside ``K_combined``, where the calibration table has bands of the combined value fitted
        with the run's detector reference (the shipped tables do, with the shipped reference):
        ``K_combined_expected_fnmr``, the expected FNMR at FMR 1e-3 of a pair whose worse face has
        that combined value; else the config says why (``combined_expected_fnmr_absent``)

    Faces that cannot be scored (unreadable image, no face, degenerate box) get their reason in
    ``K_error``; they never stop the run. A custom run ``K`` (``samples.get_run_info(K)``)
    records the full configuration and its results hold summary statistics over the dataset.

    Args:
        samples: a :class:`fiftyone.core.collections.SampleCollection` (dataset or sample view)
        run_key ("prefiqs"): the run key, also the prefix of every field written
        patches_field (None): a ``fo.Detections`` field of faces
        keypoints_field (None): a ``fo.Keypoints`` field with 5 landmarks per face. The convention
            is read from each keypoint's ``convention`` attribute, else the field's
            ``info["landmark_convention"]``, else ``"arcface5"``
        aligned (False): the images are aligned chips
        detect (False): detect faces first
        backbone ("sface"): a name from ``prefiqs_core.backbones.NAMES``
        checkpoint (None): a weights file for the backbone (default: the backbone's own)
        pruning (None): the pruning method (``prefiqs_core.pruning.METHODS``); a ``PruneSpec`` or
            a list of them (an ensemble) is also accepted. Default: the engine's default for the backbone
        sparsity (None): the fraction of weights pruned; default from the engine
        batch_size (64): samples per batch (read, scored and written together)
        device (None): ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: CUDA when available
        store_embeddings (True): store the embedding vectors; ``True`` for all of ``"dense"``,
            ``"pruned"``, ``"drift_vector"``, ``False`` for none, or a list of those names
        overwrite (False): replace an existing run ``K`` (its fields, visualizations and record)
        resume (False): continue an existing run ``K``, scoring only samples not processed yet;
            the configuration must match the recorded one
        calibration (None): a calibration table (JSON, ``python -m prefiqs_core calibrate``); it must
            have been made for this backbone, pruning and weights file, else the run is refused.
            Default: the shipped table when it applies
        detector_reference (None): a detector reference (JSON, ``python -m prefiqs_core
            detector-reference``) for ``K_combined``; it must be for the detector and upsample that
            found the faces and needs a calibration table, else the run is refused. Default: the
            shipped reference (dlib's HOG detector on LFW development faces) where it applies
        progress (None): a callable ``progress(fraction, label)``

    Returns:
        a dict: ``run_key``, ``num_samples`` processed in this call, ``num_scored`` and
        ``num_errors`` (faces, or images without a usable face) in this call, ``errors``
        (up to 50 ``{"id", "filepath", "error"}`` rows) and ``summary``, the run's statistics
        over all of its fields (as stored in its results)
    """
    return drive(iter_compute_prefiqs(samples, run_key=run_key, patches_field=patches_field,
                                      keypoints_field=keypoints_field, aligned=aligned, detect=detect,
                                      backbone=backbone, checkpoint=checkpoint, pruning=pruning,
                                      sparsity=sparsity, batch_size=batch_size, device=device,
                                      store_embeddings=store_embeddings, overwrite=overwrite,
                                      resume=resume, calibration=calibration,
                                      detector_reference=detector_reference), progress)


def resolve_pruning(backbone_name: str, pruning=None, sparsity=None) -> list[PruneSpec]:
    """The pruned copies asked for.

    ``pruning`` may be a ``PruneSpec``, a list of them (an ensemble), a spec string such as
    ``"global_l1@0.5+from:blocks.10"`` (``prefiqs_core.pruning.parse_prune``), or a method name.
    A method name and/or ``sparsity`` mean exactly that copy over the whole network: no other
    option is taken from the default. Nothing given: the engine's default for the backbone.
    """
    if isinstance(pruning, PruneSpec):
        return [pruning]
    if isinstance(pruning, (list, tuple)):
        return list(pruning)
    if isinstance(pruning, str) and "@" in pruning:
        if sparsity is not None:
            raise ValueError("the pruning spec string already gives the sparsity; leave sparsity unset")
        return parse_prune(pruning)
    if pruning is None and sparsity is None:
        return default_pruning(backbone_name)
    return [exact_pruning(backbone_name, pruning, sparsity)]


@functools.lru_cache(maxsize=8)
def split_choices(backbone_name: str) -> tuple[str, ...]:
    """The backbone's split points, for the form (structure only: iResNets need no checkpoint)."""
    from ..prefiqs_core.backbones import IRESNETS, MAGFACES
    from ..prefiqs_core.trunk import split_points

    try:
        if backbone_name in IRESNETS or backbone_name in MAGFACES:
            from ..prefiqs_core.backbones.iresnet import build_iresnet
            return tuple(split_points(build_iresnet("r" + backbone_name.rsplit("iresnet", 1)[1])))
        return tuple(split_points(load_backbone(backbone_name).net))
    except (ValueError, FileNotFoundError, OSError):  # e.g. "onnx" without a file: whole network only
        return ()


def resolve_device(device=None) -> str:
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def get_scorer(backbone=DEFAULT_BACKBONE, checkpoint=None, specs=None, device=None) -> PreFIQs:
    """A ``PreFIQs`` scorer, cached per process: pruning a copy costs seconds, scoring a face milliseconds."""
    specs = specs or resolve_pruning(backbone)
    key = (backbone, str(checkpoint) if checkpoint else None, tuple(specs), resolve_device(device))
    if key in _SCORERS:
        _SCORERS.move_to_end(key)
        return _SCORERS[key]
    scorer = PreFIQs(load_backbone(backbone, checkpoint).to(key[3]), pruning=specs, device=key[3])
    _SCORERS[key] = scorer
    while len(_SCORERS) > _MAX_SCORERS:
        _SCORERS.popitem(last=False)
    return scorer


def _vectors(store_embeddings) -> list[str]:
    if store_embeddings is True:
        return list(runs.VECTORS)
    if not store_embeddings:
        return []
    names = [store_embeddings] if isinstance(store_embeddings, str) else list(store_embeddings)
    bad = [n for n in names if n not in runs.VECTORS]
    if bad:
        raise ValueError(f"store_embeddings: unknown outputs {bad}; choose from {list(runs.VECTORS)}")
    return [n for n in runs.VECTORS if n in names]


def _input_mode(patches_field, aligned, detect) -> str:
    if aligned and (detect or patches_field):
        raise ValueError("aligned=True scores whole images; it cannot be combined with detect or patches_field")
    if patches_field:
        return "patches"
    if aligned:
        return "aligned"
    if detect:
        return "detect"
    raise ValueError("say where the faces are: patches_field=<Detections field>, aligned=True or detect=True")


class DatabaseUnavailable(RuntimeError):
    """The FiftyOne database (MongoDB) stopped answering during a run."""


def iter_compute_prefiqs(samples, *args, **kwargs):
    """:func:`compute_prefiqs` as a generator of :class:`Progress`; its return value is the result dict.

    A lost database connection surfaces as :class:`DatabaseUnavailable` with what to do next,
    instead of pymongo's bare timeout (how long pymongo waits is its ``serverSelectionTimeoutMS``,
    30 s unless the ``database_uri`` sets it).
    """
    from pymongo.errors import ConnectionFailure

    done = [0]
    try:
        return (yield from _iter_compute_prefiqs(samples, *args, done=done, **kwargs))
    except ConnectionFailure as e:  # includes AutoReconnect, ServerSelectionTimeoutError, NetworkTimeout
        raise DatabaseUnavailable(
            f"lost the connection to the FiftyOne database (MongoDB) after {done[0]} samples of this call "
            f"were written: {e.__class__.__name__}: {str(e)[:300]}. Batches written before stay complete; "
            "once the database is reachable again, rerun with resume=True to score the rest.") from e


def _check_label_field(dataset, path, doc_type, what):
    if not dataset.has_sample_field(path):
        raise ValueError(f"dataset {dataset.name!r} has no {what} field {path!r}")
    field = dataset.get_field(path)
    if getattr(field, "document_type", None) is not doc_type:
        raise ValueError(f"field {path!r} of dataset {dataset.name!r} is not a {doc_type.__name__} field "
                         f"(it is a {field.__class__.__name__}); name a {doc_type.__name__} field as {what}")


def _check_options(batch_size, device, checkpoint):
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"device {dev!r}: no CUDA device is available in this process")
    # A path typed in the App: checked before anything opens it (see check_user_file)
    return str(check_user_file(checkpoint)) if checkpoint else None


def prepare_compute_prefiqs(samples, run_key="prefiqs", patches_field=None, keypoints_field=None, aligned=False,
                            detect=False, backbone=DEFAULT_BACKBONE, checkpoint=None, pruning=None, sparsity=None,
                            batch_size=64, device=None, store_embeddings=True, overwrite=False, resume=False,
                            calibration=None, detector_reference=None) -> dict:
    """Everything :func:`compute_prefiqs` does before scoring: check the arguments, load the scorer,
    record (or check, for ``resume``) the run and declare its fields. Returns what the scoring needs.

    ``operators/shards.py`` calls it once before queueing shards, so that the shards, running
    concurrently, find the run recorded and the schema declared and only write sample values.
    """
    runs.check_run_key(run_key)
    if samples._is_patches or samples._is_frames or samples._is_clips:
        raise ValueError("pass the dataset or a view of its samples; name face patches with patches_field")
    dataset = samples._dataset
    mode = _input_mode(patches_field, aligned, detect)
    if not len(samples):  # say so, rather than load a network and record a run of nothing
        raise ValueError(f"the view of dataset {dataset.name!r} has no samples: nothing to score")
    if detect and patches_field and not keypoints_field:
        keypoints_field = default_keypoints_field(patches_field)
    vectors = _vectors(store_embeddings)
    specs = resolve_pruning(backbone, pruning, sparsity)
    checkpoint = _check_options(batch_size, device, checkpoint)
    fields = runs.RunFields(run_key, patches_field)

    if patches_field and not (detect and not dataset.has_sample_field(patches_field)):
        _check_label_field(dataset, patches_field, fo.Detections, "patches")
    if keypoints_field and not (detect and not dataset.has_sample_field(keypoints_field)):
        _check_label_field(dataset, keypoints_field, fo.Keypoints, "keypoints")
    if calibration:  # a path typed in the App: checked like a checkpoint before it is read
        calibration = str(check_user_file(calibration, what="calibration table", max_bytes=16 << 20))
    if detector_reference:
        detector_reference = str(check_user_file(detector_reference, what="detector reference", max_bytes=1 << 20))
    scorer = get_scorer(backbone, checkpoint, specs, device)
    bb = scorer.backbone
    # a named table that does not fit this setting raises here (CalibrationMismatch): refused, not converted
    cal, cal_absent = resolve_calibration(bb.name, scorer.spec_string, bb.source_sha256, calibration)
    if detect and patches_field:
        # declared and marked as the built-in detector's before that is read, so that every call of
        # this run (a resume, each shard) reads the same record; faces already there from elsewhere
        # mark the field mixed
        _declare_detection_fields(dataset, patches_field, keypoints_field)
        _record_detector(samples, patches_field, 1, overwrite=False)
    det_ref, combined_absent = _detector_reference(dataset, mode, patches_field, cal, detector_reference)
    comb_fnmr, comb_fnmr_absent = _combined_fnmr(cal, det_ref)
    config = _run_config(scorer, mode, fields, keypoints_field, checkpoint, batch_size, vectors, specs)
    config.update(calibration=cal.to_dict() if cal else None, calibration_file=calibration or
                  ("shipped" if cal else None), calibration_absent=cal_absent,
                  detector_reference=det_ref.to_dict() if det_ref else None,
                  detector_reference_file=detector_reference or ("shipped" if det_ref else None),
                  combined_absent=combined_absent, combined_expected_fnmr_absent=comb_fnmr_absent,
                  fields=fields.all_paths(vectors, calibrated=cal is not None, combined=det_ref is not None,
                                          distinctiveness=_distinct(cal, det_ref), combined_fnmr=comb_fnmr))
    _prepare_run(samples, fields, config, overwrite, resume)
    _declare_fields(dataset, fields, vectors, cal is not None, det_ref is not None, _distinct(cal, det_ref),
                    comb_fnmr)
    return dict(scorer=scorer, fields=fields, mode=mode, keypoints_field=keypoints_field, vectors=vectors,
                calibration=cal, detector_reference=det_ref)


def _detector_reference(dataset, mode, patches_field, cal, path=None):
    """``(reference, None)`` when this run can write ``K_combined``, else ``(None, why)``: it needs
    the quality's percentile (a calibration table) and faces whose detector score is on the
    reference's scale (``path``, else the shipped one: found by the built-in dlib detector at its
    upsample). A named reference that does not apply raises ``ValueError``."""
    from ..prefiqs_core.combined import DETECTOR, resolve_detector_reference

    detector, upsample, no_detector = DETECTOR, 1, None  # detect mode: prefiqs_core.alignment.DlibDetector
    if mode == "aligned":
        detector, no_detector = None, "aligned chips have no face detector score"
    elif mode == "patches" and dataset.has_sample_field(patches_field):
        info = dataset.get_field(patches_field).info or {}
        detector, upsample = info.get("detector"), info.get("upsample", 1)
        no_detector = (f"the faces of {patches_field!r} were not found by detect_faces, so their "
                       "confidences are not on the built-in detector's scale")
    return resolve_detector_reference(path, calibrated=cal is not None, detector=detector, upsample=upsample,
                                      no_detector=no_detector)


def _iter_compute_prefiqs(samples, run_key="prefiqs", patches_field=None, keypoints_field=None, aligned=False,
                          detect=False, backbone=DEFAULT_BACKBONE, checkpoint=None, pruning=None, sparsity=None,
                          batch_size=64, device=None, store_embeddings=True, overwrite=False, resume=False,
                          calibration=None, detector_reference=None, done=None):
    yield Progress(0.0, f"loading {backbone}")
    setup = prepare_compute_prefiqs(samples, run_key, patches_field, keypoints_field, aligned, detect, backbone,
                                    checkpoint, pruning, sparsity, batch_size, device, store_embeddings,
                                    overwrite, resume, calibration, detector_reference)
    scorer, fields, mode, vectors = setup["scorer"], setup["fields"], setup["mode"], setup["vectors"]
    cal, ref = setup["calibration"], setup["detector_reference"]
    keypoints_field = setup["keypoints_field"]
    dataset = samples._dataset

    start = 0.0
    if detect and patches_field:
        yield from scaled(iter_detect_faces(samples, patches_field, keypoints_field), 0.0, 0.3)
        start = 0.3

    todo = samples.match(~(F(fields.done[0]).exists() | F(fields.done[1]).exists())) if resume else samples
    ids = todo.values("id")
    total = len(ids)
    tally = dict(num_samples=0, num_scored=0, num_errors=0, errors=[])
    default_conv = _field_convention(dataset, keypoints_field)
    for chunk in chunks(ids, batch_size):
        # select from the caller's view, not the dataset, so label filters in that view still apply
        view = samples.select(chunk, ordered=True)
        if patches_field:
            _score_patches(view, fields, keypoints_field, default_conv, scorer, batch_size, vectors, tally, cal, ref)
        else:
            _score_images(view, fields, mode, scorer, batch_size, vectors, tally, cal, ref)
        tally["num_samples"] += len(chunk)
        if done is not None:
            done[0] = tally["num_samples"]
        yield Progress(start + (1 - start) * tally["num_samples"] / max(total, 1),
                       f"scored {tally['num_samples']}/{total} samples")

    summary = _finish_summary(dataset, fields)
    return dict(run_key=run_key, **tally, summary=summary)


def _num_done(dataset, fields) -> int:
    return len(dataset.match(F(fields.done[0]).exists() | F(fields.done[1]).exists()))


def _finish_summary(dataset, fields, attempts: int = 5) -> dict:
    """Store the run's summary over every sample scored so far, also when shards finish together.

    Shards of one run (``operators/shards.py``) run in separate workers and each rewrites the
    summary at its end. A shard that summarised while another was still writing would leave a stale
    summary if its write landed last, so after writing, the count of done samples is checked
    again; if it moved, the summary is recomputed. Concurrent rewrites of the results record can
    also collide, so a failed write is retried.
    """
    summary, err = None, None
    for attempt in range(attempts):
        summary = _summary(dataset, fields)
        try:
            runs.update_results(dataset, fields.key, summary=summary)
        except Exception as e:  # noqa: BLE001 - a concurrent writer; the loop retries, then re-raises
            # another worker replaced the results file this process's copy of the dataset points
            # to: read the dataset's record again before the next try
            err = e
            time.sleep(0.2 * (attempt + 1))
            dataset.reload()
            continue
        err = None
        if _num_done(dataset, fields) == summary["num_samples"]:
            break
    if err is not None:
        raise err
    return summary


def _run_config(scorer, mode, fields, keypoints_field, checkpoint, batch_size, vectors, specs) -> dict:
    cfg = scorer.config()
    return dict(
        backbone=cfg["backbone"], checkpoint=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=cfg["source_sha256"], weights_file=cfg["source"], preprocess=cfg["preprocess"],
        prune=cfg["prune"], forwards_per_face=cfg["forwards_per_face"], execution=cfg["execution"],
        pruning=cfg["pruning"], pruning_method=specs[0].method if len(specs) == 1 else "ensemble",
        sparsity=[s.sparsity for s in specs], achieved_sparsity=cfg["achieved_sparsity"],
        input=mode, patches_field=fields.patches_field, keypoints_field=keypoints_field,
        batch_size=int(batch_size), device=str(scorer.device), store_embeddings=vectors,
        fields=fields.all_paths(vectors),
    )


# a resumed run must convert with the same calibration table, or its percentiles would mix two scales
_MATCHING = ("backbone", "checkpoint_sha256", "pruning", "input", "patches_field", "keypoints_field", "calibration",
             "detector_reference")


def _prepare_run(samples, fields, config, overwrite, resume):
    """Refuse to clobber an existing run unless asked; clear it for ``overwrite``; check it for ``resume``."""
    dataset, key = samples._dataset, fields.key
    if runs.run_exists(dataset, key):
        if resume:
            old = runs.load_config(dataset, key)
            diff = [k for k in _MATCHING if old.get(k) != config.get(k)]
            if diff:
                raise ValueError(f"cannot resume run {key!r}: its {', '.join(diff)} differ; use overwrite=True "
                                 "or another run_key")
            return
        if not overwrite:
            raise ValueError(f"run key {key!r} already exists on dataset {dataset.name!r}; pass overwrite=True "
                             "to replace it or resume=True to continue it")
        runs.delete_run(dataset, key)
    else:
        taken = [p for p in fields.all_paths() if dataset.has_field(p)]
        if taken and not overwrite:
            raise ValueError(f"fields {taken} exist but belong to no PreFIQs run {key!r}; pass overwrite=True "
                             "to replace them or choose another run_key")
        if taken:
            dataset.delete_sample_fields(taken, error_level=1)
    runs.record_run(samples, key, config, overwrite=True)
    runs.update_results(dataset, key, summary={}, visualizations={})


def _combined_fnmr(cal, ref) -> tuple[bool, str | None]:
    """Whether this run writes ``K_combined_expected_fnmr`` (the table's bands of combined hold for
    its detector reference), and why not when it does not (None when it has no combined at all)."""
    from ..prefiqs_core.combined import combined_bands_for

    if ref is None:
        return False, None
    bands, why = combined_bands_for(cal, ref)
    return bands is not None, why


def _distinct(cal, ref) -> bool:
    """Whether this run's ``combined`` averages in distinctiveness (and writes its percentile)."""
    return cal is not None and ref is not None and cal.distinctiveness is not None


def _declare_fields(dataset, fields, vectors, calibrated=False, combined=False, distinctiveness=False,
                    combined_fnmr=False):
    # Declared up front so that the App can filter on them and brain finds the vectors by name
    # (an undeclared embedded vector makes compute_visualization fall back to a zoo model).
    wanted = [(fields.quality, fo.FloatField), (fields.drift, fo.FloatField), (fields.error, fo.StringField)]
    if calibrated:
        wanted += [(fields.percentile, fo.FloatField), (fields.expected_fnmr, fo.FloatField)]
    if calibrated and combined:
        wanted.append((fields.combined, fo.FloatField))
        if distinctiveness:
            wanted.append((fields.distinctiveness, fo.FloatField))
        if combined_fnmr:
            wanted.append((fields.combined_expected_fnmr, fo.FloatField))
    wanted += [(fields.vector(v), fo.VectorField) for v in vectors]
    if fields.patches_field:
        wanted += [(fields.min_quality, fo.FloatField), (fields.sample_error, fo.StringField)]
    for path, ftype in wanted:
        if not dataset.has_field(path):
            dataset.add_sample_field(path, ftype)


def _field_convention(dataset, keypoints_field):
    if not keypoints_field:
        return None
    if not dataset.has_field(keypoints_field):
        raise ValueError(f"dataset {dataset.name!r} has no keypoints field {keypoints_field!r}")
    return (dataset.get_field(keypoints_field).info or {}).get("landmark_convention")


def _note_error(tally, sample_id, path, reason):
    tally["num_errors"] += 1
    if len(tally["errors"]) < 50:
        tally["errors"].append(dict(id=sample_id, filepath=path, error=reason))


def _calibrated(cal, quality: list) -> tuple[list, list]:
    """Percentile and expected FNMR beside each quality (None where the quality is None)."""
    q = np.array([np.nan if v is None else v for v in quality], np.float64)
    pct, fnmr = cal.percentile(q), cal.expected_fnmr(q)
    return ([None if v is None else float(p) for v, p in zip(quality, pct)],
            [None if v is None else float(f) for v, f in zip(quality, fnmr)])


def _combined(cal, ref, quality: list, det_scores: list, dense=None) -> tuple[list, list | None, list | None]:
    """``K_combined`` beside each quality (None without a quality or a detector score),
    ``K_distinctiveness`` where the table averages it in (else None: ``dense`` holds each face's unit
    dense embedding, a row of NaN where it has none), and ``K_combined_expected_fnmr`` where the
    table's bands of combined hold for ``ref`` (else None)."""
    from ..prefiqs_core.combined import combined_bands_for, combined_with_distinctiveness

    q = np.array([np.nan if v is None else v for v in quality], np.float64)
    d = np.array([np.nan if v is None else v for v in det_scores], np.float64)
    out, pct = combined_with_distinctiveness(cal, ref, q, d, dense)
    bands = combined_bands_for(cal, ref)[0]

    def listed(a):
        return [None if np.isnan(v) else float(v) for v in a]

    return (listed(out), None if pct is None else listed(pct),
            None if bands is None else listed(bands.expected_fnmr(out)))


def _rows_of(res, rows: list, n: int, cal) -> np.ndarray | None:
    """Dense embeddings of ``res`` placed at ``rows`` of ``n`` (NaN rows elsewhere); None when the
    table ``cal`` does not use them."""
    if cal.distinctiveness is None:
        return None
    out = np.full((n, len(cal.distinctiveness.direction)), np.nan)
    if rows:
        out[rows] = res.dense
    return out


def _score_images(view, fields, mode, scorer, batch_size, vectors, tally, cal=None, ref=None):
    ids, paths = view.values(["id", "filepath"])
    chips, rows, errors = [], [], [None] * len(ids)
    det_scores = [None] * len(ids)
    for i, im in enumerate(whole_images(paths, mode, scorer.backbone.preprocess)):
        if im.error is not None:
            errors[i] = im.error
            _note_error(tally, ids[i], paths[i], im.error)
        else:
            chips.append(im.chips[0])  # detect: faces come best first; score the best one
            rows.append(i)
            det_scores[i] = im.scores[0] if im.scores else None
    res = scorer.score(np.stack(chips), batch_size=batch_size) if chips else None
    tally["num_scored"] += len(rows)
    quality, drift = [None] * len(ids), [None] * len(ids)
    vecs = {v: [None] * len(ids) for v in vectors}
    for j, i in enumerate(rows):
        quality[i], drift[i] = float(res.quality[j]), float(res.drift[j])
        for v in vectors:
            vecs[v][i] = getattr(res, v)[j].astype(np.float32)
    # A sample counts as done (for resume) once its quality or its error is set, so those two are
    # written last: a process killed between these bulk writes leaves samples that are rescored on
    # resume, never a sample marked done with its drift or vectors missing.
    view.set_values(fields.drift, drift)
    for v in vectors:
        view.set_values(fields.vector(v), vecs[v])
    if cal is not None:
        pct, fnmr = _calibrated(cal, quality)
        view.set_values(fields.percentile, pct)
        view.set_values(fields.expected_fnmr, fnmr)
        if ref is not None:
            comb, distinct, comb_fnmr = _combined(cal, ref, quality, det_scores, _rows_of(res, rows, len(ids), cal))
            view.set_values(fields.combined, comb)
            if distinct is not None:
                view.set_values(fields.distinctiveness, distinct)
            if comb_fnmr is not None:
                view.set_values(fields.combined_expected_fnmr, comb_fnmr)
    view.set_values(fields.error, errors)
    view.set_values(fields.quality, quality)


def _score_patches(view, fields, keypoints_field, default_conv, scorer, batch_size, vectors, tally, cal=None,
                   ref=None):
    pf = fields.patches_field
    cols = ["id", "filepath", pf] + ([keypoints_field] if keypoints_field else [])
    values = view.values(cols)
    ids, paths, dets = values[0], values[1], values[2]
    kps = values[3] if keypoints_field else [None] * len(ids)

    chips, owners = [], []  # owners[j] = (sample index, label id) of chips[j]
    det_scores = []  # the detector's confidence of chips[j], None when the label has none
    label_errors = []  # (sample id, label id, reason)
    sample_error = [None] * len(ids)
    has_face = [False] * len(ids)
    for i, (sid, path, d, k) in enumerate(zip(ids, paths, dets, kps)):
        detections = list(d.detections) if d is not None else []
        if not detections:
            sample_error[i] = f"no faces in {pf}"
            _note_error(tally, sid, path, sample_error[i])
            continue
        landmarks = match_keypoints(detections, k.keypoints if k is not None else [], default_conv)
        try:
            results = patch_chips(path, [det.bounding_box for det in detections], landmarks,
                                  scorer.backbone.preprocess)
        except ImageError as e:
            sample_error[i] = str(e)
            results = [(None, str(e))] * len(detections)
        for det, (chip, reason) in zip(detections, results):
            if reason is None:
                chips.append(chip)
                owners.append((i, det.id))
                det_scores.append(det.confidence)
                has_face[i] = True
            else:
                label_errors.append((sid, det.id, reason))
                _note_error(tally, sid, path, reason)
        if not has_face[i] and sample_error[i] is None:
            sample_error[i] = "no face could be scored"

    res = scorer.score(np.stack(chips), batch_size=batch_size) if chips else None
    tally["num_scored"] += len(chips)
    min_quality = [None] * len(ids)
    extra = ["percentile", "expected_fnmr"] if cal is not None else []
    extra += ["combined"] if cal is not None and ref is not None else []
    extra += ["distinctiveness"] if _distinct(cal, ref) else []
    extra += ["combined_expected_fnmr"] if _combined_fnmr(cal, ref)[0] else []
    label_values = {name: [] for name in ["quality", "drift", "error"] + vectors + extra}
    if cal is not None and owners:
        pct, fnmr = cal.percentile(res.quality), cal.expected_fnmr(res.quality)
        comb, distinct, comb_fnmr = _combined(cal, ref, list(res.quality), det_scores, res.dense) \
            if ref is not None else (None, None, None)
    for j, (i, lid) in enumerate(owners):
        q = float(res.quality[j])
        min_quality[i] = q if min_quality[i] is None else min(min_quality[i], q)
        calibrated = [("percentile", float(pct[j])), ("expected_fnmr", float(fnmr[j]))] if extra else []
        calibrated += [("combined", comb[j])] if "combined" in extra else []
        calibrated += [("distinctiveness", distinct[j])] if "distinctiveness" in extra else []
        calibrated += [("combined_expected_fnmr", comb_fnmr[j])] if "combined_expected_fnmr" in extra else []
        for name, value in [("quality", q), ("drift", float(res.drift[j])), ("error", None)] + calibrated + \
                [(v, getattr(res, v)[j].astype(np.float32)) for v in vectors]:
            label_values[name].append(dict(sample_id=ids[i], label_id=lid, value=value))
    for sid, lid, reason in label_errors:
        for name in label_values:
            label_values[name].append(dict(sample_id=sid, label_id=lid, value=reason if name == "error" else None))
    dataset = view._dataset
    # Per-face values first, the sample-level done markers (min quality, sample error) last: see
    # _score_images for why.
    for name, rows in label_values.items():
        if rows:
            dataset.set_label_values(fields.label_path(name), rows)
    view.set_values(fields.min_quality, min_quality)
    view.set_values(fields.sample_error, sample_error)


def _summary(dataset, fields) -> dict:
    # one pass over the faces: the combined values (where the run wrote them) with quality and drift
    paths = [fields.quality, fields.drift] + ([fields.combined] if dataset.has_field(fields.combined) else [])
    quality, drift, *combined = dataset.values(paths, unwind=True)
    if fields.patches_field:
        pf = fields.patches_field
        faceless = dataset.match(F(fields.sample_error).exists()).match(
            ~F(f"{pf}.detections").exists() | (F(f"{pf}.detections").length() == 0))
        num_errors = dataset.count(fields.error) + len(faceless)
    else:
        num_errors = dataset.count(fields.error)
    out = runs.summary_stats(quality, drift, num_errors, combined=combined[0] if combined else None)
    out["num_samples"] = _num_done(dataset, fields)
    return out
