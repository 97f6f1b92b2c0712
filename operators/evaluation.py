"""``evaluate_face_quality``: how well quality fields predict recognition errors, as EDC curves.

The data path: identity labels → comparison pairs (every genuine pair, a seeded sample of impostor
pairs) → cosine similarities from an embeddings field → for each quality field, pair quality
(``min`` of the two faces by default) → an FNM-EDC curve and its pAUC (``prefiqs_core.evaluation``).
The result is a FiftyOne custom run under ``eval_key`` (its config says what was compared and how;
its results hold the curves) plus a PNG of the curves. :func:`load_evaluation` returns the stored
results as plain JSON-able data, for a panel or a report.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..prefiqs_core.evaluation import CONVENTIONS, edc, pair_quality_from, pauc, plot_edc
from ..prefiqs_core.evaluation.pairs import (DEFAULT_MAX_IMPOSTORS, TEMPLATE_QUALITY, build_templates, make_pairs,
                                  pair_similarities)
from . import __version__, runs
from .progress import Progress, drive

EVAL_METHOD = "prefiqs_evaluation"  # distinct from runs.RUN_METHOD: an evaluation is not a scoring run
LIMITS = (0.2, 0.3)  # the paper convention: pAUC up to 20 % and 30 % discarded
PAIR_QUALITY = ("min", "mean", "product")


def evaluate_face_quality(samples, identity_field, quality_fields, eval_key="prefiqs_eval",
                          embeddings_field=None, patches_field=None, target_fmr=1e-3, threshold="fixed",
                          pair_quality="min", max_impostors=DEFAULT_MAX_IMPOSTORS, seed=0, plot_path=None,
                          overwrite=False, template_field=None, template_quality="min", progress=None) -> dict:
    """Evaluates quality fields by their Error-versus-Discard Characteristic (FNM-EDC).

    Faces are compared in pairs: all genuine (same identity) pairs and up to ``max_impostors``
    impostor pairs, drawn with ``seed``. The similarity of a pair is the cosine of the faces'
    embeddings; the quality of a pair is ``pair_quality`` of the two faces' qualities. For each
    quality field, the FNMR at ``target_fmr`` is traced as the lowest-quality pairs are discarded
    (see ``prefiqs_core.evaluation`` for the ``"fixed"`` and ``"per_level"`` conventions), and the
    partial areas up to 20 % and 30 % discarded are reported, with and without the theoretical
    best area subtracted. Every quality field is evaluated on the same faces: those that have an
    identity, an embedding and a value in every quality field.

    Args:
        samples: a dataset or a view of its samples (not a patches view: name ``patches_field``)
        identity_field: who each face is: a ``Classification`` or a string/int field of the
            samples; for patch runs also an attribute of the face ``Detection`` s (``"person"``
            for ``faces.detections.person``, or the full path). A sample-level identity applies to
            every face of the sample
        quality_fields: a list of quality fields, each a PreFIQs run key (its quality field), a
            float field, or for patches a float attribute of the detections. Higher = better
        eval_key ("prefiqs_eval"): the key of the run record
        embeddings_field (None): a vector field of embeddings; default: the dense embeddings
            ``K_dense`` of the PreFIQs run of the first quality field
        patches_field (None): the ``Detections`` field of the faces; default: that of the first
            quality field (``None`` for sample-level runs)
        target_fmr (1e-3): the FMR at which the threshold is set
        threshold ("fixed"): ``"fixed"`` (ISO/IEC 29794-1, threshold set once) or ``"per_level"``
            (CR-FIQA ``erc.py``, threshold recomputed at each discard level)
        pair_quality ("min"): ``"min"``, ``"mean"`` or ``"product"``
        max_impostors (100000): impostor pairs beyond this number are sampled
        seed (0): seed of the impostor sample
        plot_path (None): where to write the PNG of the curves; ``None``: under
            ``fo.config.default_dataset_dir``; ``False``: no plot
        overwrite (False): replace an existing evaluation ``eval_key``
        template_field (None): compare templates rather than single faces (IJB-C style): faces with
            the same identity and the same value of this field (sample or face level, like
            ``identity_field``) form one template, whose embedding is the normalised mean of its
            faces' normalised embeddings; faces without a value are skipped
        template_quality ("min"): a template's quality from its faces': ``"min"`` (CR-FIQA's IJB-C
            choice: one bad face makes a bad template), ``"mean"`` or ``"max"``
        progress (None): a callable ``progress(fraction, label)``

    Returns:
        a dict: ``eval_key``, ``num_faces``, ``num_identities``, ``num_templates`` (``None``
        without ``template_field``), ``num_mated``, ``num_nonmated``, ``plot_path`` and ``pauc`` (one ``{"name", "pauc_20", "pauc_30", "pauc_20_minus_best",
        "pauc_30_minus_best"}`` per quality field); the full record is :func:`load_evaluation`
    """
    return drive(iter_evaluate_face_quality(
        samples, identity_field, quality_fields, eval_key=eval_key, embeddings_field=embeddings_field,
        patches_field=patches_field, target_fmr=target_fmr, threshold=threshold, pair_quality=pair_quality,
        max_impostors=max_impostors, seed=seed, plot_path=plot_path, overwrite=overwrite,
        template_field=template_field, template_quality=template_quality), progress)


def list_evaluations(samples) -> list[str]:
    """The keys of the quality evaluations stored on the dataset of ``samples``."""
    ds = samples._dataset
    return [k for k in ds.list_runs() if _is_evaluation(ds, k)]


def load_evaluation(samples, eval_key) -> dict:
    """An evaluation as plain data (lists, floats, ``None`` for NaN): ``eval_key``, ``config``
    (what was compared and how), ``timestamp`` and the stored results: ``methods`` (one summary
    per quality field, in order: ``name``, ``field``, ``pauc_20``, ``pauc_30``, the same
    ``_minus_best``, ``fnmr_at_0``, ``notes``), ``curves`` (quality field name → the summary plus
    ``discard_fractions``, ``fnmr``, ``thresholds``, ``fmr``, ``remaining_mated``,
    ``remaining_nonmated``, ``convention``, ``target_fmr``), pair counts, ``notes`` and ``plot_path``."""
    ds = samples._dataset
    if not _is_evaluation(ds, eval_key):
        raise ValueError(f"no face-quality evaluation {eval_key!r} on dataset {ds.name!r}; "
                         f"evaluations: {list_evaluations(ds) or 'none'}")
    info = ds.get_run_info(eval_key)
    config = {k: v for k, v in info.config.serialize().items() if k not in ("cls", "type", "method")}
    return dict(eval_key=eval_key, config=config, timestamp=str(info.timestamp),
                **runs.load_results(ds, eval_key))


def delete_evaluation(samples, eval_key) -> dict:
    """Removes evaluation ``eval_key`` (its record and its PNG)."""
    rec = load_evaluation(samples, eval_key)
    path = rec.get("plot_path")
    if path and os.path.isfile(path):
        os.remove(path)
    samples._dataset.delete_run(eval_key)
    return dict(eval_key=eval_key, deleted_plot=path)


def _is_evaluation(ds, key) -> bool:
    return key in ds.list_runs() and ds.get_run_info(key).config.method == EVAL_METHOD


# ------------------------------------------------------------------------------------------------
# resolving field names


def _prefiqs_runs(ds) -> dict:
    """PreFIQs scoring runs → their RunFields (so a quality path can be traced to its run)."""
    return {k: runs.fields_of(ds, k) for k in ds.list_runs() if runs.is_prefiqs_run(ds, k)}


def _resolve_quality(ds, name, patches_field):
    """(field path, PreFIQs run key or None) of quality field ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"quality field names must be non-empty strings, got {name!r}")
    scoring = _prefiqs_runs(ds)
    if name in scoring:
        path = scoring[name].quality
    elif ".detections." in name or not patches_field:
        path = name
    else:
        path = f"{patches_field}.detections.{name}"
    if not _present(ds, path):
        raise ValueError(f"unknown quality field {name!r} (looked for {path!r}) on dataset {ds.name!r}; "
                         f"PreFIQs runs: {sorted(scoring) or 'none'}")
    owner = next((k for k, f in scoring.items() if f.quality == path), None)
    return path, owner


