"""One ``compute_prefiqs`` run split into N delegated operations, for N workers (GPUs or machines).

No scheduler of our own: each shard is an ordinary queued delegated operation of the
``compute_prefiqs`` operator, and ``fiftyone delegated launch`` workers that share the database
(``database_uri``) each claim one at a time (FiftyOne marks an operation RUNNING only if it is still
QUEUED, atomically, so two workers never run the same shard).

A shard is a *view*: the caller's target view restricted to a slice of a number derived from
FiftyOne's per-sample random ``_rand`` (set when a sample is added; FiftyOne 1.x draws it in
[0.999, 1), so the fractional part of ``_rand * 1e6`` is used, uniform in [0, 1) whatever that range
is). Slices are disjoint, cover every sample, hold about 1/N of the samples each, and stay small in
the queued operation's record whatever the dataset size (a list of ids would not). Shards run with
``resume=True``: the run is recorded and its fields declared once, here, before anything is
queued, and a shard rerun after a failure scores only what is missing.
"""
from __future__ import annotations

from fiftyone import ViewField as F

from .scoring import prepare_compute_prefiqs

OPERATOR_URI = "@prefiqs/prefiqs/compute_prefiqs"
RAND = "_rand"


def check_num_shards(num_shards) -> int:
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or not 1 <= num_shards <= 1024:
        raise ValueError(f"num_shards must be an integer from 1 to 1024, got {num_shards!r}")
    return num_shards


def shard_view(samples, index: int, num_shards: int):
    """Samples of shard ``index`` (0-based) of ``num_shards``: a ``_rand`` slice of ``samples``.

    The first slice has no lower bound and the last no upper bound, so that a sample without
    ``_rand`` (null sorts below numbers) or with ``_rand`` at the very ends is never left out.
    """
    check_num_shards(num_shards)
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index!r}")
    if num_shards == 1:
        return samples.view()
    lo, hi = index / num_shards, (index + 1) / num_shards
    key = (F(RAND) * 1e6) % 1  # $mod on doubles keeps the fraction; null when _rand is missing
    if index == 0:
        expr = key < hi
    elif index == num_shards - 1:
        expr = key >= lo
    else:
        expr = (key >= lo) & (key < hi)
    return samples.match(expr)


def queue_compute_prefiqs_shards(samples, num_shards: int, run_key: str = "prefiqs", delegation_target=None,
                                 operator_uri: str = OPERATOR_URI, **params) -> list[dict]:
    """Prepare run ``run_key`` on ``samples`` and queue one delegated ``compute_prefiqs`` per shard.

    ``params`` are :func:`operators.scoring.compute_prefiqs`'s (``patches_field``, ``detect``,
    ``backbone``, ``checkpoint``, ``batch_size``, ``overwrite``, ``resume``...). They are checked
    and the run is recorded here, so a bad argument fails now rather than in N workers. Shards
    with no samples are not queued.

    Returns one ``{"id", "shard", "num_samples"}`` per queued operation. Run them with
    ``fiftyone delegated launch`` (one per GPU or machine, all pointing at the same ``database_uri``).
    """
    from fiftyone.operators.delegated import DelegatedOperationService

    check_num_shards(num_shards)
    params = {k: v for k, v in params.items() if k not in ("delegate", "num_shards", "view_target")}
    prepare_compute_prefiqs(samples, run_key=run_key, **params)
    # Each shard continues the run just recorded; nothing may overwrite it again.
    shard_params = dict(params, run_key=run_key, overwrite=False, resume=True, delegate=True)
    svc = DelegatedOperationService()
    dataset = samples._dataset
    queued = []
    for i in range(num_shards):
        view = shard_view(samples, i, num_shards)
        n = len(view)
        if not n:
            continue
        request = dict(dataset_name=dataset.name, view=view._serialize(), params=shard_params)
        op = svc.queue_operation(operator=operator_uri, label=f"PreFIQs {run_key}: shard {i + 1}/{num_shards}",
                                 delegation_target=delegation_target, context=dict(request_params=request))
        queued.append(dict(id=str(op.id), shard=i, num_samples=n))
    return queued
