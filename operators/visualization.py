"""One UMAP for a run's dense and pruned embeddings, stored as two brain visualization runs.

Both sets are stacked and embedded by a single UMAP fit, then split: the two 2-D maps share their
coordinates, so a face's dense point and pruned point can be compared directly (the distance
between them in the map mirrors the drift the score measures). Separate fits would place the two
clouds in unrelated coordinate systems.
"""
from __future__ import annotations

import warnings

import numpy as np
import fiftyone.brain as fob

from . import runs
from .progress import Progress, drive

PCA_MIN_POINTS = 5000


def compute_prefiqs_visualization(samples, run_key="prefiqs", seed=51, num_neighbors=15, min_dist=0.1,
                                  pca_dims=50, pca_min_points=PCA_MIN_POINTS, overwrite=False,
                                  progress=None) -> dict:
    """Computes the brain visualization runs ``<run_key>_dense_umap`` and ``<run_key>_pruned_umap``.

    The ``K_dense`` and ``K_pruned`` vectors of run ``run_key`` (sample- or patch-level, as the run
    was) are stacked, reduced to 2-D by one UMAP fit and split again; each half is stored with
    ``fiftyone.brain.compute_visualization(method="manual", points=...)``, so
    ``samples.load_brain_results("<run_key>_dense_umap")`` and the App's Embeddings panel work
    as for any brain visualization. Faces without embeddings (errors) are left out.

    Args:
        samples: the dataset or a view of it
        run_key ("prefiqs"): a PreFIQs run computed with ``store_embeddings`` including dense and pruned
        seed (51): UMAP's random state (and PCA's), for reproducible maps
        num_neighbors (15): UMAP ``n_neighbors`` (capped by the number of points)
        min_dist (0.1): UMAP ``min_dist``
        pca_dims (50): dimensions of a PCA run before UMAP on large sets; ``None`` disables it
        pca_min_points (5000): the PCA pre-reduction applies from this many points (both sets together)
        overwrite (False): replace existing visualization runs of the same keys
        progress (None): a callable ``progress(fraction, label)``

    Returns:
        a dict with ``brain_keys``, ``num_points`` per map, ``pca`` (whether it was used) and ``seed``
    """
    return drive(iter_compute_prefiqs_visualization(samples, run_key, seed, num_neighbors, min_dist, pca_dims,
                                                    pca_min_points, overwrite), progress)


def load_embeddings(samples, fields: runs.RunFields):
    """``(ids, dense, pruned)`` of every face with both vectors: sample ids, or label ids for patch runs."""
    if fields.patches_field:
        id_path = f"{fields.patches_field}.detections.id"
        ids, dense, pruned = samples.values([id_path, fields.vector("dense"), fields.vector("pruned")],
                                            unwind=True)
    else:
        ids, dense, pruned = samples.values(["id", fields.vector("dense"), fields.vector("pruned")])
    keep = [i for i, (d, p) in enumerate(zip(dense, pruned)) if d is not None and p is not None]
    if not keep:
        return [], np.zeros((0, 0)), np.zeros((0, 0))
    return ([ids[i] for i in keep], np.stack([dense[i] for i in keep]).astype(np.float32),
            np.stack([pruned[i] for i in keep]).astype(np.float32))


def joint_umap(dense, pruned, seed=51, num_neighbors=15, min_dist=0.1, pca_dims=50,
               pca_min_points=PCA_MIN_POINTS):
    """Fit one UMAP on ``dense`` and ``pruned`` stacked; returns their 2-D points and whether PCA ran."""
    import umap

    x = np.concatenate([dense, pruned])
    used_pca = bool(pca_dims) and len(x) >= pca_min_points and x.shape[1] > pca_dims
    if used_pca:
        from sklearn.decomposition import PCA

        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x)
    # spectral initialisation needs more points than a tiny test set offers
    reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(num_neighbors, len(x) - 1)), min_dist=min_dist,
                        random_state=seed, init="spectral" if len(x) > 50 else "random")
    with warnings.catch_warnings():
        # a seed makes UMAP single-threaded and it says so on every call; that is the price of reproducibility
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        pts = reducer.fit_transform(x)
    n = len(dense)
    return pts[:n], pts[n:], used_pca


def iter_compute_prefiqs_visualization(samples, run_key="prefiqs", seed=51, num_neighbors=15, min_dist=0.1,
                                       pca_dims=50, pca_min_points=PCA_MIN_POINTS, overwrite=False):
    """:func:`compute_prefiqs_visualization` as a generator of :class:`Progress`."""
    fields = runs.fields_of(samples, run_key)
    dataset = samples._dataset
    existing = [k for k in fields.brain_keys if k in dataset.list_brain_runs()]
    if existing and not overwrite:
        raise ValueError(f"visualization runs {existing} exist; pass overwrite=True to replace them")
    yield Progress(0.05, "loading embeddings")
    ids, dense, pruned = load_embeddings(samples, fields)
    if len(ids) < 3:
        raise ValueError(f"run {run_key!r} has {len(ids)} faces with dense and pruned embeddings in this view; "
                         "a map needs at least 3 (was it computed with store_embeddings?)")
    yield Progress(0.2, f"fitting UMAP on {2 * len(ids)} embeddings")
    pts_dense, pts_pruned, used_pca = joint_umap(dense, pruned, seed, num_neighbors, min_dist, pca_dims,
                                                 pca_min_points)
    for key in existing:
        dataset.delete_brain_run(key)
    yield Progress(0.8, "saving visualization runs")
    for which, pts in (("dense", pts_dense), ("pruned", pts_pruned)):
        fob.compute_visualization(samples, patches_field=fields.patches_field, method="manual",
                                  points={i: p for i, p in zip(ids, pts)}, brain_key=fields.brain_key(which))
    info = dict(brain_keys=fields.brain_keys, num_points=len(ids), seed=seed, num_neighbors=num_neighbors,
                min_dist=min_dist, pca=used_pca, pca_dims=pca_dims if used_pca else None)
    runs.update_results(dataset, run_key, visualizations=info)
    yield Progress(1.0, "done")
    return info