def _present(ds, path) -> bool:
    """Declared in the schema, or holding values: attributes of Detections are often undeclared."""
    if ds.has_field(path):
        return True
    try:
        return ds.count(path) > 0
    except Exception:  # an unknown top-level path is an error for some aggregations
        return False


def _patches_of(path):
    return path.split(".detections.")[0] if ".detections." in path else None


def _resolve_embeddings(ds, embeddings_field, patches_field, first_run):
    if embeddings_field is None:
        if first_run is None:
            raise ValueError("the first quality field belongs to no PreFIQs run: pass embeddings_field")
        path = runs.fields_of(ds, first_run).vector("dense")
        if not ds.has_field(path):
            raise ValueError(f"PreFIQs run {first_run!r} stored no dense embeddings ({path!r}); run it "
                             "with store_embeddings=True or pass embeddings_field")
        return path
    path = embeddings_field
    if patches_field and ".detections." not in path:
        path = f"{patches_field}.detections.{path}"
    if not _present(ds, path):
        raise ValueError(f"unknown embeddings field {embeddings_field!r} (looked for {path!r})")
    return path


def _resolve_identity(ds, identity_field, patches_field, what="identity"):
    """(value path, per_face): where the identity (or template id) is read, and whether it lives on
    each face."""
    if not isinstance(identity_field, str) or not identity_field:
        raise ValueError(f"{what}_field is required: the field that says who each face is")
    candidates = []
    if patches_field and ".detections." not in identity_field:
        candidates.append((f"{patches_field}.detections.{identity_field}", True))
    candidates.append((identity_field, ".detections." in identity_field))
    for path, per_face in candidates:
        if _present(ds, path):
            field = ds.get_field(path) if ds.has_field(path) else None
            # a Classification carries the name in its label
            if isinstance(field, fo.EmbeddedDocumentField) and issubclass(field.document_type, fo.Classification):
                path += ".label"
            return path, per_face
    raise ValueError(f"missing {what} field {identity_field!r}: dataset {ds.name!r} has no "
                     f"{' or '.join(repr(p) for p, _ in candidates)}")


