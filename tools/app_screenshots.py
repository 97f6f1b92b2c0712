"""Screenshots of the Face Quality panel on the demo dataset ``prefiqs-demo``, for the README.

    .venv/bin/python tools/app_screenshots.py [--out docs/img] [--workdir DIR] [--device cpu]

What it does, start to finish:

1.  starts FiftyOne's bundled ``mongod`` on a free loopback port with a throw-away ``--dbpath`` and
    points ``FIFTYONE_DATABASE_URI`` at it *before* fiftyone is imported, so the user's own
    ``~/.fiftyone`` database is never read or written;
2.  builds ``prefiqs-demo`` there (``operators/demo_dataset.py``'s ``build_demo_dataset``, as
    ``tools/plugin_demo.py`` does with ``NO_APP=1``), chips written under the work directory;
3.  serves the App (``fiftyone app launch --remote``) on a free 127.0.0.1 port;
4.  drives Debian's Chromium through Playwright at 1600x1100, as ``tests/plugin/test_fo_app_browser.py``
    does, and writes ``grid.png``, ``panel_edc.png`` (the ORL run's EDC curves), ``panel.png``,
    ``panel_maps.png``, ``panel_hover.png`` (a map point hovered, the same face ringed in the other
    map), ``panel_pinned.png`` (a face pinned by a
    click: ringed in both maps, with its thumbnail), ``panel_drift.png`` (drift segments
    of the faces below the threshold), ``worst_first.png``, ``panel_combined.png`` (the photos' run
    ranked by the combined value, threshold "expected FNMR ≤ 5 %"), ``operator_form.png``;
5.  stops everything it started: the App's process groups, then mongod; removes the temp directory.

``--workdir DIR`` keeps the database and chips in DIR (re-runs then reuse the built dataset);
without it everything lives in a temp directory removed at exit.

Only the standard library is imported at module level: fiftyone reads its configuration when it
is first imported, so the environment is set up first.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

# tools/ is this script's folder, first on sys.path
from app_ui import edc_plot, fill_compute_form, open_dataset, open_face_quality_panel
from fo_processes import CHROMIUM_ARGS, AppServer, PrivateMongo, find_chromium, fiftyone_env

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "@prefiqs/prefiqs"
DATASET = "prefiqs-demo"
ORL_RUN = "prefiqs_orl"
VIEWPORT = {"width": 1600, "height": 1100}


def log(msg: str) -> None:
    print(f"[app_screenshots] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# the demo dataset
# ------------------------------------------------------------------------------------------------


def ensure_demo(chips_dir: Path, device: str | None):
    import fiftyone as fo
    import fiftyone.operators as foo

    if fo.dataset_exists(DATASET):
        ds = fo.load_dataset(DATASET)
        if {ORL_RUN, "orl_eval"} <= set(ds.list_runs()):  # built by this version of the demo
            log(f"dataset {DATASET!r} exists ({len(ds)} samples): reused")
            return ds
    op = foo.get_operator(f"{PLUGIN}/compute_prefiqs")  # loads the plugin package
    demo = importlib.import_module(type(op).__module__.rsplit(".", 1)[0] + ".demo_dataset")
    t0 = time.time()
    ds = demo.build_demo_dataset(DATASET, chips_dir=chips_dir, device=device,
                                 log=lambda s: log(f"[{time.time() - t0:5.1f} s] {s}"))
    log(f"built {DATASET!r} in {time.time() - t0:.1f} s: {len(ds)} samples, runs {ds.list_runs()}")
    return ds


# ------------------------------------------------------------------------------------------------
# the browser
# ------------------------------------------------------------------------------------------------


def settle(page, ms: int = 1500) -> None:
    page.wait_for_timeout(ms)


def scroll_panel_to(locator) -> None:
    """Scroll the panel's own scroll container so that ``locator``'s element is at its top."""
    locator.evaluate(
        """el => {
            let box = el.parentElement;
            while (box && !(box.scrollHeight > box.clientHeight + 4 &&
                             ['auto', 'scroll'].includes(getComputedStyle(box).overflowY))) {
                box = box.parentElement;
            }
            if (box) {
                const top = el.getBoundingClientRect().top - box.getBoundingClientRect().top;
                box.scrollTop += top - 8;
            } else {
                el.scrollIntoView({block: 'start'});
            }
        }""")


def pick_hover_field(page, name: str) -> None:
    """Choose the sample field that the hover (and a pinned face) also shows."""
    page.get_by_text("Hover also shows").locator("xpath=following::*[@role='combobox'][1]").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function(
        "n => document.querySelectorAll('.js-plotly-plot')[1].data[0].hovertemplate.includes(n + ':')", arg=name)


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the panel's dropdown labelled ``label``."""
    page.get_by_text(label).first.locator("xpath=following::*[@role='combobox'][1]").click()
    page.get_by_role("option", name=option, exact=True).click()


