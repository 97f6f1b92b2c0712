"""Issue 12 in a real browser (FiftyOne App + Debian Chromium): a user sets the Face Quality panel's
threshold as a reference percentile, tags below it, and gets the same faces as the SDK's
``tag_low_quality(..., percentile=p)``.

The run is the non-browser test's: sample-level, qualities spread over the shipped SFace table's
reference range, the table in the run's config as ``compute_prefiqs`` stores it (no model runs).
"""
import os
import re

import pytest

from tools.app_ui import open_dataset, open_face_quality_panel
from tools.fo_processes import CHROMIUM_ARGS, AppServer
from test_fo_app_browser import _db_uri, _fresh_dataset, _require_browser
from test_fo_panel_calibration import write_calibrated_run

N = 60
PERCENTILE = 30
WAIT_MS = 90_000  # for the App to show a panel update (seconds on a loaded 2-core machine)


@pytest.fixture(scope="module")
def ui(fo, api, photos, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    from prefiqs_core.calibration import shipped

    chromium = _require_browser()
    ds = _fresh_dataset(fo, f"prefiqs-panel-calibration-{os.getpid()}")
    name = ds.name
    ds.add_samples([fo.Sample(filepath=photos[i % len(photos)]) for i in range(N)])
    write_calibrated_run(ds, api, shipped("sface"), seed=11)
    out = tmp_path_factory.mktemp("panel_calibration_browser")
    server = AppServer(name, out / "app.log", env=dict(FIFTYONE_DATABASE_URI=_db_uri()), start_timeout=90)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            open_dataset(page, f"{server.url}/datasets/{name}")
            try:
                open_face_quality_panel(page)
            except Exception:
                page.screenshot(path=str(out / "panel_not_open.png"))
                raise
            yield dict(ds=ds, page=page, out=out)
            browser.close()
    finally:
        survivors = server.stop()
        ds.delete()
    assert not survivors, f"App processes left running: {[(p.pid, p.cmdline()) for p in survivors]}"


def test_threshold_by_percentile_tags_what_the_sdk_tags(ui, api):
    page, ds, out = ui["page"], ui["ds"], ui["out"]
    try:
        # the run's table is read: the histogram carries the expected-FNMR curve and the percentile axis
        page.get_by_text("expected FNMR ≥", exact=False).first.wait_for(timeout=WAIT_MS)
        # the text above the histogram can be drawn before Plotly has drawn the plot itself
        page.wait_for_function(
            "() => { const p = document.querySelector('.js-plotly-plot'); return p && Array.isArray(p.data); }",
            timeout=WAIT_MS)
        curve = page.evaluate("() => document.querySelector('.js-plotly-plot').data.map(t => t.name)")
        assert "expected FNMR" in curve
        page.get_by_text("Give the threshold as").locator("xpath=following::*[@role='combobox'][1]").click()
        page.get_by_role("option", name="reference percentile", exact=True).click()
        box = page.get_by_text("Reference percentile (0–100)", exact=False).first.locator("xpath=following::input[1]")
        box.wait_for(timeout=WAIT_MS)
        box.fill(str(PERCENTILE))
        box.press("Enter")
        said = page.get_by_text(f"below the {PERCENTILE}th reference percentile", exact=False).first
        said.wait_for(timeout=WAIT_MS)
        text = said.inner_text()
        count = int(re.match(r"(\d+) samples? \(", text).group(1))
        page.get_by_text("Tag below threshold", exact=True).click()
        page.get_by_text(f"Last tagging: {count} sample", exact=False).first.wait_for(timeout=WAIT_MS)
        page.screenshot(path=str(out / "panel_percentile_tagged.png"))
        page.locator(".js-plotly-plot").first.screenshot(path=str(out / "histogram_calibrated.png"))
    except Exception:
        page.screenshot(path=str(out / "panel_percentile_failed.png"))
        raise
    # the App's process rewrote the run's results (the tagging record): this process re-reads the dataset
    ds.reload()
    by_panel = sorted(ds.match_tags("low_quality").values("id"))
    info = api.tagging.tag_low_quality(ds, run_key="cal", percentile=PERCENTILE, tag="by_sdk", save_view=False)
    assert 0 < count < N and info["num_tagged"] == count == len(by_panel)
    assert sorted(ds.match_tags("by_sdk").values("id")) == by_panel
    print("screenshot:", out / "panel_percentile_tagged.png", "text:", text)