def _default_plot_path(ds, eval_key):
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", ds.name)
    return os.path.join(fo.config.default_dataset_dir, "prefiqs_evaluations", safe, f"{eval_key}_edc.png")


# ------------------------------------------------------------------------------------------------
# gathering faces


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _gather(samples, id_path, id_per_face, q_paths, emb_path, patches_field, t_path=None, t_per_face=False):
    """One row per face with an identity, an embedding, every quality and (when ``t_path`` is
    given) a template id: (labels, Q, E, template ids or None, skipped)."""
    cols = [id_path] + q_paths + [emb_path] + ([t_path] if t_path else [])
    values = samples.values(cols)
    ident, quals, embs = values[0], values[1:1 + len(q_paths)], values[1 + len(q_paths)]
    templ = values[-1] if t_path else [None] * len(embs)

    def per_face(column, s, n, on_face):
        # per-face lists; a sample-level value is repeated for each face of its sample
        v = column[s] if on_face else [column[s]] * n
        return v if v else [None] * n

    if patches_field:
        rows = []
        for s in range(len(embs)):
            n = len(embs[s] or [])
            ids, tids = per_face(ident, s, n, id_per_face), per_face(templ, s, n, t_per_face)
            rows += [(ids[f], [q[s][f] if q[s] else None for q in quals], embs[s][f], tids[f]) for f in range(n)]
    else:
        rows = [(ident[s], [q[s] for q in quals], embs[s], templ[s]) for s in range(len(embs))]
    labels, qs, es, ts = [], [], [], []
    skipped = dict(no_identity=0, no_quality=0, no_embedding=0, **({"no_template": 0} if t_path else {}))
    for lab, q, e, t in rows:
        if _missing(lab):
            skipped["no_identity"] += 1
        elif any(v is None or not math.isfinite(v) for v in q):
            skipped["no_quality"] += 1
        elif e is None or not np.isfinite(np.asarray(e, float)).all() or not np.any(e):
            skipped["no_embedding"] += 1
        elif t_path and _missing(t):
            skipped["no_template"] += 1
        else:
            labels.append(lab)
            qs.append(q)
            es.append(np.asarray(e, np.float64))
            ts.append(t)
    q_arr = np.asarray(qs, np.float64).reshape(len(qs), len(q_paths))
    e_arr = np.stack(es) if es else np.zeros((0, 1))
    return labels, q_arr, e_arr, (ts if t_path else None), skipped


