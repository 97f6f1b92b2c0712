"""Shared fixtures: the real backbone, the real photos and their aligned chips (computed once)."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def dlib_backbone():
    from prefiqs_core.backbones import load_backbone
    return load_backbone("dlib_resnet29")


@pytest.fixture(scope="session")
def real_chips(dlib_backbone):
    """dlib 150x150 chips of every face detected in the real demo photos."""
    from prefiqs_core.demo import collect_demo_chips
    chips, captions, _ = collect_demo_chips(dlib_backbone.preprocess)
    assert len(chips) >= 10, "expected at least 10 real faces in the demo photos"
    return np.stack(chips)


@pytest.fixture(scope="session")
def run_evaluate():
    """Run benchmarks/evaluate.py with the given arguments; its stdout, after checking it succeeded."""
    import subprocess

    def run(*args) -> str:
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "evaluate.py"), *map(str, args)],
                              capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout
    return run