def click_isolated_worst(page, index: int, gap: float = 14) -> str:
    """Click the worst face of map ``index`` that has no other point within ``gap`` px (plotly picks
    the nearest point, so a crowded spot could pin a neighbour); its id."""
    page.locator(".js-plotly-plot").nth(index).scroll_into_view_if_needed()
    face, x, y = page.evaluate(
        """([i, gap]) => {
            const p = document.querySelectorAll('.js-plotly-plot')[i];
            const t = p.data.find(t => t.mode === 'markers');
            const L = p._fullLayout, r = p.querySelector('.nsewdrag').getBoundingClientRect();
            const pos = t.x.map((x, k) => [r.left + L.xaxis.l2p(x), r.top + L.yaxis.l2p(t.y[k])]);
            for (let k = pos.length - 1; k >= 0; k--) {  // drawn worst last
                if (pos.every(([a, b], j) => j === k || (a - pos[k][0]) ** 2 + (b - pos[k][1]) ** 2 >= gap * gap))
                    return [t.ids[k], ...pos[k]];
            }
            const k = pos.length - 1; return [t.ids[k], ...pos[k]];
        }""", [index, gap])
    page.mouse.move(x - 3, y - 3)
    page.mouse.move(x, y)
    page.mouse.click(x, y)
    return face


