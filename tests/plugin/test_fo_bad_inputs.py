"""Bad input through the operator: a per-face or per-sample error record, the rest scored, nothing lost."""
import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import fiftyone.operators as foo
from fiftyone import ViewField as F

URI = "@prefiqs/prefiqs/compute_prefiqs"
ROOT = Path(__file__).resolve().parents[2]

# the odd images and their expected outcomes are shared with the engine tests
_spec = importlib.util.spec_from_file_location("prefiqs_odd_images", ROOT / "tests" / "test_bad_inputs.py")
odd_images = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(odd_images)
EXPECTED = odd_images.EXPECTED


@pytest.fixture(scope="module")
def odd_ds(fo, plugin, tmp_path_factory):
    """One dataset holding every odd file, scored once at sample level with detection."""
    paths = odd_images.make_odd_images(tmp_path_factory.mktemp("fo-odd"))
    ds = fo.Dataset(f"prefiqs-odd-{os.getpid()}")
    ds.add_samples([fo.Sample(filepath=paths[name], name=name) for name in EXPECTED])
    result = foo.get_operator(URI)(ds, detect=True, batch_size=4)
    yield ds, result
    ds.delete()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_operator_records_each_odd_file(odd_ds, name):
    ds, _ = odd_ds
    s = ds.match(F("name") == name).first()
    if EXPECTED[name] == "face":
        assert s.prefiqs_error is None and 0 < s.prefiqs_quality <= 1 and s.prefiqs_dense.shape == (128,)
    else:
        assert s.prefiqs_quality is None and s.prefiqs_dense is None and EXPECTED[name] in s.prefiqs_error


def test_odd_files_do_not_stop_the_run(odd_ds):
    ds, summary = odd_ds
    faces = sum(v == "face" for v in EXPECTED.values())
    assert summary["num_samples"] == len(EXPECTED)
    assert summary["num_scored"] == faces and summary["num_errors"] == len(EXPECTED) - faces


@pytest.fixture
def patch_ds(make_dataset, photos, fo):
    """obama2.jpg with a real face box plus degenerate ones, NaN landmarks, and a sample with no faces."""
    ds = make_dataset([photos[2], photos[2], photos[2]])
    foo.get_operator("@prefiqs/prefiqs/detect_faces")(ds)
    first, second, third = list(ds)
    real = first.faces.detections[0]
    inst = fo.Instance()
    first["boxes"] = fo.Detections(detections=[
        fo.Detection(label="face", bounding_box=real.bounding_box, instance=inst),
        fo.Detection(label="zero", bounding_box=[0.4, 0.4, 0.0, 0.0]),
        fo.Detection(label="negative", bounding_box=[0.5, 0.5, -0.2, -0.1]),
        fo.Detection(label="outside", bounding_box=[1.5, 1.2, 0.3, 0.3]),
        fo.Detection(label="nan", bounding_box=[float("nan"), 0.1, 0.2, 0.2]),
    ])
    first["marks"] = fo.Keypoints(keypoints=[fo.Keypoint(points=[[float("nan"), float("nan")]] * 5, instance=inst)])
    first.save()
    second["boxes"] = fo.Detections(detections=[])  # empty Detections
    second.save()
    third["boxes"] = None  # field unset on this sample
    third.save()
    return ds


def test_degenerate_boxes_get_per_face_errors_and_nan_landmarks_fall_back_to_the_box(patch_ds):
    op = foo.get_operator(URI)
    op(patch_ds, run_key="bad", patches_field="boxes", keypoints_field="marks")
    q, err = patch_ds.values(["boxes.detections.bad_quality", "boxes.detections.bad_error"])
    assert 0 < q[0][0] <= 1 and err[0][0] is None  # the NaN landmarks fell back to box alignment
    assert q[0][1:] == [None] * 4
    assert all(e.startswith("degenerate box") for e in err[0][1:])
    assert "outside the image" in err[0][3] and "non-finite" in err[0][4]
    # a box-only face scores like the same box with no landmarks at all
    op(patch_ds, run_key="boxonly", patches_field="boxes")
    assert patch_ds.values("boxes.detections.boxonly_quality")[0][0] == pytest.approx(q[0][0], abs=1e-6)
    sample_err = patch_ds.values("bad_error")
    assert sample_err[0] is None and sample_err[1] == "no faces in boxes" and sample_err[2] == "no faces in boxes"
    summary = patch_ds.load_run_results("bad").summary
    assert summary["num_scored"] == 1 and summary["num_errors"] == 4 + 2 and summary["num_samples"] == 3


