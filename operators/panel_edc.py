"""The panel's hook for evaluations: find the stored EDC curves of a PreFIQs evaluation run.

Evaluations are written by ``evaluate_face_quality`` (``operators/evaluation.py``, built beside
this panel). This module defines what the panel reads, so that the two meet without either
faking data:

-   an evaluation is a FiftyOne custom run (``dataset.list_runs()``) whose config has
    ``method`` in :data:`EVALUATION_METHODS`, or ``prefiqs_evaluation: True``
-   the config may name the quality run it evaluates as ``run_key`` (or ``quality_run``); the
    panel then shows it only with that run. Without one it is shown with every run
-   its results (``dataset.load_run_results(key)``) hold ``curves`` (or ``edc``): either one
    curve or a dict ``{name: curve}`` (e.g. PreFIQs against baselines). A curve is a dict with at least
    ``discard_fractions`` and ``fnmr`` (lists), as written by
    ``prefiqs_core.evaluation.EDCResult.as_dict()``; ``convention``, ``target_fmr`` and
    ``pauc`` are used when present

``operators/evaluation.py`` (``evaluate_face_quality``) writes exactly this: ``method
"prefiqs_evaluation"``, ``quality_run`` in its config and ``curves`` in its results. If no such
run exists the panel says so; it never draws a curve it did not find.
"""
from __future__ import annotations

import math

EVALUATION_METHODS = ("prefiqs_evaluation", "evaluate_face_quality")


def _config(dataset, key) -> dict:
    try:
        cfg = dataset.get_run_info(key).config.serialize()
    except Exception:  # a run of an unknown class must not break the panel
        return {}
    return dict(cfg)


def is_evaluation_run(dataset, key) -> bool:
    cfg = _config(dataset, key)
    return cfg.get("method") in EVALUATION_METHODS or bool(cfg.get("prefiqs_evaluation"))


def evaluation_runs(dataset, run_key=None) -> list[str]:
    """Keys of the evaluation runs that apply to quality run ``run_key`` (all of them if ``None``)."""
    keys = []
    for key in dataset.list_runs():
        if not is_evaluation_run(dataset, key):
            continue
        cfg = _config(dataset, key)
        target = cfg.get("run_key") or cfg.get("quality_run")
        if run_key is None or target in (None, run_key):
            keys.append(key)
    return keys


def _curves(edc) -> dict:
    """``{name: curve}`` from either one curve or a mapping of curves."""
    if not isinstance(edc, dict):
        return {}
    if "discard_fractions" in edc and "fnmr" in edc:
        return {"": edc}
    return {str(k): v for k, v in edc.items() if isinstance(v, dict) and "discard_fractions" in v and "fnmr" in v}


def _finite(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def load_curves(dataset, keys) -> list[dict]:
    """One plotly line trace per stored EDC curve of the runs ``keys``."""
    traces = []
    for key in keys:
        res = dataset.load_run_results(key, cache=False, load_view=False)
        data = res.serialize() if res is not None else {}
        for name, c in _curves(data.get("curves") or data.get("edc")).items():
            label = f"{key}: {name}" if name else key
            extras = []
            if c.get("target_fmr") is not None:
                extras.append(f"FMR {float(c['target_fmr']):g}")
            if c.get("pauc") is not None:
                extras.append(f"pAUC {float(c['pauc']):.4f}")
            if extras:
                label += f" ({', '.join(extras)})"
            traces.append(dict(type="scatter", mode="lines", name=label,
                               x=[_finite(v) for v in c["discard_fractions"]],
                               y=[_finite(v) for v in c["fnmr"]],
                               line=dict(shape="hv" if c.get("convention", "fixed") == "fixed" else "linear")))
    return traces


def edc_layout() -> dict:
    return dict(title=dict(text="Error versus discard (EDC)", font=dict(size=13)), height=280,
                xaxis=dict(title="fraction discarded (lowest quality first)", range=[0, 1]),
                yaxis=dict(title="FNMR"), margin=dict(l=50, r=10, t=40, b=40),
                legend=dict(orientation="h", y=-0.3))
