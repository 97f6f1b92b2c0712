"""``load_ijb``: an IJB-B/C release (insightface's layout) as a FiftyOne dataset, ready to triage.

One sample per loose crop. Its face is a ``Detection`` (a box around the 5 points) linked by an
``fo.Instance`` to a ``Keypoint`` holding the release's own 5 points (``arcface5``), so
``compute_prefiqs(patches_field="face", keypoints_field="face_points")`` aligns each face exactly as
``benchmarks/evaluate.py --ijb`` does. ``template_id``, ``media_id`` and ``detector_score`` come
along. The verification pairs stay in the release's files (IJB-C has 15.7 M of them).
"""
from __future__ import annotations

import numpy as np
import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from ..prefiqs_core.evaluation.ijb import read_ijb
from .progress import Progress, drive

FACE_FIELD = "face"
POINTS_FIELD = "face_points"
BATCH = 1000


def _box_around(points: np.ndarray, width: int, height: int) -> list[float]:
    """A relative ``[x, y, w, h]`` square around the 5 points: for display, and the fallback of a face
    whose points are unusable. The eyes-to-mouth height is about a third of a face's height."""
    c = points.mean(axis=0)
    span = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 1.0)
    side = 2.2 * span
    x0, y0 = max(0.0, c[0] - side / 2), max(0.0, c[1] - side / 2)
    x1, y1 = min(float(width), c[0] + side / 2), min(float(height), c[1] + side / 2)
    return [x0 / width, y0 / height, max(x1 - x0, 1.0) / width, max(y1 - y0, 1.0) / height]


def _image_size(path: str):
    from PIL import Image

    try:
        with Image.open(path) as im:  # the header only
            return im.size
    except Exception as e:  # a missing or broken file: the sample keeps the reason
        return str(e) or type(e).__name__


