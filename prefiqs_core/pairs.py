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


@dataclass
class Templates:
    """One row per (identity, template id): its embedding, quality, identity and member faces."""

    keys: list[tuple]  # (identity, template id)
    embeddings: np.ndarray  # (T, D), L2-normalised
    quality: np.ndarray  # (T,) min quality over the members
    labels: list  # (T,) identity of each template: feed to make_pairs for template comparisons
    members: list[np.ndarray]  # face indices of each template


def build_templates(embeddings, labels: Sequence[Hashable], template_ids: Sequence[Hashable],
                    quality=None) -> Templates:
    """Group faces into templates keyed by ``(identity, template id)``.

    A template's embedding is the mean of its members' L2-normalised embeddings, normalised again
    (a simplification of the IJB-C recipe, which first averages per media); its quality is the
    **min** over its members (as CR-FIQA's IJB-C evaluation), so one bad image makes a bad
    template. Faces with a missing identity or template id are skipped. Templates appear in
    order of their first face.
    """
    e = _unit_rows(embeddings, "embeddings")
    n = len(e)
    if len(labels) != n or len(template_ids) != n:
        raise ValueError(f"length mismatch: {n} embeddings, {len(labels)} labels, "
                         f"{len(template_ids)} template ids")
    q = None if quality is None else np.asarray(quality, dtype=np.float64)
    if q is not None and q.shape != (n,):
        raise ValueError(f"quality must have shape ({n},), got {q.shape}")
    groups: dict[tuple, list[int]] = {}
    for i, (lab, tid) in enumerate(zip(labels, template_ids)):
        if _is_missing(lab) or _is_missing(tid):
            continue
        groups.setdefault((lab, tid), []).append(i)
    keys = list(groups)
    members = [np.asarray(groups[k], dtype=np.int64) for k in keys]
    if members:
        emb = _unit_rows(np.stack([e[m].mean(0) for m in members]), "template embeddings")
    else:
        emb = np.zeros((0, e.shape[1]))
    tq = np.asarray([q[m].min() for m in members]) if q is not None else np.full(len(keys), np.nan)
    return Templates(keys, emb, tq, [k[0] for k in keys], members)
