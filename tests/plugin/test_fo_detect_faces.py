"""detect_faces: boxes and 5 landmarks linked by fo.Instance, a skeleton, and skipping done samples."""
import fiftyone.operators as foo

URI = "@prefiqs/prefiqs/detect_faces"


def test_detect_faces_writes_linked_boxes_and_landmarks(make_dataset, photos, odd_images):
    ds = make_dataset(photos + [odd_images["noface"], odd_images["corrupt"]])
    foo.execute_operator(URI, ctx=dict(dataset=ds, params=dict(label_field="faces")))

    counts = [len(d.detections) if d is not None else None for d in ds.values("faces")]
    assert counts[:4] == [2, 6, 1, 1]  # astronaut, friends, obama2, obama_partial_face
    assert counts[4] == 0  # real photo without a face: processed, empty
    assert counts[5] is None  # unreadable: left unset, retried next time
    for dets, kps in zip(ds.values("faces")[:4], ds.values("faces_landmarks")[:4]):
        assert [d.instance.id for d in dets.detections] == [k.instance.id for k in kps.keypoints]
        for d, k in zip(dets.detections, kps.keypoints):
            assert k.convention == "dlib5" and len(k.points) == 5
            x, y, w, h = d.bounding_box
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and d.confidence is not None
    assert ds.skeletons["faces_landmarks"].labels[4] == "nose_base"
    assert ds.get_field("faces_landmarks").info["landmark_convention"] == "dlib5"


def test_detect_faces_skips_samples_already_done_unless_overwrite(make_dataset, photos):
    ds = make_dataset(photos[2:])
    op = foo.get_operator(URI)
    op(ds, confidence_thresh=0.0)
    first = ds.values("faces.detections.id")
    op(ds)
    assert ds.values("faces.detections.id") == first  # untouched
    op(ds, overwrite=True, confidence_thresh=5.0)  # nothing scores above 5
    assert [len(d.detections) for d in ds.values("faces")] == [0, 0]
