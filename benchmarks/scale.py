#!/usr/bin/env python
"""Scale: PreFIQs over many faces streams in bounded memory, writes in bulk, and says how fast.

Synthetic faces are the real demo chips with jitter (mirror, ±3 px shift, ±10 % brightness, as in
speed.py), made one batch at a time so that the input itself never grows with the run.

    python benchmarks/scale.py --engine-only --faces 20000     # engine streaming alone (no FiftyOne)
    python benchmarks/scale.py --plugin --faces 20000 --umap   # a FiftyOne dataset of N samples

``--engine-only`` streams chips through ``pipeline.score_images`` into a CSV. ``--plugin`` builds a
dataset of N samples whose files are a small pool of chip images (``--files``, reused to keep the
disk small), runs ``compute_prefiqs(aligned=True)`` (one bulk write per field per batch) and, with
``--umap``, the joint UMAP (PCA to 50 dimensions first, UMAP in its low-memory mode). Resident
memory (RSS) of this process is sampled at 10 %, 50 % and 100 % of the faces (with
``--faces 100000``: at 10k, 50k and 100k); it must stay flat. Figures are printed as a markdown table.
The default, 5,000 faces, fits a 2-core CPU (dlib ResNet-29 scores ~12-25 faces/s there).
"""
from __future__ import annotations

