"""In headless Chromium: the Face Quality panel, opened on the demo dataset, draws the ORL
evaluation's EDC curves at once (no evaluation to run first), and the grid shows face boxes
without the landmark dots (the demo hides ``faces_landmarks`` by default).

The dataset is built by the demo's own ``build_demo_dataset`` (dlib, the fast backbone), with three of its photos and three
ORL people to keep it short; the App server reads this test's private database. Without Chromium
or Playwright the test fails under ``CI=true`` and otherwise skips, loudly.
"""
import importlib
import os

import pytest

from tools.app_ui import edc_plot, open_dataset, open_face_quality_panel
from tools.fo_processes import CHROMIUM_ARGS, app_on_this_database, find_chromium

MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"
ORL_PEOPLE = 3


def _chromium():
    chromium = find_chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        msg = "*** DEMO EDC BROWSER TEST NOT RUN: needs Chromium (apt-get install chromium) and playwright ***"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium


@pytest.fixture(scope="module")
def demo_app(fo, plugin, photos, tmp_path_factory):
    chromium = _chromium()
    demo = importlib.import_module(f"{MODULE}.operators.demo_dataset")
    name = f"prefiqs-demo-edc-{os.getpid()}"
    out = tmp_path_factory.mktemp("demo_edc")
    # the fast backbone: the page is what is tested here; test_fo_demo_dataset.py builds with the default
    ds = demo.build_demo_dataset(name, chips_dir=out / "chips", photos=photos[1:], orl_people=ORL_PEOPLE,
                                 backbone="dlib_resnet29")
    try:
        with app_on_this_database(name, out / "app.log", start_timeout=90) as server:
            yield dict(ds=ds, server=server, chromium=chromium, out=out)
    finally:
        ds.delete()


def sidebar_checkbox(page, field):
    """The checkbox of ``field``'s row in the App's sidebar (the row holds the name and one checkbox)."""
    return page.locator(f"[data-cy=sidebar-field-{field}]").locator(
        "xpath=ancestor::*[.//input[@type='checkbox']][1]//input[@type='checkbox']").first


def test_panel_shows_the_orl_edc_on_first_open(demo_app):
    from playwright.sync_api import sync_playwright

    ds, server, out = demo_app["ds"], demo_app["server"], demo_app["out"]
    methods = ds.get_run_info("orl_eval").config.quality_fields
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=demo_app["chromium"], args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            page.set_default_timeout(60_000)
            open_dataset(page, f"{server.url}/datasets/{ds.name}")
            page.get_by_text(f"{len(ds)} samples").wait_for()
            page.wait_for_timeout(2000)  # most thumbnails painted: the screenshot is for a person to look at
            page.screenshot(path=str(out / "grid.png"))
            # what the grid draws: boxes, not the landmarks (unticked in the sidebar)
            assert sidebar_checkbox(page, "faces").is_checked()
            assert not sidebar_checkbox(page, "faces_landmarks").is_checked()

            open_face_quality_panel(page)
            plot = edc_plot(page)
            plot.wait_for()
            page.wait_for_function(
                "[...document.querySelectorAll('.js-plotly-plot')].some(p => p.textContent.includes("
                "'Error versus discard') && p.querySelectorAll('.scatterlayer .trace').length === 3)")
            names = plot.evaluate("gd => gd.data.map(t => t.name)")  # the traces plotly draws
            assert page.get_by_text("No evaluation run for this run yet").count() == 0
            plot.scroll_into_view_if_needed()
            page.screenshot(path=str(out / "panel_edc.png"))
        finally:
            browser.close()
    assert methods == ["prefiqs_orl", "sharpness", "random"]
    assert [n.split(" (")[0] for n in names] == [f"orl_eval: {m}" for m in methods]
    assert (out / "panel_edc.png").stat().st_size > 10_000
