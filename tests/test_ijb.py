"""IJB-B/C reader, IJB template aggregation and the IJB section of benchmarks/evaluate.py, on a tiny
release written here in insightface's layout from the real photos: loose JPEG crops around each face
found by YuNet, its 5 points in crop pixels, templates made of several media."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijb_release import loose_crops, write_release
from prefiqs_core.alignment import warp_to_template
from prefiqs_core.evaluation.ijb import IJBFormatError, find_release, read_ijb
from prefiqs_core.evaluation.pairs import aggregate_templates, build_templates, template_pair_similarities
from prefiqs_core.pipeline import ChipDataset, iter_images



@pytest.fixture(scope="module")
def crops():
    c = loose_crops()
    assert len(c) == 11 and sum(i == "obama" for i, *_ in c) == 3
    return c


@pytest.fixture(scope="module")
def release(tmp_path_factory, crops):
    root = tmp_path_factory.mktemp("IJB_release")
    templates = write_release(root / "IJBC", crops)
    return root, templates


# --- reader ------------------------------------------------------------------------------------


def test_reads_the_release_from_either_folder(release, crops):
    root, templates = release
    for where in (root, root / "IJBC"):
        p = read_ijb(where)
        assert p.name == "IJBC" and p.image_dir == root / "IJBC" / "loose_crop"
        assert len(p) == 3 + 8 * 3  # obama: 3 single-face templates; 8 others: 1 + 2 faces
        assert p.landmarks.shape == (27, 5, 2) and p.face_scores.shape == (27,)
        n_gen = 3 + 8
        n_imp = 9 * 8 // 2
        assert len(p.pair_label) == n_gen + n_imp == p.n_pairs_total
        assert int(p.pair_label.sum()) == n_gen
    np.testing.assert_allclose(p.landmarks[0], crops[0][2], atol=1e-3)
    assert p.paths[0] == str(root / "IJBC" / "loose_crop" / "1.jpg")
    # face 2 and 3 are the blurred and down-scaled copies of face 1, one media, one template
    assert p.template_ids[1] == p.template_ids[2] != p.template_ids[0]
    assert p.media_ids[1] == p.media_ids[2] != p.media_ids[0]
    assert find_release(root) == (root / "IJBC", "IJBC")


def test_ijbb_and_ijbc_side_by_side(tmp_path, crops):
    write_release(tmp_path / "IJBC", crops[:4])
    write_release(tmp_path / "IJBB", crops, prefix="ijbb")
    assert read_ijb(tmp_path).name == "IJBC" and len(read_ijb(tmp_path)) < len(read_ijb(tmp_path, "IJB-B"))
    assert find_release(tmp_path, "ijbb") == (tmp_path / "IJBB", "IJBB")
    assert find_release(tmp_path / "IJBB") == (tmp_path / "IJBB", "IJBB")
    with pytest.raises(ValueError, match="target must be one of"):
        read_ijb(tmp_path, "IJB-A")


def test_subset_keeps_only_the_faces_its_pairs_need(release):
    p = read_ijb(release[0])
    s = p.subset(5, seed=3)
    assert len(s.pair_label) == 5 and s.n_pairs_total == p.n_pairs_total
    assert set(s.template_ids) == set(s.pair_t1) | set(s.pair_t2)
    assert s.subset(5, seed=3).pair_t1.tolist() == s.pair_t1.tolist()
    again = p.subset(5, seed=3)
    assert again.pair_t1.tolist() == s.pair_t1.tolist() and again.image_names == s.image_names
    assert p.subset(10 ** 6) is p and p.subset() is p
    with pytest.raises(ValueError, match="positive integer"):
        p.subset(0)
    with pytest.raises(ValueError, match="max_templates must be a positive integer"):
        p.subset(max_templates=2.5)
    # by templates: only pairs among the sampled templates, and only their faces
    t = p.subset(max_templates=6, seed=1)
    assert len(set(t.template_ids)) <= 6 and set(t.template_ids) == set(t.pair_t1) | set(t.pair_t2)
    inside = np.isin(p.pair_t1, t.template_ids) & np.isin(p.pair_t2, t.template_ids)
    assert len(t.pair_label) == int(inside.sum()) > 0
    both = p.subset(3, seed=1, max_templates=6)
    assert len(both.pair_label) == 3 and set(both.pair_t1) <= set(t.template_ids)


def _broken(tmp_path, release, edit):
    """A copy of the tiny release's meta files with one edited, and its loose_crop linked."""
    src = release[0] / "IJBC"
    dst = tmp_path / "IJBC"
    (dst / "meta").mkdir(parents=True)
    (dst / "loose_crop").symlink_to(src / "loose_crop")
    for f in (src / "meta").iterdir():
        (dst / "meta" / f.name).write_text(f.read_text())
    edit(dst / "meta")
    return dst


