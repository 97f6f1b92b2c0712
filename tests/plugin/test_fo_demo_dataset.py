"""The ``make demo`` dataset: real photos, the real dlib ResNet-29, a real MongoDB, and the App served.

One build (about 30 s on two cores, the UMAP JIT included) is shared by the module; the rebuild test
builds again, and the App test serves that dataset and stops it with a real SIGINT.
"""
import importlib
import importlib.util
import os
import signal
import urllib.request
from pathlib import Path

import psutil
import pytest
from fiftyone import ViewField as F

ROOT = Path(__file__).resolve().parents[2]
MODULE = "fiftyone.plugins.orgs.prefiqs.prefiqs"  # the plugin package as FiftyOne loads it (see conftest)
NAME = "prefiqs-demo-test"
IDENTITIES = {"obama", "biden", "astronaut"} | {f"friends_t1_face{k}" for k in range(6)}
ORL_PEOPLE = 3  # the demo adds all 40; three keep the build short and still give genuine and impostor pairs


@pytest.fixture(scope="module")
def demo(plugin):
    return importlib.import_module(f"{MODULE}.operators.demo_dataset")


@pytest.fixture(scope="module")
def chips_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo_chips")


@pytest.fixture(scope="module")
def built(fo, demo, photos, chips_dir):
    """The demo dataset as ``NO_APP=1 make demo`` builds it (``photos`` only skips without assets)."""
    ds = demo.build_demo_dataset(NAME, chips_dir=chips_dir, orl_people=ORL_PEOPLE)
    yield ds
    if fo.dataset_exists(NAME):
        fo.delete_dataset(NAME)


def test_photos_have_faces_and_landmarks(built, demo):
    ds = built
    assert ds.persistent and ds.name == NAME
    photos = demo.photos_view(ds)
    assert len(photos) == len(demo.demo_photo_paths()) == 8
    assert set(photos.distinct("tags")) == {"photo"}
    for dets, kps in zip(*photos.values(["faces", "faces_landmarks"])):
        assert dets is not None and len(dets.detections) >= 1
        assert len(kps.keypoints) == len(dets.detections)
        assert all(len(k.points) == 5 for k in kps.keypoints)
    assert photos.count("faces.detections") == 14  # 2 + 1 + 6 + 1 + 1 + 1 + 1 + 1, as the engine demo finds


def test_chips_are_labelled_and_written(built, demo, chips_dir):
    chips = demo.chips_view(built)
    kinds = len(demo.DEGRADATIONS)
    levels = sum(len(sevs) for _, sevs in demo.DEGRADATIONS.values())
    clean = chips.match(F("degradation") == "clean")
    # one clean chip per person's face: 5 obama photos, biden, the astronaut (not her mission patch), 6 friends
    assert len(clean) == 13 and kinds >= 1
    assert len(chips) == 13 * (1 + levels)
    assert set(chips.distinct("identity.label")) == IDENTITIES
    assert len(clean.match(F("identity.label") == "obama")) == 5
    assert set(chips.distinct("degradation")) == {"clean"} | set(demo.DEGRADATIONS)
    assert set(clean.distinct("level")) == {0} and clean.distinct("severity") == []
    degraded = chips.match(F("degradation") != "clean")
    assert set(degraded.distinct("level")) == {1, 2} and degraded.count("severity") == len(degraded)
    assert chips.get_field("identity").document_type.__name__ == "Classification"
    paths = chips.values("filepath")
    assert all(Path(p).parent == chips_dir and p.endswith(".png") and os.path.exists(p) for p in paths)
    assert len(set(paths)) == len(paths) == len(list(chips_dir.glob("*.png")))


def test_scores_and_both_umap_maps(built, demo):
    ds = built
    photos, chips = demo.photos_view(ds), demo.chips_view(ds)
    assert {"prefiqs", "prefiqs_chips"} <= set(ds.list_runs())
    assert ds.get_run_info("prefiqs").config.input == "patches"
    assert ds.get_run_info("prefiqs_chips").config.input == "aligned"
    face_q = photos.values("faces.detections.prefiqs_quality", unwind=True)
    assert len(face_q) == 14 and all(0 < q <= 1 for q in face_q)
    assert chips.count("prefiqs_chips_quality") == len(chips) and chips.count("prefiqs_chips_error") == 0
    maps = set(ds.list_brain_runs(type="visualization"))
    assert maps == {f"{run}_{net}_umap" for run in ("prefiqs", "prefiqs_chips", "prefiqs_orl")
                    for net in ("dense", "pruned")}
    assert ds.load_brain_results("prefiqs_dense_umap").points.shape == (14, 2)
    assert ds.load_brain_results("prefiqs_chips_pruned_umap").points.shape == (len(chips), 2)

    # a clean chip is the face patch's own chip, saved losslessly: it scores as its face does
    by_photo = dict(zip(*photos.values(["filepath", "faces.detections.prefiqs_quality"])))
    clean = chips.match(F("degradation") == "clean")
    for src, k, q in zip(*clean.values(["source_filepath", "source_face", "prefiqs_chips_quality"])):
        assert q == pytest.approx(by_photo[src][k], abs=1e-5)