def take_screenshots(app: AppServer, chromium: str, out: Path, expected_points: int) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def shot(page, name):
        path = out / name
        page.screenshot(path=str(path))
        written.append(path)
        log(f"wrote {path}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            open_dataset(page, f"{app.url}/datasets/{DATASET}")
            # the grid as a user first sees it: face boxes and identities, the landmarks unticked
            settle(page, 6000)  # let the thumbnails paint
            shot(page, "grid.png")

            # the panel, from the "+" menu of the samples space: it opens on the newest run, the
            # ORL faces', whose evaluation draws the EDC curves
            open_face_quality_panel(page)
            edc = edc_plot(page)
            edc.wait_for()
            scroll_panel_to(edc)
            settle(page)
            shot(page, "panel_edc.png")

            # the same run from the top: histogram, threshold and both maps of the ORL faces
            scroll_panel_to(page.get_by_text("PreFIQs run").first)
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length >= {2 * expected_points}")
            page.get_by_text("Dense (full network)").wait_for()
            page.get_by_text("faces below").first.wait_for()
            settle(page)
            shot(page, "panel.png")

            # histogram, threshold, buttons and both maps at once: the histogram at the panel's top
            scroll_panel_to(page.locator(".js-plotly-plot").first)
            settle(page)
            shot(page, "panel_maps.png")

            # hover on the worst face of the dense map (drawn last, so on top): file, quality, drift
            dense = page.locator(".js-plotly-plot").nth(1)
            dense.scroll_into_view_if_needed()
            dense.locator(".scatterlayer .point").last.hover(force=True)
            page.locator(".hoverlayer .hovertext").first.wait_for()
            # the same face ringed in the pruned map (js/linked_hover.js)
            page.locator(".js-plotly-plot").nth(2).locator(".prefiqs-linked-ring").wait_for()
            settle(page, 800)
            shot(page, "panel_hover.png")

            # a click pins a face: ringed in both maps, its thumbnail, file, quality, drift and the
            # chosen field (identity) under the maps. The worst face that stands apart is clicked
            page.mouse.move(5, 5)  # the hover label away
            pick_hover_field(page, "identity")
            click_isolated_worst(page, 1)
            page.get_by_text("Pinned face", exact=False).wait_for()
            page.locator("img[src^='data:image/jpeg']").wait_for()
            page.get_by_text("identity:", exact=False).first.wait_for()
            scroll_panel_to(page.locator(".js-plotly-plot").nth(1))
            settle(page)
            shot(page, "panel_pinned.png")
            page.get_by_text("Clear pin", exact=True).click()
            page.get_by_text("Pinned face", exact=False).wait_for(state="detached")

            # the drift of a small selection: the faces below the threshold, dense → pruned
            page.get_by_text("Show below threshold", exact=True).click()
            page.get_by_text("in this view", exact=False).first.wait_for()
            page.get_by_text("Draw drift of the selection", exact=True).click()
            page.wait_for_function("Array.from(document.querySelectorAll('.js-plotly-plot')).slice(1, 3)"
                                   ".every(p => p.data.some(t => t.mode === 'lines' && t.x.length > 0))")
            scroll_panel_to(page.locator(".js-plotly-plot").nth(1))
            settle(page)
            shot(page, "panel_drift.png")
            page.get_by_text("Hide drift", exact=True).click()
            page.get_by_text("Reset view", exact=True).click()
            page.get_by_text("in the dataset", exact=False).first.wait_for()

            # worst first: the ORL faces as patches, sorted by quality, worst first
            with page.expect_response(lambda r: "graphql" in r.url
                                      and "paginateSamplesQuery" in (r.request.post_data or "")):
                page.get_by_text("Show worst first", exact=True).click()
            page.get_by_text("SortBy", exact=True).first.wait_for(state="attached")  # the view bar has the new view
            settle(page, 6000)  # let the thumbnails paint
            shot(page, "worst_first.png")

            # the photos' run ranked by the combined value, the threshold as its expected FNMR
            page.get_by_text("Reset view", exact=True).click()
            settle(page, 2000)
            pick(page, "PreFIQs run", "prefiqs")
            page.get_by_text("prefiqs: patch-level", exact=False).wait_for()
            pick(page, "Rank faces by", "combined: PreFIQs and the detector's score (0-100)")
            page.get_by_text("Its expected FNMR comes from", exact=False).first.wait_for()
            pick(page, "Give the threshold as", "expected FNMR ≤ x %")
            box = page.get_by_text("Expected FNMR ≤ (%, at FMR 1e-3)", exact=False).first.locator(
                "xpath=following::input[1]")
            box.fill("5")
            box.press("Enter")
            page.get_by_text("with expected FNMR > 5 %", exact=False).first.wait_for()
            scroll_panel_to(page.locator(".js-plotly-plot").first)
            settle(page)
            shot(page, "panel_combined.png")

            # the compute_prefiqs form from the operator browser (backtick), on the whole dataset
            page.get_by_text("Reset view", exact=True).click()
            settle(page, 2000)
            fill_compute_form(page, "prefiqs_v2", delay=30)  # a new run key, faces detected first
            page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
            settle(page, 1500)
            shot(page, "operator_form.png")
            page.keyboard.press("Escape")
        finally:
            browser.close()
    return written


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="where the PNGs go (default docs/img)")
    ap.add_argument("--workdir", help="keep the private database and chips here (default: a temp dir, removed)")
    ap.add_argument("--device", help="cpu, cuda... for building the demo (default: auto)")
    args = ap.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found (apt-get install chromium, or set PREFIQS_CHROMIUM)")
    temp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="prefiqs-shots-")) if temp else Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    mongo = app = None
    status = 1
    previous = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        mongo = PrivateMongo(work / "db")
        log(f"private mongod on {mongo.uri} (dbpath {mongo.dbpath})")
        fiftyone_env(mongo.uri, mongo.dbpath, work / "home", ROOT)
        os.environ.setdefault("PREFIQS_DATA", str(ROOT / "data"))
        ds = ensure_demo(work / "chips", args.device)

        # the panel opens on the newest run, the ORL faces' (patch level, with its EDC)
        n_faces = ds.count(f"faces.detections.{ORL_RUN}_quality")
        app = AppServer(DATASET, work / "app.log")
        log(f"App on {app.url} (log {work / 'app.log'})")
        take_screenshots(app, chromium, Path(args.out), n_faces)
        status = 0
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except RuntimeError as e:  # mongod or the App would not start
        log(f"error: {e}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if app is not None:
                left = app.stop()
                if left:
                    log(f"App processes still running: {[(p.pid, p.cmdline()) for p in left]}")
                    status = status or 1
                else:
                    log("App stopped")
            if "fiftyone" in sys.modules:
                import fiftyone.core.odm.database as fodb

                try:
                    fodb.get_db_conn().client.close()
                except Exception:
                    pass
            if mongo is not None:
                mongo.stop()
                log("mongod stopped")
        finally:
            if temp:
                shutil.rmtree(work, ignore_errors=True)
                log(f"removed {work}")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    return status


if __name__ == "__main__":
    sys.exit(main())
