"""Several workers: one run split into shards, executed by two ``fiftyone delegated launch`` processes
sharing this session's MongoDB, writes the same fields as one worker."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bson import ObjectId
import pytest
import fiftyone.operators as foo

URI = "@prefiqs/prefiqs/compute_prefiqs"
MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"
FIELDS = ["prefiqs_quality", "prefiqs_drift", "prefiqs_dense", "prefiqs_pruned"]


@pytest.fixture(scope="module")
def shards(plugin):
    import importlib

    return importlib.import_module(f"{MODULE}.operators.shards")


@pytest.fixture(scope="module")
def chips(real_chips, tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("worker-chips")
    paths = []
    for i in range(24):
        c = real_chips[i % len(real_chips)]
        paths.append(str(d / f"c{i:02d}.png"))
        Image.fromarray(np.roll(c[:, ::-1] if i % 2 else c, i % 5, axis=1)).save(paths[-1])
    return paths


def test_shards_are_disjoint_and_cover_the_view(make_dataset, chips, shards):
    ds = make_dataset(chips)
    view = ds.skip(3)
    parts = [set(shards.shard_view(view, i, 3).values("id")) for i in range(3)]
    assert sum(map(len, parts)) == len(view) and set().union(*parts) == set(view.values("id"))
    assert all(parts)  # 21 samples in thirds of [0, 1): none empty
    with pytest.raises(ValueError, match="num_shards"):
        shards.shard_view(view, 0, 0)


def test_two_delegated_workers_write_what_one_worker_writes(fo, plugin, shards, chips, tmp_path):
    import fiftyone.core.odm.database as fodb
    from fiftyone.operators.delegated import DelegatedOperationService

    ref = fo.Dataset(f"prefiqs-workers-ref-{os.getpid()}")
    ref.add_samples([fo.Sample(filepath=p) for p in chips])
    foo.get_operator(URI)(ref, aligned=True, backbone="dlib_resnet29", batch_size=4)

    ds = fo.Dataset(f"prefiqs-workers-{os.getpid()}", persistent=True)  # the workers load it by name
    ds.add_samples([fo.Sample(filepath=p) for p in chips])
    queued = shards.queue_compute_prefiqs_shards(ds, 2, aligned=True, backbone="dlib_resnet29", batch_size=4)
    assert len(queued) == 2 and sum(q["num_samples"] for q in queued) == len(chips)
    assert "prefiqs" in ds.list_runs()  # recorded once, before any worker starts

    host, port = fodb.get_db_client().address
    env = dict(os.environ, FIFTYONE_DATABASE_URI=f"mongodb://{host}:{port}")
    cli = Path(sys.executable).parent / "fiftyone"
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [subprocess.Popen([str(cli), "delegated", "launch"], env=env, cwd=tmp_path,
                                stdout=open(log, "w"), stderr=subprocess.STDOUT) for log in logs]
    svc = DelegatedOperationService()
    try:
        t0 = time.time()
        while True:
            states = [svc.get(ObjectId(q["id"])).run_state for q in queued]
            if all(s in ("completed", "failed") for s in states):
                break
            assert all(w.poll() is None for w in workers), "a worker died"
            assert time.time() - t0 < 300, f"workers too slow: {states}"
            time.sleep(0.5)
    finally:
        for w in workers:
            w.terminate()
            w.wait(timeout=30)
    assert states == ["completed", "completed"], [svc.get(ObjectId(q["id"])).result for q in queued]

    # each shard ran exactly once, on one worker
    text = [log.read_text() for log in logs]
    for q in queued:
        assert sum(t.count(f"Running operation {q['id']}") for t in text) == 1

    ds.reload()
    got = dict(zip(ds.values("filepath"), zip(*ds.values(FIELDS))))
    want = dict(zip(ref.values("filepath"), zip(*ref.values(FIELDS))))
    assert sorted(got) == sorted(want)
    for path in want:
        for a, b in zip(got[path], want[path]):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=1e-5)
    summary = ds.load_run_results("prefiqs").summary
    assert summary["num_samples"] == len(chips) and summary["num_scored"] == len(chips)
    assert summary["quality_mean"] == pytest.approx(ref.load_run_results("prefiqs").summary["quality_mean"],
                                                    abs=1e-6)
    for q in queued:
        svc.delete_operation(ObjectId(q["id"]))
    ds.delete()
    ref.delete()
