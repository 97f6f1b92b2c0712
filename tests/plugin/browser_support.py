"""What the browser tests share: Chromium and Playwright (or a loud skip), this process's
database, fresh persistent datasets. The one App server they all use is the ``app_server``
fixture of ``conftest.py``."""
import os

import pytest

from tools.fo_processes import find_chromium


def require_browser():
    """Chromium and Playwright, or a loud skip (a failure under CI=true)."""
    missing = []
    chromium = find_chromium()
    if chromium is None:
        missing.append("no Chromium executable (apt-get install chromium, or set PREFIQS_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed (pip install playwright; no `playwright install`)")
    if missing:
        msg = "*** APP BROWSER TEST NOT RUN: " + "; ".join(missing) + " ***"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium


def db_uri():
    """The MongoDB this test process uses, so that the App server reads the very same database
    (fiftyone's shared db service would otherwise attach it to whichever one it finds first)."""
    import fiftyone.core.odm.database as fodb

    host, port = fodb.get_db_client().address
    return f"mongodb://{host}:{port}"


def fresh_dataset(fo, name):
    """An empty persistent dataset ``name`` (another process, the App, opens it), replacing a
    leftover of an earlier, interrupted run."""
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return fo.Dataset(name, persistent=True)
