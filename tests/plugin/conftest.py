"""Plugin tests: a real MongoDB (FiftyOne's bundled mongod) of their own, per test session.

FiftyOne's database service attaches to any FiftyOne mongod the user already runs, whatever
FIFTYONE_DATABASE_DIR says, so two sessions (or a session and `make demo`) would share one
database. Each session therefore starts its own mongod on a free loopback port and points
FIFTYONE_DATABASE_URI at it. FiftyOne reads its configuration when it is first imported, so this
happens here, at import time, before any test module imports fiftyone.
"""
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tools.fo_processes import PrivateMongo, fiftyone_env  # noqa: E402

_TMP = Path(tempfile.mkdtemp(prefix="prefiqs-fo-"))
_MONGO = PrivateMongo(_TMP / "db", _TMP / "mongod.log")


@atexit.register
def _stop_mongod():
    _MONGO.stop()
    shutil.rmtree(_TMP, ignore_errors=True)


fiftyone_env(_MONGO.uri, _MONGO.dbpath, _TMP / "home", ROOT)

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test leaves a screenshot of its page (``page`` in its module's ``ui``
    fixture) in $PREFIQS_FAILSHOTS (default: the fixture's tmp dir), named after the test."""
    outcome = yield
    rep = outcome.get_result()
    ui = item.funcargs.get("ui") if rep.when == "call" and rep.failed else None
    if isinstance(ui, dict) and ui.get("page") is not None:
        where = Path(os.environ.get("PREFIQS_FAILSHOTS") or ui.get("out") or _TMP)
        where.mkdir(parents=True, exist_ok=True)
        try:
            ui["page"].screenshot(path=str(where / f"{item.name}.png"))
        except Exception:  # a closed page: the failure itself says more
            pass


def pytest_configure(config):
    # FiftyOne's own dependencies warn on import (strawberry, psutil, mongoengine); not ours to fix
    for rule in ("ignore::DeprecationWarning:strawberry.*", "ignore::DeprecationWarning:fiftyone.*",
                 "ignore::DeprecationWarning:mongoengine.*", "ignore:.*connections\\(\\) is deprecated"):
        config.addinivalue_line("filterwarnings", rule)
