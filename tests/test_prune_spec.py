"""Pruning specs say exactly what they do: strings round-trip, CLI flags build exactly that copy,
bad specs stop with one line."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from prefiqs_core.backbones.base import prunable_modules
from prefiqs_core.cli import main, pruning_from_args
from prefiqs_core.pruning import PruneSpec, compute_masks, format_prune, parse_prune

GOOD = ["global_l1@0.5", "global_l1@0.4+keepfirst,layerwise_l1@0.1", "random@0.03/s2",
        "ln_structured@0.05+keepfirst+keeplast", "global_l1@0.5+keeplast+from:blocks.10",
        "layerwise_l1@0.3+from:conv_12_dw_conv2d,global_l1@0.5+from:blocks.10"]


@pytest.mark.parametrize("text", GOOD)
def test_spec_strings_round_trip(text):
    specs = parse_prune(text)
    assert format_prune(specs) == text
    assert parse_prune(format_prune(specs)) == specs


def test_spec_string_fields():
    (a,) = parse_prune(" global_l1@0.5 + keepfirst + from:blocks.10 ")
    assert a == PruneSpec("global_l1", 0.5, keep_first=True, start="blocks.10")
    assert parse_prune("random@0.1/s7")[0].seed == 7


@pytest.mark.parametrize("text,msg", [
    ("", "empty pruning spec"), ("global_l1", "cannot read"), ("magic@0.5", "unknown pruning method"),
    ("global_l1@abc", "not a number"), ("global_l1@1.5", "strictly between 0 and 1"),
    ("global_l1@0.5+keepsecond", "unknown option 'keepsecond'"), ("global_l1@0.5+from:", "unknown option"),
    ("global_l1@0.5,", "cannot read"),
])
def test_bad_specs_give_one_line_errors(text, msg):
    with pytest.raises(ValueError, match=msg) as e:
        parse_prune(text)
    assert "\n" not in str(e.value)


def cli_args(**kw):
    base = dict(prune=None, pruning=None, sparsity=None, seed=None, keep_first=False, keep_last=False,
                prune_from=None)
    return SimpleNamespace(**(base | kw))


def test_flags_mean_exactly_what_they_say(dlib_backbone):
    specs = pruning_from_args(cli_args(pruning="global_l1", sparsity=0.5), "dlib_resnet29")
    assert specs == [PruneSpec("global_l1", 0.5)]  # no keep flag inherited from the default
    # the masks are plain global L1 at 50 % over every conv and linear weight
    masks = compute_masks(dlib_backbone.net, specs[0])
    layers = prunable_modules(dlib_backbone.net)
    assert sorted(masks) == sorted(n for n, _ in layers)
    flat = torch.cat([m.weight.detach().abs().reshape(-1) for _, m in layers])
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    removed[torch.argsort(flat, stable=True)[:round(0.5 * flat.numel())]] = True
    assert torch.equal(torch.cat([(~masks[n]).reshape(-1) for n, _ in layers]), removed)
    assert pruning_from_args(cli_args(), "dlib_resnet29")[0] == parse_prune(
        format_prune(pruning_from_args(cli_args(), "dlib_resnet29")))[0]  # the default, unchanged
    kept = pruning_from_args(cli_args(pruning="layerwise_l1", keep_last=True, prune_from="blocks.3"), "sface")
    assert kept[0].keep_last and kept[0].start == "blocks.3" and not kept[0].keep_first
    with pytest.raises(ValueError, match="--prune already says everything; drop --sparsity"):
        pruning_from_args(cli_args(prune="global_l1@0.5", sparsity=0.3), "dlib_resnet29")


def test_cli_scores_with_the_spec_it_prints_and_stores(tmp_path, dlib_backbone, real_chips, capsys):
    from prefiqs_core.scoring import PreFIQs

    d = tmp_path / "chips"
    d.mkdir()
    for i, c in enumerate(real_chips[:4]):
        Image.fromarray(c).save(d / f"chip{i}.png")
    out = tmp_path / "s.csv"
    assert main(["score", str(d), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--workers", "0", "--quiet",
                 "--pruning", "global_l1", "--sparsity", "0.5"]) == 0
    assert "pruning: global_l1@0.5 (2.00 dense forwards per face)" in capsys.readouterr().err
    side = json.loads((tmp_path / "s.csv.json").read_text())
    assert side["prune"] == "global_l1@0.5" and side["faces"] == 4
    assert side["execution"] == "norms folded, channels-last"  # how the networks ran (prefiqs_core.inference)
    want = PreFIQs(dlib_backbone, PruneSpec("global_l1", 0.5)).score(real_chips[:4]).drift
    got = [float(line.split(",")[7]) for line in out.read_text().splitlines()[1:]]
    assert np.allclose(got, want, atol=1e-5)
    with pytest.raises(SystemExit, match="unknown split point 'blocks.99'"):
        main(["score", str(d), "--aligned", "--backbone", "dlib_resnet29", "--out", str(out), "--prune", "global_l1@0.5+from:blocks.99"])


def test_short_label_writes_seed_copies_once():
    from prefiqs_core.pruning import short_prune

    eight = parse_prune(",".join(f"random@0.3/s{i}+from:pre_fc1" for i in range(8)))
    assert short_prune(eight) == "random@0.3/s0…s7+from:pre_fc1 ×8"
    assert short_prune(parse_prune("random@0.1/s3,random@0.1/s4")) == "random@0.1/s3…s4 ×2"
    for other in ("global_l1@0.7+from:blocks.12", "global_l1@0.5,layerwise_l1@0.1",
                  "random@0.3/s0,random@0.3/s2",  # not a run of seeds
                  "random@0.3/s0+from:blocks.12,random@0.3/s1+from:blocks.13"):
        assert short_prune(parse_prune(other)) == format_prune(parse_prune(other))
