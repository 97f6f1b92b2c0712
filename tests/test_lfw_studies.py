"""The A/B studies' shared pieces: the paired interval of a difference, the sweep's rule with its
paired note, and the cross-backbone rows (no LFW needed)."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from cross_backbone import cross_rows  # noqa: E402
from lfw import paired_interval  # noqa: E402
from sweep import choose  # noqa: E402


def test_paired_interval_of_a_shared_shift():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.6, 1.0, 500)  # wide on its own: the people differ
    lo, hi, p = paired_interval(ref - 0.05, ref)
    assert lo == pytest.approx(-0.05) and hi == pytest.approx(-0.05) and p == 1.0
    lo, hi, p = paired_interval(ref, ref)
    assert lo == hi == 0.0 and p == 0.0


def test_paired_interval_ignores_resamples_without_errors():
    a = np.array([0.5, np.nan, 0.7, 0.9])
    b = np.array([0.6, 0.8, 0.6, 1.0])
    lo, hi, p = paired_interval(a, b)
    assert p == pytest.approx(2 / 3)  # -0.1, +0.1, -0.1 over the three defined resamples
    assert lo == pytest.approx(-0.1) and hi == pytest.approx(0.1, abs=0.02)


def _row(label, cost, a, boot):
    return dict(label=label, kind="prefiqs", cost=cost, A=a, A_boot=np.asarray(boot, float))


def test_choose_keeps_the_cheap_setting_inside_the_best_interval_and_says_the_paired_difference():
    rng = np.random.default_rng(1)
    people = rng.uniform(0.6, 1.0, 1000)
    best = _row("best", 2.0, 0.78, people - 0.04)
    cheap = _row("cheap", 1.07, 0.82, people)
    pick, why = choose([best, cheap])
    assert pick is cheap
    assert "inside it" in why and "paired" in why and "+0.040" in why and "100%" in why


def test_choose_takes_the_best_affordable_when_nothing_cheap_is_inside():
    best = _row("best", 1.9, 0.70, np.full(100, 0.70) + np.linspace(-0.01, 0.01, 100))
    cheap = _row("cheap", 1.1, 0.90, np.full(100, 0.90))
    dear = _row("dear", 3.0, 0.60, np.full(100, 0.60))
    pick, why = choose([best, cheap, dear])
    assert pick is best and why.startswith("no setting at <= 1.3")
    assert "+0.100" in why  # against the dearer best on A


def test_choose_has_no_paired_note_when_the_best_is_cheap():
    best = _row("best", 1.1, 0.70, np.full(100, 0.70))
    other = _row("other", 2.0, 0.75, np.full(100, 0.75))
    pick, why = choose([other, best])
    assert pick is best and "paired" not in why


def _bench(name, labels, drift, norm):
    return SimpleNamespace(bb=SimpleNamespace(name=name), labels=labels, raw_norm=np.asarray(norm),
                           mean_drift=lambda specs: np.asarray(drift, float))


def test_cross_rows_put_the_recogniser_own_prefiqs_first_and_add_the_others():
    labels = ["a", "a", "b"]
    d = _bench("dlib_resnet29", labels, [0.2, 0.4, 0.6], [1, 2, 3])
    s = _bench("sface", labels, [0.6, 0.2, 0.0], [30, 20, 10])
    rows = cross_rows([d, s], s)
    assert list(rows) == ["sface PreFIQs (its default)", "sface embedding norm",
                          "dlib_resnet29 PreFIQs (its default)", "dlib_resnet29 embedding norm"]
    assert np.allclose(rows["sface PreFIQs (its default)"], [0.7, 0.9, 1.0])
    assert np.allclose(rows["dlib_resnet29 embedding norm"], [1, 2, 3])


def test_cross_rows_refuse_different_face_lists():
    d = _bench("dlib_resnet29", ["a", "b"], [0.1, 0.2], [1, 2])
    s = _bench("sface", ["a", "c"], [0.1, 0.2], [1, 2])
    with pytest.raises(SystemExit, match="face lists differ"):
        cross_rows([d, s], d)


def test_activation_masks_rank_weights_by_magnitude_times_input_norm():
    import torch
    from activation_pruning import activation_masks, input_norms

    torch.manual_seed(0)
    tail = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 5 * 5, 6))
    acts = torch.randn(7, 3, 5, 5) * torch.tensor([0.1, 1.0, 10.0]).view(1, 3, 1, 1)
    norms = input_norms(tail, acts, batch=3)
    assert torch.allclose(norms["0"], acts.double().pow(2).sum(dim=(0, 2, 3)).sqrt().float())
    flat_in = tail[1](tail[0](acts)).detach()
    assert torch.allclose(norms["2"], flat_in.double().pow(2).sum(0).sqrt().float(), rtol=1e-5)
    # global: the same number removed as a direct top-k over |W| × ‖x_j‖ of both layers
    masks = activation_masks(tail, norms, 0.5, "global")
    s0 = tail[0].weight.detach().abs() * norms["0"].clone().view(1, 3, 1, 1)
    s2 = tail[2].weight.detach().abs() * norms["2"].clone().view(1, -1)
    flat = torch.cat([s0.reshape(-1), s2.reshape(-1)])
    cut = torch.sort(flat).values[round(0.5 * flat.numel()) - 1]
    assert torch.equal(masks["0"], s0 > cut) and torch.equal(masks["2"], s2 > cut)
    # channel 0's inputs are 100x smaller than channel 2's: its weights go first
    assert masks["0"][:, 0].float().mean() < masks["0"][:, 2].float().mean()
    # row: half of every output unit's weights, whatever the other units hold
    rows = activation_masks(tail, norms, 0.5, "row")
    assert all(int((~r).sum()) == round(0.5 * r.numel()) for r in rows["2"])
    with pytest.raises(ValueError, match="unknown mode"):
        activation_masks(tail, norms, 0.5, "columns")


@pytest.mark.parametrize("with_std", [False, True])
def test_corrected_tail_matches_the_dense_layers_statistics_in_running_order(with_std):
    import copy

    import torch
    from bias_correction import correct_tail, layer_stats

    torch.manual_seed(0)
    dense = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 5 * 5, 6)).eval()
    pruned = copy.deepcopy(dense)
    with torch.no_grad():  # a crude pruning of both layers, so both layers' statistics move
        for m in (pruned[0], pruned[3]):
            m.weight.mul_((m.weight.abs() > m.weight.abs().median()).float())
    ref = torch.randn(40, 3, 5, 5)
    before, order = layer_stats(pruned, ref, batch=16)
    want, _ = layer_stats(dense, ref, batch=16)
    assert order == ["0", "3"]
    assert not torch.allclose(before["3"][0], want["3"][0], atol=1e-3)
    hooks = correct_tail(dense, pruned, ref, batch=16, with_std=with_std)
    got, _ = layer_stats(pruned, ref, batch=7)
    for name in order:  # the later layer is fitted with the earlier one already corrected
        assert torch.allclose(got[name][0], want[name][0], atol=1e-5)
        assert torch.allclose(got[name][1], want[name][1], atol=1e-5) == with_std
    for h in hooks:
        h.remove()
    again, _ = layer_stats(pruned, ref, batch=16)
    assert torch.allclose(again["3"][0], before["3"][0])


def test_display_label_shortens_seed_copies_and_keeps_notes_and_baselines():
    from lfw import display_label

    eight = ",".join(f"random@0.3/s{i}+from:pre_fc1" for i in range(8))
    assert display_label(eight) == "random@0.3/s0…s7+from:pre_fc1 ×8"
    assert display_label("global_l1@0.5+from:conv_14_dw_conv2d (previous default)") == \
        "global_l1@0.5+from:conv_14_dw_conv2d (previous default)"
    assert display_label("embedding_norm") == "embedding_norm"
    assert display_label("random") == "random"


def test_top_people_share_counts_errors_of_the_worst_people():
    from cross_backbone import top_people_share

    person = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    errors = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0], float)  # person 0: 3, 1: 1, 2: 1
    assert top_people_share(person, errors, top=1) == pytest.approx(3 / 5)
    assert top_people_share(person, errors, top=2) == pytest.approx(4 / 5)
    assert top_people_share(person, np.zeros(9), top=2) == 0.0


def _toy_bench(n_people=6, per=3, dim=8, seed=0, noise=None):
    """An LFWBench over random unit embeddings (no photos): halves, thresholds and weights built as
    the real one builds them."""
    from lfw import LFWBench
    from prefiqs_core.evaluation.lfw import people_halves

    rng = np.random.default_rng(seed)
    labels = [f"p{i}" for i in range(n_people) for _ in range(per)]
    e = rng.normal(size=(len(labels), dim))
    if noise is not None:  # each person's faces around their own centre: some genuine pairs match
        e = np.repeat(rng.normal(size=(n_people, dim)), per, axis=0) + noise * e
    bench = LFWBench.__new__(LFWBench)
    bench.labels, bench.dense, bench.reps = labels, e / np.linalg.norm(e, axis=1, keepdims=True), 20
    bench.halves = {name: bench.half_of(name, mask, bench.reps, s)
                    for name, mask, s in zip("AB", people_halves(labels, 0), (1, 2))}
    return bench


def test_all_people_holds_both_halves_genuine_pairs_and_the_impostors_between_them():
    bench = _toy_bench()
    a, b = bench.halves["A"].pairs, bench.halves["B"].pairs
    h = bench.add_all_people()
    assert h.pairs.n_people == 6 and bench.halves["all"] is h
    assert len(h.pairs.genuine) == len(a.genuine) + len(b.genuine) == 6 * 3
    # every pair of faces of different people: within A, within B, and across
    assert len(h.pairs.impostor) == 18 * 15 // 2 == len(a.impostor) + len(b.impostor) + 9 * 9
    assert h.boot.shape[0] == bench.halves["A"].boot.shape[0]
    assert set(h.thresholds) == {1e-3, 1e-4}


def test_halves_table_prints_the_halves_asked_for(capsys):
    from lfw import print_halves_table

    bench = _toy_bench()
    bench.add_all_people()
    q = np.arange(18, dtype=float)
    print_halves_table(bench, {"first": q, "reversed": -q}, halves=("all", "A", "B"))
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| quality | all: nAUC20") and "| B: Δ vs first row (paired) |" in lines[0]
    assert lines[1] == "|" + "---|" * 7 and len(lines) == 4
    assert lines[2].count("| – |") == 3  # the first row has no difference from itself
    assert lines[3].startswith("| reversed |") and lines[3].count("|") == 8


def test_bootstrap_memory_benchmark_prints_its_figures(capsys):
    from bootstrap_memory import main

    main(["--pairs", "3000", "--people", "40", "--reps", "25"])
    out = capsys.readouterr().out
    assert out.startswith("3000 genuine pairs, 40 people, 25 replicates: weights ")
    assert "(float32); peak resident " in out and "mean pAUC 0." in out


def test_split_spread_seed_zero_is_the_benchmarks_own_halves():
    from whole_set import split_spread

    bench = _toy_bench(n_people=40, per=4, dim=16, noise=0.6)
    rng = np.random.default_rng(5)
    qualities = {"q": rng.uniform(size=160), "r": rng.uniform(size=160)}
    spread = split_spread(bench, qualities, range(3))
    assert set(spread) == {"q", "r"} and all(v.shape == (6,) for v in spread.values())
    for name, q in qualities.items():
        assert spread[name][:2] == pytest.approx([bench.nauc(q, "A"), bench.nauc(q, "B")], abs=1e-12)
    # other seeds split the people differently, so their halves give other figures
    assert 0 < bench.halves["A"].errors(1e-3).mean() < 1
    assert len(set(np.round(spread["q"], 12))) > 2


def test_bench_with_the_euclidean_comparator_judges_by_the_raw_embeddings_distance():
    from lfw import LFWBench
    from prefiqs_core.evaluation.lfw import people_halves

    bench = _toy_bench(n_people=10, per=3, dim=8, noise=0.8)
    bench.raw_norm = np.random.default_rng(9).uniform(0.3, 1.5, len(bench.labels))
    euc = LFWBench.__new__(LFWBench)
    euc.labels, euc.dense, euc.raw_norm, euc.comparator = bench.labels, bench.dense, bench.raw_norm, "euclidean"
    a = people_halves(bench.labels, 0)[0]
    h = euc.half_of("A", a, 0, 1)
    raw = bench.dense * bench.raw_norm[:, None]
    assert h.pairs.genuine == pytest.approx(-np.linalg.norm(raw[h.pairs.a] - raw[h.pairs.b], axis=1))
    # the same pairs as the cosine half, compared otherwise
    c = bench.halves["A"].pairs
    assert np.array_equal(h.pairs.a, c.a) and np.array_equal(h.pairs.b, c.b) and len(h.pairs.impostor) == len(c.impostor)
    assert not np.allclose(np.argsort(h.pairs.genuine), np.argsort(c.genuine))


def test_lfw_studies_refuse_an_unknown_comparator_in_one_line(capsys):
    from whole_set import main

    with pytest.raises(SystemExit) as e:
        main(["/nonexistent", "--comparator", "hamming"])
    assert e.value.code == 2
    assert "argument --comparator: invalid choice: 'hamming'" in capsys.readouterr().err


def test_whole_set_rejects_a_bad_reference_spec_in_one_line(capsys):
    from whole_set import main

    with pytest.raises(SystemExit) as e:  # refused before any face is read: the folder is not one
        main(["/nonexistent", "--reference", "global_l1@0.5;bogus@0.5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument --reference: pruning spec 'bogus@0.5': unknown pruning method" in err


@pytest.mark.parametrize("option", ["--splits", "--max-per-person"])
def test_whole_set_refuses_a_negative_count_in_one_line(capsys, option):
    from whole_set import main

    with pytest.raises(SystemExit) as e:
        main(["/nonexistent", option, "-1"])
    assert e.value.code == 2
    assert f"error: argument {option}: -1 is negative" in capsys.readouterr().err


def test_bench_gives_face_size_and_detector_score_their_own_per_face_values():
    from prefiqs_core.evaluation.baselines import make_method

    bench = _toy_bench()
    bench.batch = 4  # batches of 4 over 18 faces: the values must follow their faces across batches
    bench.chips = np.zeros((18, 4, 4, 3), np.uint8)
    width = np.arange(10.0, 190.0, 10.0)
    boxes = np.stack([np.zeros(18), np.zeros(18), width, width + 5], axis=1)  # the size is the smaller side
    scores = np.linspace(0.1, 1.8, 18)
    scores[5] = np.nan  # the detector missed this face: the fixed box
    bench.faces = SimpleNamespace(detections={"boxes": boxes, "scores": scores})
    np.testing.assert_array_equal(bench.baseline(make_method("face_size")), width)
    np.testing.assert_array_equal(bench.baseline(make_method("detector_score")), np.where(np.isnan(scores), -1e3, scores))


def test_landmark_geometry_reads_yaw_pitch_asymmetry_and_fit_residual():
    from cheap_signals import landmark_geometry

    from prefiqs_core.alignment import get_template

    t = get_template("dlib150").landmarks("dlib5")
    # the template itself, moved, turned and scaled: a frontal face by definition
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (t @ rot.T) * 1.7 + [40, -15]
    turned = t.copy()
    turned[4, 0] += 0.25 * np.linalg.norm(t[0:2].mean(0) - t[2:4].mean(0))  # nose a quarter eye distance aside
    narrow = t.copy()
    narrow[1] = narrow[0] + 0.5 * (narrow[1] - narrow[0])  # one eye half as wide
    g = landmark_geometry(np.stack([t, moved, turned, narrow]), t)
    base_yaw = g["yaw"][0]
    assert g["yaw"][1] == pytest.approx(base_yaw, abs=1e-9) and g["pitch"][1] == pytest.approx(g["pitch"][0])
    assert g["residual"][0] == pytest.approx(0, abs=1e-6) and g["residual"][1] == pytest.approx(0, abs=1e-6)
    axis = t[2:4].mean(0) - t[0:2].mean(0)
    offset = turned[4] - (t[0:2].mean(0) + t[2:4].mean(0)) / 2
    want = abs(offset @ axis) / np.linalg.norm(axis) ** 2
    assert g["yaw"][2] == pytest.approx(want) and g["yaw"][2] > base_yaw + 0.2
    assert g["residual"][2] > 1.0
    w = [np.linalg.norm(t[0] - t[1]), np.linalg.norm(t[2] - t[3])]
    assert g["eye_asymmetry"][0] == pytest.approx(abs(np.log(w[0] / w[1]))) and g["eye_asymmetry"][0] < 0.05
    assert g["eye_asymmetry"][3] == pytest.approx(abs(np.log(w[0] / 2 / w[1])))


def test_tail_outputs_read_the_embedding_layers_input_and_the_raw_embedding():
    import torch
    from cheap_signals import space_distances, tail_outputs

    torch.manual_seed(0)
    tail = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    x = torch.randn(7, 3, 6, 6)
    pooled, raw = tail_outputs(tail, x, batch=3)
    with torch.no_grad():
        want_pooled = tail[:4](x).double().numpy()
        want_raw = tail(x).double().numpy()
    assert pooled.shape == (7, 4) and np.allclose(pooled, want_pooled) and np.allclose(raw, want_raw)
    d = space_distances((pooled, raw), (pooled * 2, raw * 3))
    # scaling leaves unit vectors where they were; the raw distance and the norm ratio see it
    assert np.allclose(d["drift (unit embeddings, the product's)"], 0, atol=1e-12)
    assert np.allclose(d["pooled feature drift (unit)"], 0, atol=1e-12)
    assert np.allclose(d["raw embedding drift / dense norm"], 2.0)
    assert np.allclose(d["|log(pruned norm / dense norm)|"], np.log(3))
    with pytest.raises(ValueError, match="no linear layer"):
        tail_outputs(tail[:4], x, batch=3)


def test_resize_leaves_a_chip_of_the_asked_size_alone():
    import torch
    from cheap_signals import resize

    x = torch.rand(2, 3, 150, 150)
    assert resize(x, 150) is x
    small = resize(x, 104)
    assert small.shape == (2, 3, 104, 104)
    flat = torch.full((1, 3, 150, 150), 0.3)
    assert torch.allclose(resize(flat, 120), torch.full((1, 3, 120, 120), 0.3), atol=1e-6)


def test_product_combined_is_the_shipped_tables_per_face_value_for_the_default_only():
    from types import SimpleNamespace

    from lfw import product_combined

    from prefiqs_core.calibration import shipped
    from prefiqs_core.combined import shipped_detector_reference
    from prefiqs_core.defaults import default_pruning
    from prefiqs_core.scoring import quality_from_drift

    cal, ref = shipped("dlib_resnet29"), shipped_detector_reference()
    rng = np.random.default_rng(0)
    e = np.asarray(cal.distinctiveness.direction) + 0.3 * rng.normal(size=(6, 128))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    det = np.array([2.0, 1.0, np.nan, 0.5, 3.0, 1.5])  # the third face: missed by the detector
    drift = rng.uniform(0.15, 0.25, 6)
    bench = SimpleNamespace(bb=SimpleNamespace(name="dlib_resnet29", source_sha256=cal.weights_sha256),
                            faces=SimpleNamespace(detections=dict(scores=det)), dense=e)
    label, got = product_combined(bench, drift, default_pruning("dlib_resnet29"))
    assert label == "combined (PreFIQs + detector score + distinctiveness)"
    det_pct = np.where(np.isnan(det), 0.0, ref.percentile(np.nan_to_num(det)))
    want = (cal.percentile(quality_from_drift(drift)) + det_pct + cal.distinctiveness.percentile(e)) / 3
    np.testing.assert_allclose(got, want)
    from prefiqs_core.pruning import parse_prune
    assert product_combined(bench, drift, parse_prune("global_l1@0.5")) is None  # no shipped table for it
