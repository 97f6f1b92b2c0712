"""Comparison pairs for verification-style evaluation: genuine (mated) pairs from identity labels,
a seeded sample of impostor (non-mated) pairs, identity templates, and pairwise cosine similarity.

Faces are referred to by their index in the ``labels`` list. A label is any hashable value
(str or int); ``None`` (or a float NaN, as pandas writes missing values) marks an unlabeled face,
which takes part in no pair. Every pair is returned as ``(i, j)`` with ``i < j``: no self pairs and
no duplicates, sorted lexicographically so the output is independent of the sampling order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

DEFAULT_MAX_IMPOSTORS = 100_000


def _is_missing(label) -> bool:
    return label is None or (isinstance(label, float) and math.isnan(label))


def _encode(labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """(indices of labeled faces, integer identity code of each of them)."""
    codes, idx, out = {}, [], []
    for i, lab in enumerate(labels):
        if _is_missing(lab):
            continue
        idx.append(i)
        out.append(codes.setdefault(lab, len(codes)))
    return np.asarray(idx, dtype=np.int64), np.asarray(out, dtype=np.int64)


def _sorted_pairs(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.int64).reshape(-1, 2)
    return p[np.lexsort((p[:, 1], p[:, 0]))] if len(p) else p


def genuine_pairs(labels: Sequence[Hashable]) -> np.ndarray:
    """Every pair ``(i, j)``, ``i < j``, of labeled faces with the same identity: an ``(K, 2)`` int array."""
    idx, code = _encode(labels)
    out = []
    for c in np.unique(code):
        members = idx[code == c]
        if len(members) > 1:
            a, b = np.triu_indices(len(members), k=1)
            out.append(np.stack([members[a], members[b]], axis=1))
    return _sorted_pairs(np.concatenate(out) if out else np.zeros((0, 2), np.int64))


def count_impostor_pairs(labels: Sequence[Hashable]) -> int:
    """How many different-identity pairs of labeled faces exist: C(n, 2) − Σ C(n_id, 2)."""
    _, code = _encode(labels)
    sizes = np.bincount(code) if len(code) else np.zeros(0, np.int64)
    n = len(code)
    return n * (n - 1) // 2 - int(sum(s * (s - 1) // 2 for s in sizes.tolist()))


def impostor_pairs(labels: Sequence[Hashable], max_impostors: int = DEFAULT_MAX_IMPOSTORS,
                   seed: int = 0) -> np.ndarray:
    """Impostor pairs ``(i, j)``, ``i < j``, of labeled faces with different identities.

    If at most ``max_impostors`` exist, all of them are returned (exact). Otherwise a uniform
    random sample of exactly ``max_impostors`` distinct pairs, drawn with ``numpy`` generator
    ``seed`` (same labels + seed → same pairs). Returns an ``(K, 2)`` int array, sorted.
    """
    if int(max_impostors) != max_impostors or max_impostors < 0:
        raise ValueError(f"max_impostors must be a non-negative integer, got {max_impostors!r}")
    max_impostors = int(max_impostors)
    total = count_impostor_pairs(labels)
    idx, code = _encode(labels)
    if total <= max_impostors:
        return _all_impostors(idx, code)
    return _sample_impostors(idx, code, max_impostors, total, np.random.default_rng(seed))


def _all_impostors(idx, code) -> np.ndarray:
    out = []
    for k in range(len(idx) - 1):  # row by row: memory stays O(n) per step
        later = np.arange(k + 1, len(idx))
        later = later[code[later] != code[k]]
        out.append(np.stack([np.full(len(later), idx[k]), idx[later]], axis=1))
    return _sorted_pairs(np.concatenate(out) if out else np.zeros((0, 2), np.int64))


def _sample_impostors(idx, code, k, total, rng) -> np.ndarray:
    # Draw two faces independently and uniformly, drop self / same-identity draws, order them:
    # every unordered impostor pair then has the same probability 2/n², so accepted pairs are a
    # uniform sample; duplicates are removed by the set of encoded keys (i * n + j).
    n = len(idx)
    accept_rate = total / (n * n)
    seen: set[int] = set()
    chosen: list[int] = []
    while len(chosen) < k:
        need = k - len(chosen)
        draws = int(need / accept_rate * 1.2) + 64
        a = rng.integers(0, n, draws)
        b = rng.integers(0, n, draws)
        ok = code[a] != code[b]
        lo, hi = np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])
        for key in (lo * n + hi).tolist():
            if key not in seen:
                seen.add(key)
                chosen.append(key)
                if len(chosen) == k:
                    break
    keys = np.asarray(chosen, dtype=np.int64)
    return _sorted_pairs(np.stack([idx[keys // n], idx[keys % n]], axis=1))


@dataclass
class Pairs:
    """Comparison pairs: faces ``a[k]`` and ``b[k]`` (indices into the labels) and whether mated."""

    a: np.ndarray
    b: np.ndarray
    mated: np.ndarray
    n_impostors_total: int  # how many impostor pairs exist (the sample may be smaller)
    seed: int
    notes: list[str] = field(default_factory=list)

    def __len__(self):
        return len(self.a)

    @property
    def n_mated(self) -> int:
        return int(self.mated.sum())

    @property
    def n_nonmated(self) -> int:
        return int((~self.mated).sum())


def make_pairs(labels: Sequence[Hashable], max_impostors: int = DEFAULT_MAX_IMPOSTORS,
               seed: int = 0) -> Pairs:
    """All genuine pairs followed by the (sampled) impostor pairs of ``labels``.

    See :func:`genuine_pairs` and :func:`impostor_pairs`. ``notes`` says when the impostors were
    sampled or when a side is empty (an EDC then cannot be computed).
    """
    gen = genuine_pairs(labels)
    imp = impostor_pairs(labels, max_impostors, seed)
    total = count_impostor_pairs(labels)
    notes = []
    if len(imp) < total:
        notes.append(f"sampled {len(imp)} of {total} impostor pairs (seed {seed})")
    if len(gen) == 0:
        notes.append("no genuine pairs: no identity has two labeled faces")
    if total == 0:
        notes.append("no impostor pairs: fewer than two labeled identities")
    both = np.concatenate([gen, imp])
    mated = np.concatenate([np.ones(len(gen), bool), np.zeros(len(imp), bool)])
    return Pairs(both[:, 0].copy(), both[:, 1].copy(), mated, total, seed, notes)


# ---------------------------------------------------------------------------------------------
# Similarity


def _unit_rows(e: np.ndarray, name: str) -> np.ndarray:
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError(f"{name} contains NaN or inf")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row ({int(np.flatnonzero(norms[:, 0] == 0)[0])}): "
                         "its direction (and cosine) is undefined")
    return e / norms


def cosine_similarities(emb_a, emb_b) -> np.ndarray:
    """Row-wise cosine similarity: ``cos(emb_a[k], emb_b[k])`` for each k, in [-1, 1].

    Inputs need not be normalised; all-zero rows are an error.
    """
    a, b = _unit_rows(emb_a, "emb_a"), _unit_rows(emb_b, "emb_b")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)


def pair_similarities(embeddings, pairs: Pairs) -> np.ndarray:
    """Cosine similarity of every pair in ``pairs``, from per-face ``embeddings`` (N, D)."""
    e = np.asarray(embeddings)
    return cosine_similarities(e[pairs.a], e[pairs.b])


# ---------------------------------------------------------------------------------------------
# Templates


QUALITY_REDUCERS = {"min": np.minimum, "max": np.maximum}
TEMPLATE_QUALITY = ("min", "mean", "max")  # how a template's quality comes from its faces'
PAIR_BLOCK = 4096  # template pairs whose features are gathered at once


@dataclass
class TemplateSet:
    """Template features: one row per template id, in order of each template's first face."""

    ids: np.ndarray  # (T,) template ids
    embeddings: np.ndarray  # (T, D), L2-normalised
    quality: np.ndarray  # (T,) reduced member quality (NaN without qualities)
    members: list[np.ndarray]  # face indices of each template
    face_rows: np.ndarray  # (N,) the template row of each face

    def reduce_quality(self, quality, how: str = "min") -> np.ndarray:
        """Per template, ``how`` (min, mean, max) of its faces' ``quality`` (an ``(N,)`` array):
        other quality measures over the same templates without aggregating the features again."""
        return _reduce_by_row(self.face_rows, quality, len(self.ids), how)

    def pair_rows(self, t1, t2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of the two templates of each pair ``(t1[k], t2[k])`` and a mask of the pairs whose two
        templates both exist here."""
        r1, ok1 = self.rows(t1)
        r2, ok2 = self.rows(t2)
        return r1, r2, ok1 & ok2

    def similarities(self, r1, r2) -> np.ndarray:
        """Cosine similarity of the template rows ``r1[k]`` and ``r2[k]``, computed in blocks (15 M
        pairs x 512-D gathered at once would be 120 GiB)."""
        r1, r2 = np.asarray(r1), np.asarray(r2)
        out = np.empty(len(r1))
        e = self.embeddings
        for k in range(0, len(r1), PAIR_BLOCK):
            out[k:k + PAIR_BLOCK] = np.einsum("ij,ij->i", e[r1[k:k + PAIR_BLOCK]], e[r2[k:k + PAIR_BLOCK]])
        return np.clip(out, -1.0, 1.0)

    def rows(self, template_ids) -> tuple[np.ndarray, np.ndarray]:
        """Row of each of ``template_ids`` in this set, and a mask of those that have one."""
        ids = np.asarray(template_ids)
        order = np.argsort(self.ids, kind="stable")
        sorted_ids = self.ids[order]
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(ids.shape, bool)
        return np.where(found, order[pos] if len(order) else 0, -1), found


def aggregate_templates(embeddings, template_ids, media_ids=None, weights=None, quality=None,
                        quality_reduce: str = "min") -> TemplateSet:
    """Template features from face embeddings, the IJB-B/C way.

    Each face embedding is L2-normalised and multiplied by its ``weights`` entry (e.g. the
    detector score; 1 when ``None``). Within a template, faces of one media (the same still or
    video) are averaged first, so a 200-frame video counts as much as one photo; the media
    features are then summed and the sum L2-normalised. Without ``media_ids`` every face is its own
    media, so the template is the normalised mean of its faces.

    Template quality reduces the members' ``quality`` with ``quality_reduce``: ``"min"`` (as
    CR-FIQA's IJB-C evaluation: one bad image makes a bad template), ``"mean"`` or ``"max"``.
    Template ids are any integers or strings; templates come in order of their first face.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {emb.shape}")
    n = len(emb)
    tids = np.asarray(template_ids)
    if tids.shape != (n,):
        raise ValueError(f"template_ids must have shape ({n},), got {tids.shape}")
    mids = np.arange(n) if media_ids is None else np.asarray(media_ids)
    if mids.shape != (n,):
        raise ValueError(f"media_ids must have shape ({n},), got {mids.shape}")
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be {n} finite non-negative numbers")
    q = None
    if quality is not None:
        q = np.asarray(quality, dtype=np.float64)
        if q.shape != (n,):
            raise ValueError(f"quality must have shape ({n},), got {q.shape}")
    _check_reduce(quality_reduce)
    if n == 0:
        return TemplateSet(tids[:0], np.zeros((0, emb.shape[1])), np.zeros(0), [], np.zeros(0, np.int64))

    uniq, first, t_of_face = np.unique(tids, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))  # rows in order of first appearance
    t_of_face = rank[t_of_face.reshape(-1)]
    m_code = np.unique(mids, return_inverse=True)[1].reshape(-1)
    # Faces sorted by (template, media): media and templates are then runs, summed by reduceat
    # with one copy of the embeddings (IJB-C: 227k x 512), where np.add.at would be slow.
    order = np.lexsort((m_code, t_of_face))
    e = np.empty(emb.shape, np.float64)
    for k in range(0, n, 1 << 16):  # gathered in blocks: no second full-size copy in the input's dtype
        e[k:k + (1 << 16)] = emb[order[k:k + (1 << 16)]]
    sq = np.einsum("ij,ij->i", e, e)
    if not np.isfinite(sq).all():
        raise ValueError(f"embeddings row {int(order[np.flatnonzero(~np.isfinite(sq))[0]])} contains NaN or inf")
    if (sq == 0).any():
        raise ValueError(f"embeddings row {int(order[np.flatnonzero(sq == 0)[0]])} is all zeros: its direction "
                         "is undefined")
    scale = 1.0 / np.sqrt(sq)
    if w is not None:
        scale *= w[order]
    e *= scale[:, None]
    ts, ms = t_of_face[order], m_code[order]
    starts = np.flatnonzero(np.r_[True, (ts[1:] != ts[:-1]) | (ms[1:] != ms[:-1])])
    media_mean = np.add.reduceat(e, starts, axis=0)
    del e
    media_mean /= np.diff(np.r_[starts, n])[:, None]
    t_of_media = ts[starts]
    feats = np.add.reduceat(media_mean, np.flatnonzero(np.r_[True, t_of_media[1:] != t_of_media[:-1]]), axis=0)
    ids = tids[np.sort(first)]
    norms = np.sqrt(np.einsum("ij,ij->i", feats, feats))
    if (norms == 0).any():
        raise ValueError(f"template {ids[int(np.flatnonzero(norms == 0)[0])].item()!r} has a zero feature (all "
                         "its weights are 0?): its direction is undefined")
    feats /= norms[:, None]

    face_order = np.argsort(t_of_face, kind="stable")
    bounds = np.cumsum(np.bincount(t_of_face, minlength=len(uniq)))[:-1]
    members = np.split(face_order, bounds)
    tq = np.full(len(uniq), np.nan) if q is None else _reduce_by_row(t_of_face, q, len(uniq), quality_reduce)
    return TemplateSet(ids, feats, tq, members, t_of_face)