def _to_templates(labels, q, e, template_ids, how):
    """Faces → templates: (template labels, template qualities (T, K), template embeddings)."""
    t = build_templates(e, labels, template_ids, quality=None)
    tq = np.stack([t.reduce_quality(q[:, k], how) for k in range(q.shape[1])], axis=1)
    return t.labels, tq, t.embeddings


# ------------------------------------------------------------------------------------------------
# the computation


def _check_params(eval_key, threshold, pair_quality, target_fmr, max_impostors, template_quality="min"):
    runs.check_run_key(eval_key)
    if template_quality not in TEMPLATE_QUALITY:
        raise ValueError(f"template_quality must be one of {TEMPLATE_QUALITY}, got {template_quality!r}")
    if threshold not in CONVENTIONS:
        raise ValueError(f"threshold must be one of {CONVENTIONS}, got {threshold!r}")
    if pair_quality not in PAIR_QUALITY:
        raise ValueError(f"pair_quality must be one of {PAIR_QUALITY}, got {pair_quality!r}")
    if not 0 < float(target_fmr) < 1:
        raise ValueError(f"target_fmr must lie strictly between 0 and 1, got {target_fmr!r}")
    if int(max_impostors) != max_impostors or max_impostors < 1:
        raise ValueError(f"max_impostors must be a positive integer, got {max_impostors!r}")


def _nan_to_none(values):
    return [None if isinstance(v, float) and math.isnan(v) else v for v in np.asarray(values).tolist()]


def _method_entry(name, path, curve) -> tuple[dict, dict]:
    """One quality field's stored result: (summary with the pAUCs, the curve as lists, NaN → None)."""
    entry = dict(name=name, field=path, fnmr_at_0=_nan_to_none([curve.fnmr[0]])[0], notes=list(curve.notes))
    for lim in LIMITS:
        tag = f"{round(lim * 100)}"
        try:
            entry[f"pauc_{tag}"] = pauc(curve, lim)
            entry[f"pauc_{tag}_minus_best"] = pauc(curve, lim, subtract_best=True)
        except ValueError as e:  # a per_level level kept no mated or non-mated pair
            entry[f"pauc_{tag}"] = entry[f"pauc_{tag}_minus_best"] = None
            entry["notes"].append(f"pAUC@{lim:g}: {e}")
    # "convention", "target_fmr" and "pauc" are the names the App panel's EDC plot reads
    points = dict(convention=curve.convention, target_fmr=curve.target_fmr, pauc=entry[f"pauc_{round(LIMITS[0] * 100)}"],
                  discard_fractions=_nan_to_none(curve.discard_fractions), fnmr=_nan_to_none(curve.fnmr),
                  thresholds=_nan_to_none(curve.thresholds), fmr=_nan_to_none(curve.fmr),
                  remaining_mated=curve.remaining_mated.tolist(),
                  remaining_nonmated=curve.remaining_nonmated.tolist())
    return entry, dict(entry, **points)


