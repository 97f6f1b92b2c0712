"""Playwright steps on the FiftyOne App shared by the browser test and the screenshot tool."""
from __future__ import annotations


def fill_compute_form(page, run_key: str, delay: int = 50):
    """Open ``compute_prefiqs`` from the operator browser (backtick) on a dataset that already has a
    run ``prefiqs``, tick "Detect faces first" and rename the run to ``run_key``: a form ready to execute."""
    page.keyboard.press("`")
    page.keyboard.type("compute face quality")
    page.get_by_text("PreFIQs: compute face quality").first.click()
    # the form is dynamic (re-resolved on each change): wait for it to settle before typing
    taken = page.get_by_text("Run 'prefiqs' exists: tick overwrite or resume")
    taken.wait_for()
    page.get_by_text("Detect faces first", exact=True).click()
    page.get_by_text("Choose a patches field, aligned images, or detection").wait_for(state="detached")
    # the form's text input (not the panel's run picker, a hidden <select> input with that value);
    # a handle, as the value it is found by changes while typing
    field = page.locator("input[type=string][value=prefiqs]").element_handle()
    field.click()
    field.press("Control+a")
    field.type(run_key, delay=delay)
    field.press("Tab")
    taken.wait_for(state="detached")


def open_dataset(page, url: str):
    """Load the App on ``url`` (a dataset's page) and close the "Explore Enterprise" popover."""
    page.goto(url, wait_until="load")  # never "networkidle": the App streams
    try:
        page.get_by_text("Dismiss", exact=True).click(timeout=20_000)
    except Exception:  # no popover this time
        page.keyboard.press("Escape")


def open_face_quality_panel(page):
    """Open the Face Quality panel from the "+" menu of the samples space; wait for its buttons."""
    page.locator("[data-cy=new-panel-btn]").first.click()
    page.get_by_text("Face Quality", exact=True).first.click()
    page.get_by_text("Show worst first", exact=True).wait_for()


def edc_plot(page):
    """The panel's error-versus-discard plot (a plotly figure titled by ``panel_edc.edc_layout``)."""
    return page.locator(".js-plotly-plot", has_text="Error versus discard (EDC)")
