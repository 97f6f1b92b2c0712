"""load_ijb: an IJB-C release (a tiny one written from the real photos in insightface's layout) as a
FiftyOne dataset, scored by compute_prefiqs with the release's own points, exactly as the engine
scores the same faces."""
import sys
from pathlib import Path

import numpy as np
import pytest
import fiftyone.operators as foo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the release writer
from ijb_release import loose_crops, write_release  # noqa: E402

URI = "@prefiqs/prefiqs/load_ijb"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("IJB_release")
    write_release(root / "IJBC", loose_crops())
    (root / "IJBC" / "loose_crop" / "5.jpg").write_bytes(b"\xff\xd8 truncated")
    return root


def test_import_then_score_with_the_releases_points(fo, plugin, release):
    from prefiqs_core.backbones import load_backbone
    from prefiqs_core.evaluation.ijb import read_ijb
    from prefiqs_core.pipeline import ChipDataset, iter_images
    from prefiqs_core.scoring import PreFIQs

    proto = read_ijb(release)
    ds = foo.get_operator(URI)(release, dataset_name="ijb-test", overwrite=True)
    try:
        assert len(ds) == len(proto) == 27
        info = ds.info["ijb"]
        assert info["target"] == "IJBC" and info["templates"] == 19 and info["pairs"] == 47 and info["unreadable"] == 1
        assert ds.values("template_id") == proto.template_ids.tolist()
        assert ds.values("media_id") == proto.media_ids.tolist()
        bad = ds.match(fo.ViewField("ijb_error").exists())
        assert bad.values("filepath") == [str(release / "IJBC" / "loose_crop" / "5.jpg")]
        assert "unreadable image" in bad.first()["ijb_error"] and bad.first()["face"] is None
        # the keypoints are the release's points, relative to each image
        from PIL import Image

        first = ds.first()
        with Image.open(first.filepath) as im:
            w, h = im.size
        kp = first["face_points"].keypoints[0]
        assert kp.convention == "arcface5" and kp.instance.id == first["face"].detections[0].instance.id
        np.testing.assert_allclose(np.asarray(kp.points) * [w, h], proto.landmarks[0], atol=1e-9)

        foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")(ds, patches_field="face", keypoints_field="face_points")
        got = ds.values("face.detections.prefiqs_quality", unwind=True)
        assert len(got) == 26  # the unreadable crop has no face

        # the engine on the same files and points
        bb = load_backbone()  # the plugin's default
        chips = [im.chips[0] for im in iter_images(ChipDataset(proto.paths, bb.preprocess, "landmarks",
                                                               landmarks=proto.landmarks), num_workers=0)
                 if im.error is None]
        want = PreFIQs(bb).score(np.stack(chips)).quality
        np.testing.assert_allclose(got, want, atol=1e-5)
    finally:
        ds.delete()


def test_subset_overwrite_and_the_operator_form(fo, plugin, release):
    from fiftyone.operators.executor import ExecutionContext

    op = foo.get_operator(URI)
    ds = op(release / "IJBC", dataset_name="ijb-sub", max_templates=10, seed=2)
    try:
        assert ds.info["ijb"]["templates"] <= 10 and len(set(ds.values("template_id"))) <= 10
        assert ds.info["ijb"]["pairs_in_protocol"] == 47 and ds.info["ijb"]["pairs"] < 47
        paths = ds.values("filepath")
        with pytest.raises(ValueError, match="dataset 'ijb-sub' exists"):
            op(release, dataset_name="ijb-sub")
        again = op(release, dataset_name="ijb-sub", max_templates=10, seed=2, overwrite=True)
        assert again.values("filepath") == paths  # the same seeded sample
    finally:
        if fo.dataset_exists("ijb-sub"):
            fo.delete_dataset("ijb-sub")
    ctx = ExecutionContext(request_params=dict(params={}))
    props = op.resolve_input(ctx).type.properties
    assert {"root", "dataset_name", "max_templates", "max_pairs", "persistent", "overwrite"} <= set(props)
    with pytest.raises(ValueError, match="no IJB release under"):
        op(release / "IJBC" / "meta")


def test_operator_runs_delegated(fo, plugin, release):
    """From the App the import is a (delegated) operation: it runs through FiftyOne's executor."""
    name = "ijb-delegated"
    res = foo.execute_operator(URI, ctx=dict(params=dict(root=str(release), dataset_name=name, max_templates=6,
                                                         persistent=False)), request_delegation=True)
    from fiftyone.operators.delegated import DelegatedOperationService

    svc = DelegatedOperationService()
    svc.execute_queued_operations(operator=URI)
    op = svc.get(res.result["id"]) if isinstance(res.result, dict) and "id" in res.result else \
        [o for o in svc.list_operations(operator=URI)][-1]
    try:
        assert op.run_state == "completed", (op.result.error if op.result else None)
        assert fo.dataset_exists(name) and fo.load_dataset(name).info["ijb"]["templates"] <= 6
        assert op.result.result["dataset"] == name and op.result.result["faces"] == len(fo.load_dataset(name))
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