def iter_evaluate_face_quality(samples, identity_field, quality_fields, eval_key="prefiqs_eval",
                               embeddings_field=None, patches_field=None, target_fmr=1e-3, threshold="fixed",
                               pair_quality="min", max_impostors=DEFAULT_MAX_IMPOSTORS, seed=0, plot_path=None,
                               overwrite=False, template_field=None, template_quality="min"):
    """:func:`evaluate_face_quality` as a generator of :class:`Progress`; returns its result."""
    _check_params(eval_key, threshold, pair_quality, target_fmr, max_impostors, template_quality)
    if samples._is_patches or samples._is_frames or samples._is_clips:
        raise ValueError("pass the dataset or a view of its samples; name face patches with patches_field")
    ds = samples._dataset
    if isinstance(quality_fields, str):
        quality_fields = [quality_fields]
    quality_fields = list(quality_fields or [])
    if not quality_fields:
        raise ValueError("quality_fields is empty: name at least one quality field or PreFIQs run")
    if len(set(quality_fields)) != len(quality_fields):
        raise ValueError(f"quality_fields has duplicates: {quality_fields}")
    if eval_key in ds.list_runs():
        if not _is_evaluation(ds, eval_key):
            raise ValueError(f"run key {eval_key!r} belongs to another kind of run; choose another eval_key")
        if not overwrite:
            raise ValueError(f"evaluation {eval_key!r} exists on dataset {ds.name!r}; pass overwrite=True")

    resolved = [_resolve_quality(ds, q, patches_field) for q in quality_fields]
    q_paths = [p for p, _ in resolved]
    pf = patches_field if patches_field else _patches_of(q_paths[0])
    wrong = [p for p in q_paths if _patches_of(p) != pf]
    if wrong:
        raise ValueError(f"quality fields {wrong} are not at the level of {'patches ' + repr(pf) if pf else 'samples'}:"
                         " all quality fields must describe the same faces")
    emb_path = _resolve_embeddings(ds, embeddings_field, pf, resolved[0][1])
    if _patches_of(emb_path) != pf:
        raise ValueError(f"embeddings field {emb_path!r} does not describe the same faces as {q_paths[0]!r}")
    id_path, id_per_face = _resolve_identity(ds, identity_field, pf)
    t_path, t_per_face = _resolve_identity(ds, template_field, pf, "template") if template_field else (None, False)

    yield Progress(0.05, "reading identities, qualities and embeddings")
    labels, q, e, tids, skipped = _gather(samples, id_path, id_per_face, q_paths, emb_path, pf, t_path, t_per_face)
    n_faces = len(labels)
    n_ids = len(set(labels))
    if n_ids < 2:
        raise ValueError(f"fewer than 2 identities among the {len(labels)} usable faces ({n_ids} found in "
                         f"{identity_field!r}): impostor pairs need two identities")
    n_templates = None
    if t_path:  # from here on the compared units are templates
        labels, q, e = _to_templates(labels, q, e, tids, template_quality)
        n_templates = len(labels)
    unit = "templates" if t_path else "faces"
    pairs = make_pairs(labels, max_impostors=int(max_impostors), seed=int(seed))
    if pairs.n_mated == 0:
        raise ValueError(f"no genuine pairs: none of the {n_ids} identities in {identity_field!r} has two "
                         f"usable {unit}")
    yield Progress(0.3, f"{pairs.n_mated} genuine and {pairs.n_nonmated} impostor pairs")
    sims = pair_similarities(e, pairs)

    curves, methods, stored = {}, [], {}
    for k, (name, path) in enumerate(zip(quality_fields, q_paths)):
        pq = pair_quality_from(q[pairs.a, k], q[pairs.b, k], pair_quality)
        curves[name] = edc(sims, pairs.mated, pq, target_fmr=target_fmr, threshold=threshold)
        summary, stored[name] = _method_entry(name, path, curves[name])
        methods.append(summary)
        yield Progress(0.3 + 0.6 * (k + 1) / len(q_paths), f"EDC of {name}")

    if plot_path is None:
        plot_path = _default_plot_path(ds, eval_key)
    if plot_path:
        os.makedirs(os.path.dirname(os.path.abspath(plot_path)), exist_ok=True)
        plot_edc(curves, plot_path, title=f"{ds.name}: {eval_key} ({threshold}, pair quality {pair_quality})")
    first = next(iter(curves.values()))
    config = dict(plugin_version=__version__, identity_field=identity_field, identity_path=id_path,
                  quality_fields=quality_fields, quality_paths=q_paths, embeddings_field=emb_path,
                  patches_field=pf, target_fmr=float(target_fmr), threshold=threshold, pair_quality=pair_quality,
                  max_impostors=int(max_impostors), seed=int(seed), limits=list(LIMITS), similarity="cosine",
                  template_field=template_field, template_path=t_path,
                  template_quality=template_quality if t_path else None,
                  # the App panel shows an evaluation beside the PreFIQs run it names here
                  quality_run=resolved[0][1])
    results = dict(num_faces=n_faces, num_identities=n_ids, num_templates=n_templates, num_mated=pairs.n_mated,
                   num_nonmated=pairs.n_nonmated, num_impostors_total=pairs.n_impostors_total, skipped=skipped,
                   similarity_threshold=first.threshold, achieved_fmr=float(first.fmr[0]),
                   notes=list(pairs.notes) + list(first.notes), plot_path=str(plot_path) if plot_path else None,
                   methods=methods, curves=stored)
    cfg = samples.init_run(method=EVAL_METHOD, **config)
    samples.register_run(eval_key, cfg, overwrite=True)
    ds.save_run_results(eval_key, ds.init_run_results(eval_key, **results), overwrite=True, cache=False)
    yield Progress(1.0, f"evaluation {eval_key} stored")
    return dict(eval_key=eval_key, num_faces=n_faces, num_identities=n_ids, num_templates=n_templates,
                num_mated=pairs.n_mated,
                num_nonmated=pairs.n_nonmated, plot_path=results["plot_path"],
                # a list, not a dict keyed by field: field paths contain dots, which Mongo keys may not
                pauc=[{k: m[k] for k in m if k == "name" or k.startswith("pauc_")} for m in methods])


