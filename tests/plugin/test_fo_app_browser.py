"""End to end in a real browser: the FiftyOne App with the Face Quality panel, in headless Chromium.

The test starts the App (``fiftyone app launch --remote``) on a free localhost port over a small
dataset of real photos already scored (patch-level run + its UMAP maps), drives Debian's Chromium
through Playwright and checks what a user sees:

1.  the panel opens from the "+" new-panel menu and draws the histogram and both scatters
2.  "Show worst first" puts the worst-scored face first in the grid (read from the grid's own
    ``paginateSamples`` response, i.e. the order the grid renders)
3.  ``compute_prefiqs`` runs from the operator browser (backtick key) and its new field appears
    in the sidebar

Screenshots go to a tmp dir (panel.png, worst_first.png, operator_form.png); the README's own,
on the demo dataset, come from ``tools/app_screenshots.py``, so a test run leaves the checkout clean. Every process the test started is stopped: the App's server runs in
its own process groups, so they are killed by PGID and checked gone.

Without Chromium (or Playwright) the test fails when ``CI=true`` and otherwise skips, loudly.
"""
import os
import re

import pytest

import fiftyone.operators as foo

from tools.app_ui import fill_compute_form
from tools.fo_processes import CHROMIUM_ARGS, AppServer, find_chromium

P = "@prefiqs/prefiqs/"
APP_START_S = 90
COMPUTE_S = 240


def _require_browser():
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


def _fresh_dataset(fo, name):
    """An empty persistent dataset ``name`` (another process, the App, opens it), replacing a
    leftover of an earlier, interrupted run."""
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return fo.Dataset(name, persistent=True)


def _db_uri():
    """The MongoDB this test process uses, so that the App server reads the very same database
    (fiftyone's shared db service would otherwise attach it to whichever one it finds first)."""
    import fiftyone.core.odm.database as fodb

    host, port = fodb.get_db_client().address
    return f"mongodb://{host}:{port}"


@pytest.fixture(scope="module")
def app(fo, photos, tmp_path_factory):
    chromium = _require_browser()
    ds = _fresh_dataset(fo, f"prefiqs-browser-{os.getpid()}")
    name = ds.name
    ds.add_samples([fo.Sample(filepath=p) for p in photos])
    # the fast backbone here: the form below runs the default one
    foo.get_operator(P + "compute_prefiqs")(ds, patches_field="faces", detect=True, backbone="dlib_resnet29")
    foo.get_operator(P + "compute_prefiqs_visualization")(ds, run_key="prefiqs", seed=3)
    out = tmp_path_factory.mktemp("app_screenshots")
    server = AppServer(name, out / "app.log", env=dict(FIFTYONE_DATABASE_URI=_db_uri()), start_timeout=APP_START_S)
    try:
        yield dict(ds=ds, server=server, chromium=chromium, out=out)
    finally:
        survivors = server.stop()
        ds.delete()
    assert not survivors, f"App processes left running: {[(p.pid, p.cmdline()) for p in survivors]}"


def _shot(page, out, name):
    path = out / name
    page.screenshot(path=str(path))
    return path


def _is_grid_query(response, needle):
    body = response.request.post_data or ""
    return "graphql" in response.url and "paginateSamplesQuery" in body and needle in body


def test_panel_worst_first_and_operator_in_chromium(app):
    from playwright.sync_api import sync_playwright

    ds, server, out = app["ds"], app["server"], app["out"]
    # the run wrote combined values (faces found by the built-in detector), so the panel ranks by them
    ids, q = ds.values(["faces.detections.id", "faces.detections.prefiqs_combined"], unwind=True)
    assert None not in q
    worst_id = min(zip(ids, q), key=lambda t: t[1])[0]
    errors = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=app["chromium"], args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server.url}/datasets/{ds.name}", wait_until="load")  # never "networkidle": SSE
            dismiss = page.get_by_text("Dismiss", exact=True)  # the "Explore Enterprise" popover
            try:
                dismiss.click(timeout=20_000)
            except Exception:
                page.keyboard.press("Escape")

            # 1. the panel, from the "+" menu of the samples space
            page.locator("[data-cy=new-panel-btn]").first.click()
            page.get_by_text("Face Quality", exact=True).first.click()
            page.get_by_text("Show worst first", exact=True).wait_for()
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length >= 20")
            assert page.locator(".js-plotly-plot .barlayer .point").count() == 20  # the histogram's bins
            assert page.locator(".js-plotly-plot .scatterlayer .point").count() == 20  # 10 faces × 2 maps
            page.get_by_text("Dense (full network)").wait_for()
            page.get_by_text(re.compile(r"\d+ faces? below")).wait_for()  # the live count
            _shot(page, out, "panel.png")

            # 2. worst first: the grid's first item is the worst face by combined (a patch's id is its
            # face's id)
            with page.expect_response(lambda r: _is_grid_query(r, "ToPatches")) as grid:
                page.get_by_text("Show worst first", exact=True).click()
            edges = grid.value.json()["data"]["samples"]["edges"]
            assert edges[0]["node"]["id"] == worst_id
            assert len(edges) == 10
            page.get_by_text("10 patches").wait_for()
            page.wait_for_timeout(1500)  # let the thumbnails paint
            _shot(page, out, "worst_first.png")

            # 3. compute_prefiqs from the operator browser, on the whole dataset again
            page.get_by_text("Reset view", exact=True).click()
            page.get_by_text("4 samples").wait_for()
            fill_compute_form(page, "fresh")
            _shot(page, out, "operator_form.png")
            page.get_by_role("button", name="Execute").click()
            page.locator("[data-cy=sidebar-field-fresh_quality]").wait_for(timeout=COMPUTE_S * 1000)
        finally:
            browser.close()

    ds.reload()
    assert "fresh" in ds.list_runs() and ds.count("fresh_quality") == 4
    assert not [e for e in errors if "prefiqs" in e.lower()], errors
    for name in ("panel.png", "worst_first.png", "operator_form.png"):
        assert (out / name).stat().st_size > 10_000
