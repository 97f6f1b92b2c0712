"""UMAP maps, tagging and deletion on one patch-level and one sample-level run (UMAP JITs once, ~10 s)."""
import numpy as np
import pytest
import fiftyone.operators as foo

P = "@prefiqs/prefiqs/"


@pytest.fixture(scope="module")
def scored(fo, photos, odd_images):
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=p) for p in photos + [odd_images["corrupt"]]])
    foo.get_operator(P + "compute_prefiqs")(ds, patches_field="faces", detect=True)
    foo.get_operator(P + "compute_prefiqs")(ds, run_key="whole", detect=True)
    yield ds
    ds.delete()


def test_one_umap_two_brain_runs_patch_and_sample_level(scored):
    ds = scored
    # patch level, delegated: queued, then run by a worker, with progress recorded
    from fiftyone.operators.delegated import DelegatedOperationService

    res = foo.get_operator(P + "compute_prefiqs_visualization")(ds, run_key="prefiqs", seed=3, delegate=True)
    assert res.delegated
    svc = DelegatedOperationService()
    svc.execute_queued_operations(dataset_name=ds.name)
    op = svc.list_operations(dataset_name=ds.name, operator=P + "compute_prefiqs_visualization")[0]
    assert op.run_state == "completed", op.status

    label_ids = ds.values("faces.detections.id", unwind=True)
    for key in ("prefiqs_dense_umap", "prefiqs_pruned_umap"):
        assert key in ds.list_brain_runs(type="visualization")
        results = ds.load_brain_results(key)
        assert results.points.shape == (10, 2)
        assert sorted(results.label_ids) == sorted(label_ids)
        assert ds.get_brain_info(key).config.patches_field == "faces"
    dense, pruned = (ds.load_brain_results(k).points for k in ("prefiqs_dense_umap", "prefiqs_pruned_umap"))
    assert not np.allclose(dense, pruned)
    assert ds.load_run_results("prefiqs").visualizations["num_points"] == 10

    # sample level, immediate, through the operator; the corrupt image has no embedding: no point
    foo.execute_operator(P + "compute_prefiqs_visualization",
                         ctx=dict(dataset=ds, params=dict(run_key="whole", seed=3))).raise_exceptions()
    results = ds.load_brain_results("whole_pruned_umap")
    assert results.points.shape == (4, 2) and results.label_ids is None
    with pytest.raises(Exception, match="exist"):
        foo.get_operator(P + "compute_prefiqs_visualization")(ds, run_key="whole")


def test_joint_umap_with_pca_prereduction(api):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(40, 128)).astype(np.float32)
    a, b, used_pca = api.visualization.joint_umap(dense, dense + 0.01, seed=1, pca_dims=10, pca_min_points=10)
    assert used_pca and a.shape == b.shape == (40, 2)


def test_tag_low_quality_by_percent_and_threshold(scored):
    ds = scored
    tag = foo.get_operator(P + "tag_low_quality")
    info = tag(ds, run_key="prefiqs", worst_percent=30)
    assert info["num_tagged"] == 3 and info["label_tags"]
    worst = ds.load_saved_view("prefiqs_worst")
    q = worst.values("faces.prefiqs_quality")
    assert len(q) == 3 and q == sorted(q)
    assert max(q) == pytest.approx(info["cutoff"])
    assert max(q) <= min(v for v in ds.values("faces.detections.prefiqs_quality", unwind=True) if v not in q)

    info = tag(ds, run_key="whole", threshold=1.0, tag="whole_low")
    assert info["num_tagged"] == 4 and not info["label_tags"]  # the corrupt image has no score
    assert len(ds.match_tags("whole_low")) == 4
    info = tag(ds, run_key="whole", threshold=0.0, tag="whole_low")
    assert info["num_tagged"] == 0 and len(ds.match_tags("whole_low")) == 0  # retagging replaces


def test_delete_run_removes_everything(scored):
    ds = scored
    if "whole_pruned_umap" not in ds.list_brain_runs():
        pytest.skip("needs the visualization test")
    info = foo.get_operator(P + "delete_prefiqs_run")(ds, run_key="whole")
    assert "whole" not in ds.list_runs()
    assert not [f for f in ds.get_field_schema() if f.startswith("whole_")]
    assert not [k for k in ds.list_brain_runs() if k.startswith("whole_")]
    assert not ds.has_saved_view("whole_worst") and info["removed_tag"] == "whole_low"
    assert "prefiqs" in ds.list_runs() and ds.has_field("faces.detections.prefiqs_quality")

    foo.get_operator(P + "delete_prefiqs_run")(ds, run_key="prefiqs")
    schema = ds.get_field_schema(flat=True)
    assert not [f for f in schema if "prefiqs_" in f]
    assert ds.count_label_tags() == {}
    assert ds.has_field("faces")  # the detections themselves are the user's, not the run's
