"""Helpers for the packaging and install tests: requirement files, copies of the source, fresh virtualenvs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# never installed by the plugin's requirements (dev tools, and what would make pip replace a user's torch)
NOT_RUNTIME = {"pytest", "playwright", "pyyaml", "scikit-image", "torchvision", "onnx2torch"}
# building virtualenvs takes minutes: always in CI (.ci/run sets CI=true), on request elsewhere
SLOW = os.environ.get("CI") == "true" or os.environ.get("PREFIQS_SLOW") == "1"
SLOW_REASON = "builds a virtualenv (minutes): runs under CI=true (.ci/run) or PREFIQS_SLOW=1"


def read_requirements(path: Path) -> dict:
    """name -> Requirement, for the requirement lines of a pip requirements file (no -r/-c lines)."""
    reqs = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            r = Requirement(line)
            reqs[canonicalize_name(r.name)] = r
    return reqs


def pins() -> dict:
    """name -> version pinned in constraints.txt."""
    return {n: next(iter(r.specifier)).version for n, r in read_requirements(ROOT / "constraints.txt").items()}


def lower_bounds() -> dict:
    """name -> the ``>=`` version of each runtime requirement: the oldest release the project claims."""
    return {n: next(s.version for s in r.specifier if s.operator == ">=")
            for n, r in read_requirements(ROOT / "requirements.txt").items()}


def source_copy(dest: Path) -> Path:
    """The files git would commit (tracked or new, not ignored), copied: builds never touch the checkout."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes((ROOT / f).read_bytes())
    return dest


class Venv:
    """A fresh virtualenv at ``path``, made by this interpreter's base Python."""

    def __init__(self, path: Path):
        self.path = Path(path)
        subprocess.run([sys.executable, "-m", "venv", str(self.path)], check=True, timeout=300)
        self.bin = self.path / "bin"
        self.python = self.bin / "python"

    def run(self, *args, timeout=1200, check=True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
        if check:
            assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def pip_install(self, *args, **kw) -> subprocess.CompletedProcess:
        return self.run(self.python, "-m", "pip", "install", "-q", *args, **kw)

    def installed(self) -> dict:
        """canonical name -> installed version."""
        out = self.run(self.python, "-m", "pip", "list", "--format=json").stdout
        return {canonicalize_name(p["name"]): p["version"] for p in json.loads(out)}