import argparse
import atexit
import csv
import os
import shutil
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.fo_processes import private_fiftyone  # noqa: E402


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2 ** 20


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def jitter(chip: np.ndarray, rng) -> np.ndarray:
    if rng.random() < 0.5:
        chip = chip[:, ::-1]
    chip = np.roll(chip, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
    return np.clip(chip * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def marks(n: int) -> list[int]:
    return sorted({max(1, n // 10), max(1, n // 2), n})


class Recorder:
    """Time, faces/s and memory at each mark."""

    def __init__(self, n: int):
        self.todo = marks(n)
        self.rows = []
        self.t0 = time.perf_counter()

    def update(self, done: int):
        while self.todo and done >= self.todo[0]:
            dt = time.perf_counter() - self.t0
            self.rows.append((self.todo.pop(0), dt, done / dt, rss_mb(), peak_mb()))


def table(title: str, rows) -> str:
    out = [f"\n**{title}**\n", "| faces | elapsed (s) | faces/s | RSS (MiB) | peak RSS (MiB) |",
           "|---:|---:|---:|---:|---:|"]
    out += [f"| {n:,} | {dt:.1f} | {rate:.1f} | {rss:.0f} | {peak:.0f} |" for n, dt, rate, rss, peak in rows]
    return "\n".join(out)


def real_chips(backbone):
    from prefiqs_core.demo import collect_demo_chips

    chips, _, _ = collect_demo_chips(backbone.preprocess)
    return np.stack(chips)


def engine_only(args) -> str:
    from prefiqs_core.backbones import load_backbone
    from prefiqs_core.pipeline import ImageFaces, score_images
    from prefiqs_core.scoring import PreFIQs

    backbone = load_backbone(args.backbone)
    scorer = PreFIQs(backbone, device=args.device)
    base = real_chips(backbone)
    rng = np.random.default_rng(0)

    def images():  # a generator: chips exist only while their batch is pending
        for i in range(args.faces):
            chip = jitter(base[i % len(base)], rng)
            yield ImageFaces(f"synthetic/{i:07d}", chip[None], [None], [None], (chip.shape[1], chip.shape[0]))

    rec = Recorder(args.faces)
    n = 0
    with tempfile.TemporaryDirectory() as d, open(Path(d) / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        for row in score_images(scorer, images(), args.batch):
            w.writerow([row.path, f"{row.drift:.6f}", f"{row.quality:.6f}"])
            n += 1
            rec.update(n)
    return table(f"engine only: {args.faces:,} faces, {backbone.name}, batch {args.batch}, "
                 f"{torch_threads()} torch threads", rec.rows)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def chip_pool(args, tmp):
    """``args.files`` PNG files of jittered real chips in ``tmp`` (shared by the samples), and the rng."""
    from PIL import Image
    from prefiqs_core.backbones import load_backbone

    base = real_chips(load_backbone(args.backbone))
    rng = np.random.default_rng(0)
    pool = []
    for i in range(args.files):
        pool.append(os.path.join(tmp, f"chip_{i:05d}.png"))
        Image.fromarray(jitter(base[i % len(base)], rng)).save(pool[-1])
    return pool, rng


def plugin(args) -> str:
    tmp = tempfile.mkdtemp(prefix="prefiqs-scale-")
    atexit.register(shutil.rmtree, tmp, True)  # the chip pool; runs after the database has stopped
    private_fiftyone(Path(tmp) / "fo", ROOT)  # before fiftyone is imported: it reads its config then
    import importlib

    import fiftyone as fo
    import fiftyone.operators as foo

    foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")  # loads the plugin package
    pkg = "fiftyone.plugins.orgs.prefiqs.prefiqs.operators"
    scoring = importlib.import_module(f"{pkg}.scoring")
    visualization = importlib.import_module(f"{pkg}.visualization")
    pool, rng = chip_pool(args, tmp)

    ds = fo.Dataset(f"prefiqs-scale-{os.getpid()}")
    t = time.perf_counter()
    for start in range(0, args.faces, 10000):
        ds.add_samples([fo.Sample(filepath=pool[i % len(pool)]) for i in range(start, min(args.faces, start + 10000))],
                       progress=False)
    t_add = time.perf_counter() - t
    rec = Recorder(args.faces)
    res = scoring.compute_prefiqs(ds, aligned=True, batch_size=args.batch, device=args.device,
                                  progress=lambda frac, label: rec.update(round(frac * args.faces)))
    assert res["num_scored"] == args.faces, res
    out = [table(f"plugin: compute_prefiqs on a dataset of {args.faces:,} samples ({args.files} chip files "
                 f"reused; dataset built in {t_add:.0f} s), batch {args.batch}", rec.rows)]
    if args.umap:
        t = time.perf_counter()
        info = visualization.compute_prefiqs_visualization(ds, seed=51)
        dt = time.perf_counter() - t
        out.append(f"\njoint UMAP of {2 * info['num_points']:,} embeddings (PCA {info['pca_dims']} first: "
                   f"{info['pca']}): {dt:.0f} s, RSS {rss_mb():.0f} MiB, peak {peak_mb():.0f} MiB")
    ds.delete()
    return "\n".join(out)


def panel(args) -> str:
    """The Face Quality panel on a dataset of N samples: the server's side of each event, timed.

    The samples are files of the chip pool; two sample-level runs get synthetic scores (written
    through the plugin's run records) and "manual" brain visualizations of clustered points, so
    no model runs: what is measured is the panel's database queries, map restriction and traces.
    Each event is what the App sends (``ExecutionContext`` with the panel's ``__method__`` and the
    state the previous event left), timed end to end including the messages it builds for the App.
    """
    tmp = tempfile.mkdtemp(prefix="prefiqs-scale-")
    atexit.register(shutil.rmtree, tmp, True)
    private_fiftyone(Path(tmp) / "fo", ROOT)
    import importlib
    import json

    import fiftyone as fo
    import fiftyone.brain as fob
    import fiftyone.operators as foo
    from bson import json_util
    from fiftyone.operators.executor import ExecutionContext, Executor

    foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")
    runs = importlib.import_module("fiftyone.plugins.orgs.prefiqs.prefiqs.operators.runs")
    pool, rng = chip_pool(args, tmp)
    n = args.faces
    t = time.perf_counter()
    ds = fo.Dataset(f"prefiqs-scale-panel-{os.getpid()}")
    for start in range(0, n, 10000):
        ds.add_samples([fo.Sample(filepath=pool[i % len(pool)]) for i in range(start, min(n, start + 10000))],
                       progress=False)
    ids = ds.values("id")
    errors = n // 100  # 1 % unscored, as a real run has a few
    for key, (lo, hi) in (("syn_a", (0.70, 0.85)), ("syn_b", (0.59, 0.72))):
        q = [None] * errors + rng.uniform(lo, hi, n - errors).round(4).tolist()
        d = [None if v is None else round(1.0 - v, 4) for v in q]
        ds.set_values(f"{key}_quality", q, progress=False)
        ds.set_values(f"{key}_drift", d, progress=False)
        ds.set_values(f"{key}_error", ["synthetic error"] * errors + [None] * (n - errors), progress=False)
        runs.record_run(ds, key, dict(backbone=args.backbone, sparsity=[0.3], patches_field=None))
        runs.update_results(ds, key, summary=runs.summary_stats(q, d, errors))
        centers = rng.normal(0, 8, (50, 2))  # 50 identities
        pts = centers[np.arange(n - errors) % 50] + rng.normal(0, 0.8, (n - errors, 2))
        for which, shift in (("dense", 0.0), ("pruned", 1.0)):
            fob.compute_visualization(ds, method="manual", brain_key=f"{key}_{which}_umap",
                                      points=dict(zip(ids[errors:], pts + shift)))
    t_build = time.perf_counter() - t

    uri = "@prefiqs/prefiqs/prefiqs_panel"
    state = {}

    def event(method, view=None, state_patch=None, **params):
        nonlocal state
        state = dict(state, **(state_patch or {}))
        request = dict(dataset_name=ds.name, params=dict(panel_id="bench", __method__=method, state=state,
                                                         panel_state=state, **params))
        if view is not None:
            request["view"] = json.loads(json_util.dumps(view._serialize()))
        ctx = ExecutionContext(request_params=request, executor=Executor())
        t0 = time.perf_counter()
        foo.get_operator(uri).execute(ctx)
        dt = time.perf_counter() - t0
        size = len(json.dumps([r.to_json() for r in ctx.executor._requests], default=str))
        state = dict(ctx.panel.state._data)
        return dt, size

    rows = []

    def timed(label, method, reps=3, **kw):
        best = min((event(method, **kw) for _ in range(reps)), key=lambda r: r[0])
        rows.append((label, *best))
        if os.environ.get("PREFIQS_BENCH_DEBUG"):
            print(label, {k: state.get(k) for k in ("run_key", "shown_run", "below", "below_at", "pinned")},
                  file=sys.stderr)

    timed("open (on_load), syn_a", "on_load", reps=1, state_patch=dict(run_key="syn_a"))
    timed("open again (warm)", "on_load")
    for v in (0.72, 0.75, 0.78):
        timed(f"threshold move to {v}", "on_change_threshold", reps=1, value=v)
    timed("run switch syn_a → syn_b", "on_change_run", reps=1, value="syn_b")
    timed("run switch syn_b → syn_a", "on_change_run", reps=1, value="syn_a")
    face = ids[-1]
    timed("pin a face (click)", "on_map_click", reps=1, id=face)
    timed("unpin (click again)", "on_map_click", reps=1, id=face)
    below = ds.match(fo.ViewField("syn_a_quality") < 0.71)  # MongoDB: null < 0.71 holds,
    below = below.exists("syn_a_quality")  # so the unscored samples are left out here
    timed(f"view narrowed to {len(below):,} samples", "on_change_view", reps=1, view=below)
    out = [f"\n**panel (server side): {n:,} samples, 2 sample-level runs with maps; dataset built in "
           f"{t_build:.0f} s**\n", "| event | time (s) | sent to the App (MB) |", "|---|---:|---:|"]
    out += [f"| {label} | {dt:.2f} | {size / 1e6:.1f} |" for label, dt, size in rows]
    if args.browser:
        ds.persistent = True  # the App server, another process, opens it
        try:
            seen = panel_in_browser(ds, Path(tmp))
        finally:
            ds.delete()
        out += [f"\n**panel in the App (Chromium, 1600x1000): {n:,} samples, until the page shows the "
                f"result**\n", "| event | time (s) |", "|---|---:|"]
        out += [f"| {label} | {dt} |" for label, dt in seen]
    else:
        ds.delete()
    return "\n".join(out)


def panel_in_browser(ds, tmp: Path) -> list[tuple[str, str]]:
    """The panel in the real App and Chromium on ``ds`` (the ``--panel`` dataset): open it, move
    the threshold (typed), switch runs and back, each timed until the page shows the result (the
    count text, the maps' new points); then how many events an idle panel sends in 10 s."""
    import fiftyone.core.odm.database as fodb
    from playwright.sync_api import sync_playwright

    from tools.app_ui import open_dataset, open_face_quality_panel
    from tools.fo_processes import CHROMIUM_ARGS, AppServer, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("--browser needs Chromium (apt-get install chromium) and the playwright package")
    host, port = fodb.get_db_client().address
    server = AppServer(ds.name, tmp / "app.log", env=dict(FIFTYONE_DATABASE_URI=f"mongodb://{host}:{port}"),
                       start_timeout=180)
    calls, rows = [], []
    shot = ROOT / "out" / "panel_browser_timeout.png"
    shot.parent.mkdir(exist_ok=True)

    debug, mark = os.environ.get("PREFIQS_BENCH_DEBUG"), [time.time()]

    def record(request):
        if request.method == "POST" and "/operators/execute" in request.url and "__method__" in (
                request.post_data or ""):
            calls.append(time.time())
        if debug:  # the page's requests in time, to see what a step waits for
            body = request.post_data or ""
            what = re.search(r'"__method__": ?"(\w+)"|(query|mutation) (\w+)', body) if request.method == "POST" else None
            name = (what.group(1) or what.group(3)) if what else ""
            print(f"{time.time() - mark[0]:8.2f} {request.method} {request.url.split('/', 3)[-1][:40]} {name} "
                  f"({len(body) / 1e3:.0f} kB)", file=sys.stderr)

    def dense_map(page):
        """A short signature of the dense map's points (the first ids and colours), or None."""
        return page.evaluate("""() => {
            const p = Array.from(document.querySelectorAll('.js-plotly-plot'))[1];
            const t = p && p.data && p.data.find(t => t.mode === 'markers');
            return t ? JSON.stringify([t.ids.length, t.ids.slice(0, 5), t.marker.color.slice(0, 5)]) : null;
        }""")

    def until(page, what, check, limit_s=300):
        t0 = time.perf_counter()
        while not check():
            if time.perf_counter() - t0 > limit_s:
                rows.append((what, f"> {limit_s} (the page then: {shot})"))
                page.screenshot(path=str(shot))
                return
            page.wait_for_timeout(100)
        rows.append((what, f"{time.perf_counter() - t0:.1f}"))

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(300_000)
            page.on("request", record)
            open_dataset(page, f"{server.url}/datasets/{ds.name}")
            t0 = time.perf_counter()
            open_face_quality_panel(page, timeout_ms=300_000)
            until(page, "open the panel: maps drawn", lambda: dense_map(page) is not None)
            rows[-1] = (rows[-1][0], f"{time.perf_counter() - t0:.1f}")
            # the panel opens on the newest run; the thresholds typed lie inside that run's range
            shown = next(k for k in ("syn_b", "syn_a") if page.get_by_text(f"{k}: sample-level", exact=False).count())
            other = "syn_a" if shown == "syn_b" else "syn_b"
            box = page.get_by_text("Type a threshold").locator("xpath=following::input[1]")
            q = np.array([x for x in ds.values(f"{shown}_quality") if x is not None])
            for v in np.round(np.quantile(q, [0.3, 0.1]), 2):
                box.fill(f"{v}")
                box.press("Enter")
                said = f"{int((q < v).sum())} samples below {v:.4f}"
                until(page, f"type the threshold {v} ({shown})",
                      lambda: page.get_by_text(said, exact=False).count() > 0)
            for key in (other, shown):
                mark[0] = time.time()
                if debug:
                    print(f"switch to {key}", file=sys.stderr)
                before = dense_map(page)
                t0 = time.perf_counter()
                page.get_by_text("PreFIQs run").locator("xpath=following::*[@role='combobox'][1]").click()
                page.get_by_role("option", name=key, exact=True).click()
                until(page, f"switch to run {key}: maps redrawn",
                      lambda: page.get_by_text(f"{key}: sample-level", exact=False).count() > 0
                      and dense_map(page) not in (None, before))
                rows[-1] = (rows[-1][0], f"{time.perf_counter() - t0:.1f}")
            page.wait_for_timeout(5000)
            n0 = len(calls)
            page.wait_for_timeout(10_000)
            rows.append(("events sent by the idle panel in 10 s", str(len(calls) - n0)))
            browser.close()
    finally:
        server.stop()
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--engine-only", action="store_true", help="the engine's streaming alone (default)")
    mode.add_argument("--plugin", action="store_true", help="the FiftyOne path on a dataset of --faces samples")
    mode.add_argument("--panel", action="store_true",
                      help="the Face Quality panel's events on --faces samples with synthetic scores (no model)")
    ap.add_argument("--faces", type=int, default=5_000,
                    help="faces to score (default sized for a 2-core CPU; 100000 gives the 10k/50k/100k marks)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--files", type=int, default=256, help="--plugin: distinct chip files shared by the samples")
    ap.add_argument("--umap", action="store_true", help="--plugin: also time the joint UMAP")
    ap.add_argument("--browser", action="store_true",
                    help="--panel: also time the panel in the App, in Chromium (needs chromium and playwright)")
    ap.add_argument("--backbone", default="dlib_resnet29")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    print(f"start: RSS {rss_mb():.0f} MiB; {os.cpu_count()} CPUs", file=sys.stderr)
    print(panel(args) if args.panel else plugin(args) if args.plugin else engine_only(args))


if __name__ == "__main__":
    main()