def iter_load_ijb(root, dataset_name=None, target=None, max_templates=None, max_pairs=None, seed=0,
                  persistent=False, overwrite=False):
    """:func:`load_ijb` as a generator of :class:`Progress`; returns the dataset."""
    proto = read_ijb(root, target)
    total_pairs = len(proto.pair_label)
    proto = proto.subset(max_pairs, seed=seed, max_templates=max_templates)
    name = dataset_name or proto.name.split(" ")[0].lower()
    if fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"dataset {name!r} exists; pass overwrite=True or another dataset_name")
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=persistent)
    ds.add_sample_field(FACE_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    ds.add_sample_field(POINTS_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Keypoints)
    pf = ds.get_field(POINTS_FIELD)
    pf.info = dict(landmark_convention="arcface5", detections_field=FACE_FIELD)
    pf.save()
    paths, n, unreadable = proto.paths, len(proto), 0
    for start in range(0, n, BATCH):
        samples = []
        for i in range(start, min(start + BATCH, n)):
            s = fo.Sample(filepath=paths[i], template_id=int(proto.template_ids[i]),
                          media_id=int(proto.media_ids[i]), detector_score=float(proto.face_scores[i]))
            size = _image_size(paths[i])
            if isinstance(size, str):
                s["ijb_error"] = f"unreadable image: {size}"
                unreadable += 1
            else:
                w, h = size
                pts = proto.landmarks[i]
                inst = fo.Instance()
                s[FACE_FIELD] = fo.Detections(detections=[fo.Detection(
                    label="face", bounding_box=_box_around(pts, w, h), confidence=float(proto.face_scores[i]),
                    instance=inst)])
                s[POINTS_FIELD] = fo.Keypoints(keypoints=[fo.Keypoint(
                    label="face", points=(pts / [w, h]).tolist(), instance=inst, convention="arcface5")])
            samples.append(s)
        ds.add_samples(samples, progress=False)
        yield Progress(min(start + BATCH, n) / n, f"{min(start + BATCH, n)}/{n} faces imported")
    ds.info["ijb"] = dict(root=str(proto.image_dir.parent), target=proto.name.split(" ")[0],
                          subset=proto.name, faces=n, templates=int(len(np.unique(proto.template_ids))),
                          pairs=int(len(proto.pair_label)), pairs_in_protocol=total_pairs, unreadable=unreadable,
                          seed=int(seed), max_templates=max_templates, max_pairs=max_pairs)
    ds.save()
    return ds


def load_ijb(root, dataset_name=None, target=None, max_templates=None, max_pairs=None, seed=0,
             persistent=False, overwrite=False, progress=None):
    """Imports an IJB-B/C release (``IJB_release`` or its ``IJBC`` folder) as a FiftyOne dataset.

    Args:
        root: the release folder (see ``prefiqs_core.evaluation.ijb.read_ijb``)
        dataset_name (None): default ``"ijbc"`` / ``"ijbb"``
        target (None): ``"IJBC"`` or ``"IJBB"`` when ``root`` holds both
        max_templates, max_pairs, seed: import a seeded subset (``IJBProtocol.subset``): only the
            faces of the templates the kept pairs use
        persistent (False): keep the dataset after this process ends
        overwrite (False): replace an existing dataset of that name
        progress (None): a callable ``progress(fraction, label)``

    Returns:
        the dataset: fields ``face`` (Detections), ``face_points`` (Keypoints, arcface5),
        ``template_id``, ``media_id``, ``detector_score``; ``ijb_error`` on samples whose image could
        not be read; ``info["ijb"]`` says what was imported
    """
    return drive(iter_load_ijb(root, dataset_name=dataset_name, target=target, max_templates=max_templates,
                               max_pairs=max_pairs, seed=seed, persistent=persistent, overwrite=overwrite),
                 progress)


def _summary(gen):
    # an operation's result is stored in the database: plain data, not the dataset object
    ds = yield from gen
    return dict(dataset=ds.name, **ds.info["ijb"])


class LoadIJB(foo.Operator):
    """Import an IJB-B/C release as a dataset (from the App: a path on the server's disk)."""

    @property
    def config(self):
        return foo.OperatorConfig(name="load_ijb", label="PreFIQs: import an IJB-B/C release",
                                  description="loose crops with their 5 points, templates and media",
                                  execute_as_generator=True, allow_immediate_execution=True,
                                  allow_delegated_execution=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("root", required=True, label="Release folder",
                   description="IJB_release, or its IJBC folder (meta/ and loose_crop/)")
        inputs.str("dataset_name", required=False, label="Dataset name", description="default: ijbc / ijbb")
        inputs.int("max_templates", required=False, label="Max templates (a seeded sample)")
        inputs.int("max_pairs", required=False, label="Max pairs (a seeded sample)")
        inputs.bool("persistent", default=True, label="Persistent")
        inputs.bool("overwrite", default=False, label="Overwrite a dataset of that name")
        return types.Property(inputs, view=types.View(label="PreFIQs: import an IJB-B/C release"))

    def execute(self, ctx):
        from .plugin_ops import _run_progress

        p = ctx.params
        gen = iter_load_ijb(p["root"], dataset_name=p.get("dataset_name") or None,
                            max_templates=p.get("max_templates") or None, max_pairs=p.get("max_pairs") or None,
                            persistent=p.get("persistent", True), overwrite=p.get("overwrite", False))
        return _run_progress(ctx, _summary(gen), lambda r: f"dataset {r['dataset']}: {r['faces']} faces imported")

    def __call__(self, root, dataset_name=None, target=None, max_templates=None, max_pairs=None, seed=0,
                 persistent=False, overwrite=False):
        """See :func:`load_ijb`; runs in this process and returns the dataset."""
        return load_ijb(root, dataset_name=dataset_name, target=target, max_templates=max_templates,
                        max_pairs=max_pairs, seed=seed, persistent=persistent, overwrite=overwrite)