def _check_reduce(how: str) -> None:
    if how not in TEMPLATE_QUALITY:
        raise ValueError(f"quality_reduce must be 'min', 'mean' or 'max', got {how!r}")


def _reduce_by_row(rows: np.ndarray, values, n_rows: int, how: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != rows.shape:
        raise ValueError(f"quality must have shape {rows.shape}, got {v.shape}")
    _check_reduce(how)
    if how == "mean":
        return np.bincount(rows, weights=v, minlength=n_rows) / np.bincount(rows, minlength=n_rows)
    out = np.full(n_rows, np.inf if how == "min" else -np.inf)
    QUALITY_REDUCERS[how].at(out, rows, v)
    return out


def template_pair_similarities(templates: TemplateSet, t1, t2) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of template pairs ``(t1[k], t2[k])`` (template ids) and a mask of the
    pairs whose two templates both exist in ``templates`` (similarity NaN elsewhere)."""
    r1, r2, ok = templates.pair_rows(t1, t2)
    sims = np.full(len(ok), np.nan)
    sims[ok] = templates.similarities(r1[ok], r2[ok])
    return sims, ok



@dataclass
class Templates:
    """One row per (identity, template id): its embedding, quality, identity and member faces."""

    keys: list[tuple]  # (identity, template id)
    embeddings: np.ndarray  # (T, D), L2-normalised
    quality: np.ndarray  # (T,) min quality over the members
    labels: list  # (T,) identity of each template: feed to make_pairs for template comparisons
    members: list[np.ndarray]  # face indices of each template
    face_rows: np.ndarray = None  # (N,) the template row of each face, -1 for a skipped face

    def reduce_quality(self, quality, how: str = "min") -> np.ndarray:
        """Per template, ``how`` (min, mean, max) of its faces' ``quality`` (an ``(N,)`` array over
        all faces, skipped ones included)."""
        q = np.asarray(quality, dtype=np.float64)
        if q.shape != self.face_rows.shape:
            raise ValueError(f"quality must have shape {self.face_rows.shape}, got {q.shape}")
        kept = self.face_rows >= 0
        return _reduce_by_row(self.face_rows[kept], q[kept], len(self.keys), how)


def build_templates(embeddings, labels: Sequence[Hashable], template_ids: Sequence[Hashable],
                    quality=None, media_ids=None, quality_reduce: str = "min") -> Templates:
    """Group faces into templates keyed by ``(identity, template id)``.

    Features and qualities as :func:`aggregate_templates` (media averaged, then summed; quality
    the **min** over the members by default). Faces with a missing identity or template id are
    skipped. Templates appear in order of their first face.
    """
    e = _unit_rows(embeddings, "embeddings")
    n = len(e)
    if len(labels) != n or len(template_ids) != n:
        raise ValueError(f"length mismatch: {n} embeddings, {len(labels)} labels, "
                         f"{len(template_ids)} template ids")
    keep, keys, key_of = [], [], {}
    codes = []
    for i, (lab, tid) in enumerate(zip(labels, template_ids)):
        if _is_missing(lab) or _is_missing(tid):
            continue
        keep.append(i)
        codes.append(key_of.setdefault((lab, tid), len(key_of)))
    keys = list(key_of)
    keep = np.asarray(keep, dtype=np.int64)
    q = None if quality is None else np.asarray(quality, dtype=np.float64)
    if q is not None and q.shape != (n,):
        raise ValueError(f"quality must have shape ({n},), got {q.shape}")
    m = None if media_ids is None else np.asarray(media_ids)[keep]
    ts = aggregate_templates(e[keep], np.asarray(codes, dtype=np.int64), m,
                             quality=None if q is None else q[keep], quality_reduce=quality_reduce)
    face_rows = np.full(n, -1, np.int64)
    face_rows[keep] = ts.face_rows
    return Templates(keys, ts.embeddings, ts.quality, [k[0] for k in keys],
                     [keep[mem] for mem in ts.members], face_rows)