def _edit_line(path: Path, k: int, new: str):
    lines = path.read_text().splitlines()
    lines[k] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case,match", [
    ("order", "same faces in the same order"),
    ("count", "has 26 faces but"),
    ("pts_line", r"ijbc_name_5pts_score.txt line 4: expected '<image name>' and 11 numbers"),
    ("tid_line", r"ijbc_face_tid_mid.txt line 2: expected '<image name> <template id> <media id>'"),
    ("pair_line", r"ijbc_template_pair_label.txt line 3: expected '<template id> <template id> <label 0/1>'"),
    ("pair_extra", r"ijbc_template_pair_label.txt line 5"),
    ("label", "label 2 is not 0 or 1"),
    ("unknown", "1 template.* no face in the face list .first: 7777"),
    ("nan", "NaN or inf"),
    ("no_pairs", "no template pairs"),
])
def test_malformed_meta_files_say_where(tmp_path, release, case, match):
    def edit(meta):
        pts, tid, pairs = (meta / "ijbc_name_5pts_score.txt", meta / "ijbc_face_tid_mid.txt",
                           meta / "ijbc_template_pair_label.txt")
        if case == "order":
            lines = pts.read_text().splitlines()
            lines[0], lines[1] = lines[1], lines[0]
            pts.write_text("\n".join(lines) + "\n")
        elif case == "count":
            pts.write_text("\n".join(pts.read_text().splitlines()[:-1]) + "\n")
        elif case == "pts_line":
            _edit_line(pts, 3, pts.read_text().splitlines()[3].rsplit(" ", 1)[0])
        elif case == "tid_line":
            _edit_line(tid, 1, "2.jpg five 9001")
        elif case == "pair_line":
            _edit_line(pairs, 2, "101 x 1")
        elif case == "pair_extra":
            _edit_line(pairs, 4, "101 102 0 0")
        elif case == "label":
            _edit_line(pairs, 0, pairs.read_text().splitlines()[0][:-1] + "2")
        elif case == "unknown":
            _edit_line(pairs, 0, "7777 101 0")
        elif case == "nan":
            line = pts.read_text().splitlines()[0].split()
            _edit_line(pts, 0, " ".join(line[:1] + ["nan"] + line[2:]))
        elif case == "no_pairs":
            pairs.write_text("\n")

    with pytest.raises(IJBFormatError, match=match):
        read_ijb(_broken(tmp_path, release, edit))


def test_missing_parts_are_named(tmp_path, release):
    with pytest.raises(IJBFormatError, match="no IJB release under"):
        read_ijb(tmp_path)
    with pytest.raises(IJBFormatError, match="is not a directory"):
        read_ijb(tmp_path / "nope")
    d = _broken(tmp_path, release, lambda meta: (meta / "ijbc_template_pair_label.txt").unlink())
    with pytest.raises(IJBFormatError, match="missing .*ijbc_template_pair_label.txt"):
        read_ijb(d)
    (d / "loose_crop").unlink()
    (d / "meta" / "ijbc_template_pair_label.txt").write_text("101 102 0\n")
    with pytest.raises(IJBFormatError, match="missing .*loose_crop"):
        read_ijb(d)
    with pytest.raises(IJBFormatError, match="no IJBB release"):
        read_ijb(d, target="IJB-B")


