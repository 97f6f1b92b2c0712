"""The face a user pinned by clicking a map point: what the panel shows of it and how it is marked.

FiftyOne 1.22's plotly widget sends click, lasso, double-click and deselect events to Python, but no
hover events (``PlotlyView`` in the App's bundle wires ``onClick``, ``onSelected``, ``onDoubleClick``,
``onDeselect``... and no ``onHover``), so "the same face in the other map" and "the face itself" can
only follow a click: the clicked face is pinned, ringed in both maps (a layout shape at its point in each) and shown as a
thumbnail.

The thumbnail is a small JPEG data URI made here (the face's box cropped from its image for a
patch-level run, the whole image for a sample-level run): it needs no file written anywhere, works
for any media the server can read, and the App's ``ImageView`` puts it in an ``<img src>`` as is.
"""
from __future__ import annotations

import base64
import io
import os
from urllib.parse import quote

from bson import ObjectId

THUMB_PX = 128
MARGIN = 0.2  # of the box's size on each side: the face with a little context
PIN_COLOR = "#1565c0"  # blue: outside the red-yellow-green quality scale, so never read as a quality


def media_url(filepath: str) -> str:
    """The App's own route to a sample's media (``/media?filepath=``), opened by clicking the thumbnail."""
    return "/media?filepath=" + quote(filepath, safe="")


def thumbnail(filepath: str, box=None, px: int = THUMB_PX) -> str | None:
    """A JPEG data URI of ``filepath`` (cropped to ``box``, relative ``[x, y, w, h]``), or ``None``
    when the image cannot be read (the panel then shows the text alone)."""
    from PIL import Image

    try:
        with Image.open(filepath) as im:
            im = im.convert("RGB")
            if box:
                W, H = im.size
                x, y, w, h = box
                mx, my = w * MARGIN, h * MARGIN
                im = im.crop((max(0, int((x - mx) * W)), max(0, int((y - my) * H)),
                              min(W, int((x + w + mx) * W) + 1), min(H, int((y + h + my) * H) + 1)))
            # small images (ORL's 92x112) are enlarged too, so every pinned face shows at one size
            scale = px / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _text_of(value):
    """A hover field's value as text (a Classification shows its label)."""
    return getattr(value, "label", value)


def pin_info(dataset, scope, face_id: str, hover_field: str | None = None) -> dict | None:
    """What the panel shows of the face ``face_id`` (a label id for patch-level runs, else a sample id):
    file name, quality, drift, the chosen field, the sample's id, and the thumbnail. ``None`` if the
    face is gone from the dataset."""
    fields = scope.fields
    try:
        oid = ObjectId(face_id)
    except Exception:
        return None
    if scope.patch_run:
        pf = fields.patches_field
        # match_labels keeps the sample's other fields (select_labels would drop its other label
        # fields, the identity a user picked to show among them)
        found = dataset.match_labels(ids=[face_id], fields=pf)
        sample = found.first() if len(found) else None
        dets = (sample[pf].detections if sample is not None and sample[pf] is not None else [])
        face = next((d for d in dets if d.id == face_id), None)
        if face is None:
            return None
        q, d = getattr(face, f"{fields.key}_quality", None), getattr(face, f"{fields.key}_drift", None)
        box = list(face.bounding_box)
        reading = {k: getattr(face, f"{fields.key}_{k}", None) for k in READING}
        reading["det_score"] = getattr(face, "confidence", None)
    else:
        found = dataset.select(str(oid))
        if not len(found):
            return None
        sample = found.first()
        q, d, box = sample[fields.quality], sample[fields.drift], None
        reading = {k: sample[f"{fields.key}_{k}"] if sample.has_field(f"{fields.key}_{k}") else None for k in READING}
    label = _text_of(sample[hover_field]) if hover_field and sample.has_field(hover_field) else None
    return dict(id=face_id, sample_id=sample.id, file=os.path.basename(sample.filepath),
                xy=pin_points(dataset, fields, face_id, scope.patch_run),
                q=None if q is None else round(float(q), 4), d=None if d is None else round(float(d), 4),
                reading={k: round(float(v), 4) for k, v in reading.items() if v is not None},
                field=hover_field or None, label=None if label is None else str(label),
                url=media_url(sample.filepath), image=thumbnail(sample.filepath, box))


# what a run may hold beside the quality, shown with a pinned face so that a low value can be read
# (the calibration table's percentile, the combined value and, on dlib, its distinctiveness part)
READING = ("percentile", "combined", "distinctiveness")


def pin_points(dataset, fields, face_id: str, patch_run: bool) -> dict:
    """``{"dense": [x, y], "pruned": [x, y]}``: where the face lies in each map (rounded as the map's
    own points are), from the brain results by id; a map without the face is left out."""
    from .panel_plots import points_for

    have = set(dataset.list_brain_runs(type="visualization"))
    out = {}
    for which in ("dense", "pruned"):
        if fields.brain_key(which) not in have:
            continue
        pts, keep = points_for(dataset.load_brain_results(fields.brain_key(which)), [face_id], patch_run)
        if keep:
            out[which] = [round(float(pts[0][0]), 4), round(float(pts[0][1]), 4)]
    return out


def ring_shape(point) -> dict:
    """The pinned face's ring in one map, as a layout shape (a circle of fixed pixel size anchored at
    the point). A shape, not a trace: pinning then changes the maps' layouts only, and the App is
    not sent every point of both maps again (20 MB and ~10 s on 100k faces)."""
    x, y = point
    return dict(type="circle", name="pinned", xref="x", yref="y", xsizemode="pixel", ysizemode="pixel",
                xanchor=x, yanchor=y, x0=-12, x1=12, y0=-12, y1=12, layer="above",
                line=dict(color=PIN_COLOR, width=3))


def _fmt(v):
    return "–" if v is None else f"{v:.4f}"


def pin_text(pin: dict, unit: str) -> str:
    """The markdown next to the thumbnail."""
    kind = "face" if unit == "faces" else "sample"
    lines = [f"**Pinned {kind}**: `{pin['file']}`", f"quality **{_fmt(pin['q'])}**, drift {_fmt(pin['d'])}"]
    r = pin.get("reading") or {}
    parts = [f"{name} {r[k]:.1f}" for k, name in (("percentile", "reference percentile"), ("combined", "combined"),
                                                   ("distinctiveness", "distinctiveness percentile")) if k in r]
    if "det_score" in r:
        parts.append(f"detector score {r['det_score']:.2f}")
    if parts:
        lines.append(", ".join(parts))
    if pin.get("field"):
        lines.append(f"{pin['field']}: **{pin['label'] if pin.get('label') is not None else '–'}**")
    lines.append("ringed in both maps; click it again, double-click a map or \"Clear pin\" to unpin")
    return "  \n".join(lines)