@pytest.mark.parametrize("params,msg", [
    (dict(patches_field="nope"), "no patches field 'nope'"),
    (dict(patches_field="filepath"), "is not a Detections field"),
    (dict(patches_field="faces", keypoints_field="nope"), "no keypoints field 'nope'"),
    (dict(patches_field="faces", keypoints_field="faces"), "is not a Keypoints field"),
    # the form itself refuses these (FiftyOne: "Validation error. Path: <param> ...")
    (dict(detect=True, store_embeddings=["dense", "bogus"]), "store_embeddings"),
    (dict(detect=True, backbone="no_such_net"), "backbone"),
    (dict(detect=True, pruning="magic"), "pruning"),
    (dict(detect=True, batch_size=0), "batch"),
    (dict(detect=True, device="cuda:7"), "cuda"),
    (dict(detect=True, calibration="/no/such/table.json"), "Path: calibration.*not found"),
    (dict(detect=True, detector_reference="/no/such/ref.json"), "Path: detector_reference.*not found"),
])
def test_unknown_fields_and_options_are_refused_before_anything_is_written(make_dataset, photos, params, msg):
    ds = make_dataset(photos[2:3])
    foo.get_operator("@prefiqs/prefiqs/detect_faces")(ds)
    if params.get("device", "").startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")  # the refusal is for machines without one
    fields = set(ds.get_field_schema())
    with pytest.raises(Exception, match=msg):
        foo.get_operator(URI)(ds, **params)
    assert "prefiqs" not in ds.list_runs() and set(ds.get_field_schema()) == fields


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.3, float("nan")])
def test_bad_sparsity_is_refused(make_dataset, photos, sparsity):
    ds = make_dataset(photos[2:3])
    with pytest.raises(Exception, match="(?i)sparsity"):
        foo.get_operator(URI)(ds, detect=True, sparsity=sparsity)
    assert "prefiqs" not in ds.list_runs()


def _bad_checkpoint(tmp_path, kind):
    p = tmp_path / "w.pth"
    if kind == "pickle":
        torch.save({"conv1.weight": torch.zeros(2), "net": torch.nn.Identity()}, p)
    elif kind == "missing_keys":
        torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, p)
    elif kind == "not_a_checkpoint":
        p.write_text("not weights")
    elif kind == "missing":
        p = tmp_path / "absent.pth"
    elif kind == "device":
        p = Path("/dev/zero")
    elif kind == "folder":
        p = tmp_path
    return str(p)


@pytest.mark.parametrize("kind,msg", [
    ("pickle", "refused"), ("missing_keys", "missing keys"), ("not_a_checkpoint", "not a torch checkpoint"),
    ("missing", "not found"), ("device", "not a regular file"), ("folder", "not a regular file"),
])
def test_bad_checkpoints_through_the_operator(make_dataset, photos, tmp_path, kind, msg):
    ds = make_dataset(photos[2:3])
    with pytest.raises(Exception, match=msg):
        foo.get_operator(URI)(ds, detect=True, backbone="iresnet18", checkpoint=_bad_checkpoint(tmp_path, kind))
    assert "prefiqs" not in ds.list_runs()


def test_empty_view_says_so(make_dataset, photos, api):
    ds = make_dataset(photos[2:3])
    empty = ds.match(F("filepath") == "nowhere")
    with pytest.raises(Exception, match="has no samples"):
        foo.get_operator(URI)(empty, detect=True)
    with pytest.raises(ValueError, match="has no samples"):
        api.scoring.compute_prefiqs(empty, detect=True)
    assert "prefiqs" not in ds.list_runs()


def test_summary_values_are_finite(odd_ds):
    ds, summary = odd_ds
    assert all(math.isfinite(v) for v in ds.values("prefiqs_quality") if v is not None)
    assert np.isfinite(summary["quality_mean"])