# --- alignment from the benchmark's points --------------------------------------------------------


def test_loose_crop_points_give_the_photos_own_chip(release, crops, dlib_backbone):
    """The chip cut from the JPEG loose crop with the file's points is the chip cut from the original
    photo with YuNet's points: same framing (pixel offsets right), only JPEG noise between them."""
    p = read_ijb(release[0])
    ds = ChipDataset(p.paths, dlib_backbone.preprocess, "landmarks", landmarks=p.landmarks)
    got = {Path(im.path).name: im.chips[0] for im in iter_images(ds, num_workers=0)}
    first = [i for i, n in enumerate(p.image_names) if p.template_ids[i] < 500]  # the clean crops
    assert len(first) == len(crops)
    for i, (_, _, _, _, img, lm) in zip(first, crops):
        ref = warp_to_template(img, lm, "arcface5", dlib_backbone.preprocess.template)
        diff = np.abs(got[p.image_names[i]].astype(float) - ref).mean()
        assert diff < 4.0, (p.image_names[i], diff)
        shifted = warp_to_template(img, lm + 3.0, "arcface5", dlib_backbone.preprocess.template)
        assert np.abs(shifted.astype(float) - ref).mean() > 2 * diff  # the bound would catch a 3 px error


def test_landmarks_mode_checks_its_points(dlib_backbone, tmp_path):
    with pytest.raises(ValueError, match=r"landmarks of shape \(2, 5, 2\)"):
        ChipDataset(["a.jpg", "b.jpg"], dlib_backbone.preprocess, "landmarks", landmarks=np.zeros((1, 5, 2)))
    Image.fromarray(np.full((60, 60, 3), 90, np.uint8)).save(tmp_path / "flat.png")
    ds = ChipDataset([tmp_path / "flat.png", tmp_path / "gone.png"], dlib_backbone.preprocess, "landmarks",
                     landmarks=np.zeros((2, 5, 2)))
    a, b = list(iter_images(ds, num_workers=0))
    assert a.error and "alignment to the given points failed" in a.error and len(a.chips) == 0
    assert b.error and len(b.chips) == 0


# --- templates -------------------------------------------------------------------------------------


def test_ijb_template_feature_is_media_mean_then_sum():
    e = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 0, 1.0], [3.0, 4.0, 0]])
    tids = [7, 7, 7, 9, 7]
    mids = [1, 1, 2, 1, 3]  # media 1 appears in both templates: two different media
    q = np.array([0.5, 0.2, 0.9, 0.4, 0.7])
    t = aggregate_templates(e, tids, mids, quality=q)
    assert t.ids.tolist() == [7, 9]
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    want = (unit[0] + unit[1]) / 2 + unit[2] + unit[4]
    np.testing.assert_allclose(t.embeddings[0], want / np.linalg.norm(want))
    np.testing.assert_allclose(t.embeddings[1], [0, 0, 1])
    assert t.quality.tolist() == [0.2, 0.4]
    assert [m.tolist() for m in t.members] == [[0, 1, 2, 4], [3]]
    np.testing.assert_allclose(t.reduce_quality(q, "mean"), [(0.5 + 0.2 + 0.9 + 0.7) / 4, 0.4])
    assert t.reduce_quality(q, "max").tolist() == [0.9, 0.4]
    # detector-score weights scale each face before the media mean
    w = np.array([1.0, 0.0, 1.0, 1.0, 2.0])
    tw = aggregate_templates(e, tids, mids, weights=w)
    want = unit[0] / 2 + unit[2] + 2 * unit[4]
    np.testing.assert_allclose(tw.embeddings[0], want / np.linalg.norm(want))
    # without media ids every face is its own media: the normalised mean, as build_templates
    t_plain = aggregate_templates(e, tids)
    mean = unit[[0, 1, 2, 4]].mean(0)
    np.testing.assert_allclose(t_plain.embeddings[0], mean / np.linalg.norm(mean))
    bt = build_templates(e, ["a"] * 5, tids, q, media_ids=mids)
    np.testing.assert_allclose(bt.embeddings, t.embeddings)
    assert bt.keys == [("a", 7), ("a", 9)]
    # faces without an identity take no part; the per-template reduction skips them too
    bt2 = build_templates(e, ["a", "a", None, "b", "a"], tids, q)
    assert bt2.keys == [("a", 7), ("b", 9)] and bt2.face_rows.tolist() == [0, 0, -1, 1, 0]
    assert bt2.reduce_quality(q, "max").tolist() == [0.7, 0.4]
    np.testing.assert_allclose(bt2.reduce_quality(q, "mean"), [(0.5 + 0.2 + 0.7) / 3, 0.4])