# ------------------------------------------------------------------------------------------------
# the operator


def _float_fields(ds):
    """Sample float fields and float attributes of Detections fields: quality candidates."""
    schema = ds.get_field_schema(flat=True)
    return sorted(p for p, f in schema.items() if isinstance(f, fo.FloatField))


def _identity_candidates(ds):
    schema = ds.get_field_schema(flat=True)
    out = []
    for p, f in schema.items():
        if isinstance(f, fo.EmbeddedDocumentField) and issubclass(f.document_type, fo.Classification):
            out.append(p)
        elif isinstance(f, (fo.StringField, fo.IntField)) and p not in ("filepath", "id") and not p.endswith(
                (".id", "_id", ".label", ".filepath", "_error")):
            out.append(p)
    return sorted(out)


class EvaluateFaceQuality(foo.Operator):
    """Compare quality fields by their EDC curves (immediate or delegated)."""

    @property
    def config(self):
        return foo.OperatorConfig(name="evaluate_face_quality", label="PreFIQs: evaluate face quality (EDC)",
                                  description="FNMR versus fraction discarded, for each quality field",
                                  dynamic=True, execute_as_generator=True, allow_immediate_execution=True,
                                  allow_delegated_execution=True)

    def resolve_delegation(self, ctx):
        delegate = ctx.params.get("delegate")
        return None if delegate is None else bool(delegate)

    # plugin_ops is imported inside the methods: it may come to import this module (to list the
    # operator), and a module-level import in both directions would be a cycle.
    def resolve_input(self, ctx):
        from .plugin_ops import _delegate_input, _suggest

        inputs = types.Object()
        ds = ctx.dataset
        p = ctx.params
        inputs.str("identity_field", required=True, label="Identity field",
                   description="Classification or string field saying who each face is (sample or face level)",
                   view=_suggest(_identity_candidates(ds)))
        scoring = [k for k in ds.list_runs() if runs.is_prefiqs_run(ds, k)]
        choices = types.AutocompleteView()
        for name in scoring + _float_fields(ds):
            choices.add_choice(name, label=name)
        inputs.list("quality_fields", types.String(), required=True, default=scoring[:1] or None,
                    label="Quality fields", description="PreFIQs run keys or float fields, higher = better",
                    view=choices)
        key = p.get("eval_key") or "prefiqs_eval"
        prop = inputs.str("eval_key", default="prefiqs_eval", label="Evaluation key")
        if key in ds.list_runs() and not p.get("overwrite"):
            prop.invalid, prop.error_message = True, f"{key!r} exists: tick overwrite or choose another key"
        inputs.str("embeddings_field", required=False, label="Embeddings field",
                   description="Default: the dense embeddings of the first quality field's PreFIQs run")
        inputs.str("patches_field", required=False, label="Face patches field",
                   description="Default: that of the first quality field")
        inputs.float("target_fmr", default=1e-3, label="Target FMR")
        inputs.enum("threshold", list(CONVENTIONS), default="fixed", label="Threshold convention",
                    description="fixed: ISO/IEC 29794-1 (set once); per_level: CR-FIQA erc.py (re-set per level)",
                    view=types.DropdownView())
        inputs.enum("pair_quality", list(PAIR_QUALITY), default="min", label="Pair quality",
                    view=types.DropdownView())
        inputs.str("template_field", required=False, label="Template field (optional)",
                   description="Compare templates (faces of one identity sharing this field's value, IJB-C "
                               "style) instead of single faces", view=_suggest(_identity_candidates(ds)))
        if p.get("template_field"):
            inputs.enum("template_quality", list(TEMPLATE_QUALITY), default="min", label="Template quality",
                        description="of its faces' qualities: min (one bad face makes a bad template), mean, max",
                        view=types.DropdownView())
        inputs.int("max_impostors", default=DEFAULT_MAX_IMPOSTORS, label="Max impostor pairs")
        inputs.int("seed", default=0, label="Impostor sampling seed")
        inputs.bool("write_plot", default=True, label="Write a PNG of the curves")
        inputs.str("plot_path", required=False, label="PNG path", description="Default: under the dataset dir")
        inputs.bool("overwrite", default=False, label="Overwrite an existing evaluation")
        _delegate_input(inputs, len(ctx.target_view()) > 20000)
        return types.Property(inputs, view=types.View(label="PreFIQs: evaluate face quality"))

    def execute(self, ctx):
        from .plugin_ops import _run_progress

        p = ctx.params
        gen = iter_evaluate_face_quality(
            ctx.target_view(), p.get("identity_field"), p.get("quality_fields") or [],
            eval_key=p.get("eval_key") or "prefiqs_eval", embeddings_field=p.get("embeddings_field") or None,
            patches_field=p.get("patches_field") or None, target_fmr=p.get("target_fmr", 1e-3),
            threshold=p.get("threshold") or "fixed", pair_quality=p.get("pair_quality") or "min",
            max_impostors=p.get("max_impostors", DEFAULT_MAX_IMPOSTORS), seed=p.get("seed", 0),
            plot_path=(p.get("plot_path") or None) if p.get("write_plot", True) else False,
            overwrite=p.get("overwrite", False), template_field=p.get("template_field") or None,
            template_quality=p.get("template_quality") or "min")
        return _run_progress(ctx, gen, lambda r: f"evaluation {r['eval_key']}: {r['num_mated']} genuine, "
                                                 f"{r['num_nonmated']} impostor pairs; plot {r['plot_path']}")

    def __call__(self, sample_collection, identity_field, quality_fields, eval_key="prefiqs_eval",
                 embeddings_field=None, patches_field=None, target_fmr=1e-3, threshold="fixed", pair_quality="min",
                 max_impostors=DEFAULT_MAX_IMPOSTORS, seed=0, plot_path=None, overwrite=False, template_field=None,
                 template_quality="min", delegate=False):
        """See :func:`evaluate_face_quality`. Returns :func:`load_evaluation` of the stored run (or,
        when delegated, the ``ExecutionResult`` of the queued operation)."""
        from .plugin_ops import _execute

        # the form's plot_path is a string: "no plot" travels as write_plot=False
        write_plot = plot_path is not False
        params = dict(identity_field=identity_field, quality_fields=list(
            [quality_fields] if isinstance(quality_fields, str) else quality_fields),
            eval_key=eval_key, embeddings_field=embeddings_field, patches_field=patches_field,
            target_fmr=float(target_fmr), threshold=threshold, pair_quality=pair_quality,
            max_impostors=int(max_impostors), seed=int(seed), write_plot=write_plot,
            plot_path=str(plot_path) if write_plot and plot_path else None, overwrite=overwrite,
            template_field=template_field, template_quality=template_quality, delegate=delegate)
        result = _execute(self.uri, sample_collection, {k: v for k, v in params.items() if v is not None}, delegate)
        result.raise_exceptions()
        if delegate:
            return result
        return load_evaluation(sample_collection, eval_key)
