"""Playwright steps on the FiftyOne App shared by the browser test and the screenshot tool."""
from __future__ import annotations


def open_face_quality_panel(page, timeout_ms: int = 90_000):
    """Open the Face Quality panel from the "+" menu of the samples space and wait for its buttons.

    On a loaded machine the first click can land while the App is still laying out the grid and the
    menu closes without opening anything; one more try from the menu then opens it.
    """
    for attempt in (1, 2):
        page.locator("[data-cy=new-panel-btn]").first.click()
        page.get_by_text("Face Quality", exact=True).first.click()
        try:
            page.get_by_text("Show worst first", exact=True).wait_for(timeout=timeout_ms)
            return
        except Exception:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")


def fill_compute_form(page, run_key: str, proposed: str = "prefiqs_2", delay: int = 50):
    """Open ``compute_prefiqs`` from the operator browser (backtick) on a dataset that already has a
    run ``prefiqs``: the form proposes the free key ``proposed`` (no error shown); tick "Detect faces
    first" and rename the run to ``run_key``: a form ready to execute."""
    page.keyboard.press("`")
    page.keyboard.type("compute face quality")
    page.get_by_text("PreFIQs: compute face quality").first.click()
    # the form is dynamic (re-resolved on each change): wait for it to settle before typing.
    # The form's text input is found by its value (the panel's run picker is a hidden <select>
    # input); a handle, as the value it is found by changes while typing
    field = page.locator(f"input[type=string][value={proposed}]")
    field.wait_for()
    if page.get_by_text("exists: tick overwrite or resume").count():
        raise AssertionError("the compute form opened in an error state")
    page.get_by_text("Detect faces first", exact=True).click()
    page.get_by_text("Choose a patches field, aligned images, or detection").wait_for(state="detached")
    field = field.element_handle()
    field.click()
    field.press("Control+a")
    field.type(run_key, delay=delay)
    field.press("Tab")
    # typed text is the input's value property, not its attribute
    page.wait_for_function("k => Array.from(document.querySelectorAll('input')).some(i => i.value === k)",
                           arg=run_key)


def open_dataset(page, url: str):
    """Load the App on ``url`` (a dataset's page) and close the "Explore Enterprise" popover."""
    page.goto(url, wait_until="load")  # never "networkidle": the App streams
    try:
        page.get_by_text("Dismiss", exact=True).click(timeout=20_000)
    except Exception:  # no popover this time
        page.keyboard.press("Escape")


def edc_plot(page):
    """The panel's error-versus-discard plot (a plotly figure titled by ``panel_edc.edc_layout``)."""
    return page.locator(".js-plotly-plot", has_text="Error versus discard (EDC)")