def test_template_pair_similarities_mark_missing_templates():
    e = np.array([[1.0, 0], [0, 1.0], [1.0, 1.0]])
    t = aggregate_templates(e, ["x", "y", "z"])
    sims, ok = template_pair_similarities(t, ["x", "x", "q", "z"], ["y", "z", "x", "z"])
    assert ok.tolist() == [True, True, False, True]
    np.testing.assert_allclose(sims[ok], [0.0, np.sqrt(0.5), 1.0])
    assert np.isnan(sims[2])


@pytest.mark.parametrize("kwargs,match", [
    (dict(template_ids=[1, 2]), r"template_ids must have shape \(3,\)"),
    (dict(template_ids=[1, 1, 2], media_ids=[1]), r"media_ids must have shape"),
    (dict(template_ids=[1, 1, 2], weights=[1, -1, 1]), "non-negative"),
    (dict(template_ids=[1, 1, 2], weights=[0, 0, 1]), "template 1 has a zero feature"),
    (dict(template_ids=[1, 1, 2], quality=[1, 2, 3], quality_reduce="median"), "quality_reduce"),
])
def test_aggregate_templates_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregate_templates(np.eye(3), **kwargs)


# --- benchmarks/evaluate.py --ijb ---------------------------------------------------------------


def test_evaluate_prints_the_ijb_table(tmp_path, crops, run_evaluate):
    root = tmp_path / "IJB_release"
    write_release(root / "IJBC", crops)
    (root / "IJBC" / "loose_crop" / "3.jpg").write_bytes(b"not a jpeg")  # one face of a two-face template
    (root / "IJBC" / "loose_crop" / "1.jpg").unlink()  # the only face of a template: its 9 pairs go
    out = tmp_path / "out"
    text = run_evaluate("--quick", "--ijb", root, "--out", out)
    assert "### pAUC per benchmark, per_level" in text and "| IJBC @20% | IJBC @30% |" in text
    assert "10 genuine / 28 impostor template pairs of 18 templates (25 faces; template quality = min" in text
    assert "2 unreadable face images skipped (first: 1.jpg" in text
    assert "9 pairs dropped: a template had no readable face" in text
    assert "FMR 0.001 is unreachable with 28 impostor pairs" in text
    for method in ("PreFIQs (default", "EmbeddingNorm", "Sharpness", "Random"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {method}"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 2 and all(0 <= float(c) <= 1 for c in cells), row
    assert (out / "IJBC_fixed.png").stat().st_size > 0 and (out / "IJBC_per_level.png").stat().st_size > 0

    text = run_evaluate("--quick", "--ijb", root / "IJBC", "--max-pairs", 12, "--ijb-max-templates", 15,
                        "--template-quality", "mean", "--flip")
    assert "template quality = mean of its faces" in text
    assert "(each concatenated with its mirror image's, as CR-FIQA)" in text
    assert "a seeded sample (15 templates, 12 pairs) of the protocol's 47 pairs" in text
