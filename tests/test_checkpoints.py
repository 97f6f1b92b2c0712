"""prefiqs_core.checkpoints: weights-only loading, container/prefix unwrapping, clear errors."""
import os
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from prefiqs_core.checkpoints import CheckpointError, load_state_dict, match_state_dict


def _t(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _assert_same(got, want):
    assert list(got) == list(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


# ---------------------------------------------------------------- payloads that run code if unpickled

def _touch(path):
    """Called by the unpickler for MarkerOnReduce: proof that code from the file ran."""
    Path(path).write_text("executed")
    return "loaded"


class MarkerOnReduce:
    """Stands in for a malicious object: unpickling it calls ``_touch(marker)``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


class MarkerOnSetstate:
    """Stands in for a custom class whose ``__setstate__`` has side effects."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).write_text("executed")
        self.__dict__.update(state)


# ---------------------------------------------------------------- plain loading and unwrapping

def test_plain_state_dict_round_trip(tmp_path):
    sd = {"conv1.weight": _t(4, 3, 3, 3), "bn1.running_var": _t(4).abs(),
          "bn1.num_batches_tracked": torch.tensor(7)}
    _assert_same(load_state_dict(_save(tmp_path, sd)), sd)


def test_legacy_serialisation_format_loads(tmp_path):
    sd = {"fc.weight": _t(3, 5)}
    path = tmp_path / "legacy.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    _assert_same(load_state_dict(path), sd)


@pytest.mark.parametrize("container", ["state_dict", "model", "backbone", "state_dict_backbone"])
def test_containers_are_unwrapped_and_non_tensors_dropped(tmp_path, container):
    sd = {"conv1.weight": _t(2, 3, 3, 3), "fc.bias": _t(2)}
    obj = {container: sd, "epoch": 25, "arch": "iresnet50", "note": "trained"}
    _assert_same(load_state_dict(_save(tmp_path, obj)), sd)


def test_arcface_resume_checkpoint_picks_backbone_not_head(tmp_path):
    # arcface_torch's checkpoint_gpu_N.pt: backbone next to the partial-fc head and optimizer state
    sd = {"conv1.weight": _t(2, 3, 3, 3)}
    obj = {"epoch": 20, "global_step": 1000, "state_dict_backbone": sd,
           "state_dict_softmax_fc": {"weight": _t(10, 4)},
           "state_optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}
    _assert_same(load_state_dict(_save(tmp_path, obj)), sd)


@pytest.mark.parametrize("prefix", ["module.", "features.module.", "backbone.", "model.", "module.backbone."])
def test_shared_prefixes_are_stripped(tmp_path, prefix):
    sd = {"conv1.weight": _t(2, 3, 3, 3), "layer1.0.bn1.running_mean": _t(2),
          "features.weight": torch.ones(4)}
    wrapped = {prefix + k: v for k, v in sd.items()}
    _assert_same(load_state_dict(_save(tmp_path, wrapped)), sd)


def test_prefix_kept_when_not_shared_by_all_keys(tmp_path):
    sd = {"module.conv1.weight": _t(2), "fc.weight": _t(3)}
    _assert_same(load_state_dict(_save(tmp_path, sd)), sd)


def _magface_backbone_keys():
    return {"conv1.weight": _t(4, 3, 3, 3, seed=1), "layer1.0.downsample.1.running_var": _t(4, seed=2).abs(),
            "fc.weight": _t(8, 12, seed=3), "features.weight": _t(8, seed=4),
            "features.running_mean": _t(8, seed=5)}


def test_magface_ddp_checkpoint_keeps_backbone_drops_margin_head(tmp_path):
    # MagFace trainer_dist.py: {"epoch", "arch", "state_dict", "optimizer"}; the model's features
    # are DDP-wrapped ("features.module.") and its margin layer is "parallel_fc".
    sd = _magface_backbone_keys()
    state = {f"features.module.{k}": v for k, v in sd.items()}
    state["parallel_fc.weight"] = _t(8, 100)
    obj = {"epoch": 25, "arch": "iresnet100", "state_dict": state,
           "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}
    _assert_same(load_state_dict(_save(tmp_path, obj)), sd)


def test_magface_dataparallel_checkpoint_keeps_backbone_drops_margin_head(tmp_path):
    # MagFace trainer.py wraps the whole SoftmaxBuilder in DataParallel: "module.features.", "module.fc"
    sd = _magface_backbone_keys()
    state = {f"module.features.{k}": v for k, v in sd.items()}
    state["module.fc.weight"] = _t(8, 100)
    _assert_same(load_state_dict(_save(tmp_path, {"state_dict": state})), sd)


def test_dataparallel_arcface_backbone_keeps_its_features_batchnorm(tmp_path):
    # "module.features.*" here is the iResNet's own BatchNorm1d, not a sub-network: strip "module." only.
    sd = {"conv1.weight": _t(2, 3, 3, 3), "fc.weight": _t(4, 6), "features.weight": torch.ones(4),
          "features.bias": _t(4)}
    _assert_same(load_state_dict(_save(tmp_path, {f"module.{k}": v for k, v in sd.items()})), sd)


def test_generic_features_classifier_model_is_not_mangled(tmp_path):
    # A VGG-like layout must not lose its classifier to the MagFace rule.
    sd = {"features.0.weight": _t(2, 3, 3, 3), "classifier.1.weight": _t(3, 4)}
    _assert_same(load_state_dict(_save(tmp_path, {f"module.{k}": v for k, v in sd.items()})), sd)


# ---------------------------------------------------------------- refusals and bad files

@pytest.mark.parametrize("payload", [MarkerOnReduce, MarkerOnSetstate])
def test_pickled_objects_are_refused_without_running_their_code(tmp_path, payload):
    marker = tmp_path / "marker.txt"
    path = _save(tmp_path, {"conv1.weight": _t(2), "extra": payload(marker)}, "evil.pth")

    with pytest.raises(CheckpointError) as err:
        load_state_dict(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "refused" in msg and "execute code" in msg
    assert "torch.save(model.state_dict()" in msg
    assert not marker.exists(), "the checkpoint's code ran during a refused load"

    # The payload is real: unrestricted unpickling (never done by the library) does run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_whole_pickled_module_is_refused_naming_its_class(tmp_path):
    path = _save(tmp_path, nn.Linear(2, 2), "module.pth")
    with pytest.raises(CheckpointError, match="refused") as err:
        load_state_dict(path)
    assert "Linear" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found") as err:
        load_state_dict(tmp_path / "nope.pth")
    assert "nope.pth" in str(err.value)


def test_directory_is_not_a_regular_file(tmp_path):
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_state_dict(tmp_path)


def _text(path):
    path.write_text("this is a README, not weights\n")


def _random_bytes(path):
    path.write_bytes(os.urandom(4096))


def _empty(path):
    path.write_bytes(b"")


def _foreign_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")


@pytest.mark.parametrize("writer", [_text, _random_bytes, _empty, _foreign_zip])
def test_non_checkpoint_files(tmp_path, writer):
    path = tmp_path / "weights.pth"
    writer(path)
    with pytest.raises(CheckpointError, match="not a torch checkpoint") as err:
        load_state_dict(path)
    assert str(path) in str(err.value)


def test_checkpoint_without_a_dict_of_tensors(tmp_path):
    with pytest.raises(CheckpointError, match="not a dict"):
        load_state_dict(_save(tmp_path, [_t(2), _t(3)]))
    with pytest.raises(CheckpointError, match="no tensors"):
        load_state_dict(_save(tmp_path, {"epoch": 3, "arch": "r50"}))


# ---------------------------------------------------------------- match_state_dict

class _Tiny(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 2)


def test_match_loads_exactly():
    src, dst = _Tiny(), _Tiny()
    with torch.no_grad():
        src.bn.running_mean.normal_()
    match_state_dict(dst, src.state_dict(), what="tiny")
    _assert_same(dst.state_dict(), src.state_dict())


def test_match_tolerates_missing_batchnorm_counters():
    src, dst = _Tiny(), _Tiny()
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    match_state_dict(dst, sd, what="tiny")
    assert torch.equal(dst.conv.weight, src.conv.weight)


def test_match_reports_missing_unexpected_and_shapes():
    sd = _Tiny(width=5).state_dict()
    del sd["fc.bias"]
    sd["head.weight"] = _t(3)
    with pytest.raises(CheckpointError) as err:
        match_state_dict(_Tiny(width=4), sd, what="tiny-net")
    msg = str(err.value)
    assert "tiny-net" in msg
    assert "1 missing keys: fc.bias" in msg
    assert "1 unexpected keys: head.weight" in msg
    assert "conv.weight: expected shape (4, 3, 3, 3), got (5, 3, 3, 3)" in msg


def test_match_lists_at_most_ten_keys():
    net = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])  # 24 keys
    with pytest.raises(CheckpointError) as err:
        match_state_dict(net, {"0.weight": net[0].weight.detach()}, what="seq")
    msg = str(err.value)
    assert "23 missing keys" in msg and "(+13 more)" in msg
    assert "11.bias" not in msg
