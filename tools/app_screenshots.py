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
    does, and writes ``panel.png``, ``panel_maps.png``, ``worst_first.png``, ``operator_form.png``;
5.  stops everything it started: the App's process groups, then mongod; removes the temp directory.

``--workdir DIR`` keeps the database and chips in DIR (re-runs then reuse the built dataset);
without it everything lives in a temp directory removed at exit.

Only the standard library is imported at module level: fiftyone reads its configuration when it
is first imported, so the environment is set up first.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from app_ui import fill_compute_form  # tools/ is this script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "@prefiqs/prefiqs"
DATASET = "prefiqs-demo"
CHIP_RUN = "prefiqs_chips"
VIEWPORT = {"width": 1600, "height": 1100}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def log(msg: str) -> None:
    print(f"[app_screenshots] {msg}", flush=True)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# a private MongoDB
# ------------------------------------------------------------------------------------------------


class PrivateMongo:
    """FiftyOne's own mongod binary, run on a loopback port over a directory of ours."""

    def __init__(self, dbpath: Path):
        spec = importlib.util.find_spec("fiftyone")  # locate the package without importing it
        if spec is None:
            raise SystemExit("fiftyone is not installed in this interpreter (make setup)")
        binary = Path(list(spec.submodule_search_locations)[0]) / "db" / "bin" / "mongod"
        if not binary.exists():
            raise SystemExit(f"FiftyOne's mongod is missing ({binary})")
        dbpath.mkdir(parents=True, exist_ok=True)
        self.dbpath = dbpath
        self.port = unused_port()
        self.logfile = dbpath.parent / "mongod.log"
        self.proc = subprocess.Popen(
            [str(binary), "--dbpath", str(dbpath), "--port", str(self.port), "--bind_ip", "127.0.0.1",
             "--logpath", str(self.logfile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.uri = f"mongodb://127.0.0.1:{self.port}"
        self._wait()

    def _wait(self, timeout: float = 60.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"mongod exited with status {self.proc.returncode}; log: {self.logfile}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"mongod did not accept connections within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def configure_env(work: Path, mongo: PrivateMongo) -> None:
    os.environ["FIFTYONE_DATABASE_URI"] = mongo.uri
    os.environ["FIFTYONE_DATABASE_DIR"] = str(mongo.dbpath)
    os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = str(work / "home")
    os.environ["FIFTYONE_PLUGINS_DIR"] = str(ROOT)  # the plugin of this checkout
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ.setdefault("PREFIQS_DATA", str(ROOT / "data"))
    if "fiftyone" in sys.modules:
        raise RuntimeError("fiftyone was imported before its database was configured")


# ------------------------------------------------------------------------------------------------
# the demo dataset
# ------------------------------------------------------------------------------------------------


def ensure_demo(chips_dir: Path, device: str | None):
    import fiftyone as fo
    import fiftyone.operators as foo

    if fo.dataset_exists(DATASET):
        ds = fo.load_dataset(DATASET)
        if CHIP_RUN in ds.list_runs():
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
# the App
# ------------------------------------------------------------------------------------------------


class App:
    """``fiftyone app launch --remote`` in a session of its own; every process it spawns is tracked."""

    def __init__(self, dataset: str, logfile: Path, start_timeout: float = 120.0):
        self.port = unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = open(logfile, "w")
        cli = Path(sys.executable).with_name("fiftyone")
        self.proc = subprocess.Popen(
            [str(cli), "app", "launch", dataset, "--remote", "--port", str(self.port), "--address", "127.0.0.1",
             "--wait", "-1"],
            stdout=self.logfile, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
        self.known = {}  # pid -> psutil.Process (create time remembered: safe against PID reuse)
        self._wait(start_timeout)

    def _track(self) -> None:
        import psutil

        found = []
        try:
            root = psutil.Process(self.proc.pid)
            found = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        # the server may be re-parented when its launcher exits: its --port argument identifies it
        for p in psutil.process_iter(["cmdline"]):
            args = p.info["cmdline"] or []
            if p.pid != os.getpid() and "--port" in args and str(self.port) in args:
                found.append(p)
        for p in found:
            self.known.setdefault(p.pid, p)

    def _wait(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            self._track()
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the App exited early; see {self.logfile.name}")
            try:
                if urllib.request.urlopen(self.url, timeout=2).status == 200:
                    self._track()
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the App did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> list:
        """Signal each process group of the App (never our own), escalate, return survivors."""
        import psutil

        self._track()
        groups = set()
        for p in self.known.values():
            try:
                groups.add(os.getpgid(p.pid))
            except (ProcessLookupError, PermissionError):
                pass
        groups.discard(os.getpgrp())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for g in groups:
                try:
                    os.killpg(g, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            _, alive = psutil.wait_procs(list(self.known.values()), timeout=10)
            if not alive:
                break
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.logfile.close()
        return [p for p in self.known.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# ------------------------------------------------------------------------------------------------
# the browser
# ------------------------------------------------------------------------------------------------


def find_chromium() -> str:
    for c in (os.environ.get("PREFIQS_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
              shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit("no Chromium found (apt-get install chromium, or set PREFIQS_CHROMIUM)")


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


def take_screenshots(app: App, chromium: str, out: Path, expected_points: int) -> list[Path]:
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
            page.goto(f"{app.url}/datasets/{DATASET}", wait_until="load")  # not "networkidle": the App streams
            try:
                page.get_by_text("Dismiss", exact=True).click(timeout=20_000)  # "Explore Enterprise" popover
            except Exception:
                page.keyboard.press("Escape")

            # the panel, from the "+" menu of the samples space
            page.locator("[data-cy=new-panel-btn]").first.click()
            page.get_by_text("Face Quality", exact=True).first.click()
            page.get_by_text("Show worst first", exact=True).wait_for()

            # the chips run (sample level, 169 chips, both maps): pick it if it is not already shown
            summary = page.get_by_text(f"{CHIP_RUN}:", exact=False)
            if not page.locator(f"input[value={CHIP_RUN}]").count():
                page.get_by_text("PreFIQs run").locator("xpath=following::*[@role='combobox'][1]").click()
                page.get_by_role("option", name=CHIP_RUN, exact=True).click()
            summary.first.wait_for()
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length >= {2 * expected_points}")
            page.get_by_text("Dense (full network)").wait_for()
            page.get_by_text("below").first.wait_for()
            settle(page)
            shot(page, "panel.png")

            # histogram, threshold, buttons and both maps at once: the histogram at the panel's top
            scroll_panel_to(page.locator(".js-plotly-plot").first)
            settle(page)
            shot(page, "panel_maps.png")

            # worst first: the grid sorted by quality, worst chips first
            with page.expect_response(lambda r: "graphql" in r.url
                                      and "paginateSamplesQuery" in (r.request.post_data or "")):
                page.get_by_text("Show worst first", exact=True).click()
            settle(page, 4000)  # let the thumbnails paint
            shot(page, "worst_first.png")

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
    temp = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="prefiqs-shots-")) if temp else Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    mongo = app = None
    status = 1
    previous = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        mongo = PrivateMongo(work / "db")
        log(f"private mongod on {mongo.uri} (dbpath {mongo.dbpath})")
        configure_env(work, mongo)
        ds = ensure_demo(work / "chips", args.device)
        from fiftyone import ViewField as F

        n_chips = len(ds.match(F("kind") == "chip"))
        app = App(DATASET, work / "app.log")
        log(f"App on {app.url} (log {work / 'app.log'})")
        take_screenshots(app, chromium, Path(args.out), n_chips)
        status = 0
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
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