def test_summary_is_computed_from_the_data(built, demo):
    ds = built
    chips = demo.chips_view(ds)
    summary = demo.demo_summary(ds)
    assert summary["counts"]["photos"] == 8 and summary["counts"]["faces"] == 14
    assert summary["counts"]["chips"] == len(chips) and summary["counts"]["identities"] == 9
    assert list(summary["mean_quality"]) == ["clean"] + list(demo.DEGRADATIONS)
    for kind, mean in summary["mean_quality"].items():
        # an independent path: a database aggregation over the matching chips
        assert mean == pytest.approx(chips.match(F("degradation") == kind).mean("prefiqs_chips_quality"))
    blur2 = chips.match((F("degradation") == "blur") & (F("level") == 2))
    assert summary["mean_quality_by_level"]["blur"][2] == pytest.approx(blur2.mean("prefiqs_chips_quality"))
    worst = [r["quality"] for r in summary["worst"]]
    assert len(worst) == 10 and worst == sorted(worst)
    lowest = min(chips.min("prefiqs_chips_quality"), ds.min("faces.detections.prefiqs_quality"))
    assert worst[0] == pytest.approx(lowest)
    assert summary["config"]["backbone"] == "sface" and summary["config"]["achieved_sparsity"]
    text = demo.format_summary(summary)
    assert "worst 10 faces" in text and "darken" in text and f"{summary['mean_quality']['clean']:.4f}" in text

    # change the stored scores: the summary follows them
    view = chips.match(F("degradation") == "noise")
    saved = view.values("prefiqs_chips_quality")
    try:
        view.set_values("prefiqs_chips_quality", [0.01] * len(saved))
        again = demo.demo_summary(ds)
        assert again["mean_quality"]["noise"] == pytest.approx(0.01)
        assert again["worst"][0]["quality"] == pytest.approx(0.01) and "noise" in again["worst"][0]["name"]
    finally:
        view.set_values("prefiqs_chips_quality", saved)


def test_orl_photos_are_scored_and_evaluated(built, demo):
    ds = built
    orl = ds.match(F("kind") == "orl")
    assert len(orl) == ORL_PEOPLE * 10 and orl.distinct("identity.label") == ["s1", "s2", "s3"]
    assert "orl" in ds.list_saved_views() and len(ds.load_saved_view("orl")) == len(orl)
    # every ORL photo has a scored face or the reason it has none
    scored = orl.match(F("faces.detections").filter(F("prefiqs_orl_quality").exists()).length() > 0)
    assert len(scored) + orl.count("prefiqs_orl_error") == len(orl)
    ev = ds.get_run_info("orl_eval").config
    assert ev.quality_fields == ["prefiqs_orl", "sharpness", "random"] and ev.quality_run == "prefiqs_orl"
    # the photos' and chips' runs did not score the ORL faces, nor the ORL run theirs
    assert orl.count("faces.detections.prefiqs_quality") == 0
    assert demo.photos_view(ds).count("faces.detections.prefiqs_orl_quality") == 0


def test_landmarks_are_hidden_in_the_grid_by_default(built):
    active = built.app_config.active_fields
    assert not active.exclude and active.paths == ["faces", "identity"]
    assert built.has_field("faces_landmarks")  # hidden, not removed: the sidebar checkbox shows it


def test_rebuild_gives_the_same_dataset(built, demo, chips_dir):
    before = demo.demo_summary(built)
    paths = sorted(built.values("filepath"))
    stale = chips_dir / "someone_f0_blur9.png"  # a chip an older build wrote, not part of this one
    stale.write_bytes(b"")
    ds = demo.build_demo_dataset(NAME, chips_dir=chips_dir, orl_people=ORL_PEOPLE)
    assert len(ds) == len(paths) and sorted(ds.values("filepath")) == paths  # no duplicates
    assert not stale.exists() and len(list(chips_dir.glob("*.png"))) == len(demo.chips_view(ds))
    after = demo.demo_summary(ds)
    assert after["counts"] == before["counts"]
    # same photos, same pruning, same seeds: the same scores
    for kind, mean in before["mean_quality"].items():
        assert after["mean_quality"][kind] == pytest.approx(mean, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# the App
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("plugin_demo", ROOT / "tools" / "plugin_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _running(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_app_serves_http_and_ctrl_c_leaves_no_process(fo, built, script):
    ds = fo.load_dataset(NAME)  # the rebuild test replaced the fixture's dataset object
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    port = script.free_port()
    seen = {}

    def on_ready(app):
        seen["procs"] = app.procs + [c for p in app.procs for c in p.children(recursive=True)]
        seen["pgids"] = set(app.pgids)
        with urllib.request.urlopen(app.url, timeout=10) as r:
            seen["status"], seen["url"] = r.status, app.url
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal delivers to the demo

    assert script.serve(ds, port=port, on_ready=on_ready) == 0
    assert seen["status"] == 200 and seen["url"] == f"http://127.0.0.1:{port}/"
    assert seen["procs"] and seen["pgids"] and os.getpgid(0) not in seen["pgids"]
    assert _running(seen["procs"]) == []
    left = [p.pid for p in psutil.process_iter() if _pgid(p.pid) in seen["pgids"]]
    assert left == []
    assert {p.pid for p in me.children(recursive=True)} <= children_before
    assert script.port_is_free(port)


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
