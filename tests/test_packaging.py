"""Packaging: the runtime requirements are ranges that agree with fiftyone.yml, pyproject.toml and the
exact pins in constraints.txt; the wheel carries every file of prefiqs_core and the ``prefiqs`` command;
and (CI) ``pip install .`` in a clean virtualenv gives a working ``prefiqs`` without FiftyOne."""
import csv
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from venvs import NOT_RUNTIME, ROOT, SLOW, SLOW_REASON, Venv, pins, read_requirements, source_copy

RUNTIME = read_requirements(ROOT / "requirements.txt")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_runtime_requirements_are_ranges_with_a_lower_bound_and_no_test_tools():
    assert "torch" in RUNTIME and "fiftyone" in RUNTIME
    for name, req in RUNTIME.items():
        ops = {s.operator for s in req.specifier}
        assert ">=" in ops, f"{name}: no lower bound"
        assert not ops & {"==", "===", "~="}, f"{name}: {req.specifier} is a pin, not a range"
    assert not NOT_RUNTIME & set(RUNTIME)


def test_fiftyone_yml_asks_for_the_same_fiftyone_as_requirements_txt():
    spec = yaml.safe_load((ROOT / "fiftyone.yml").read_text())
    assert Requirement("fiftyone" + spec["fiftyone"]["version"]).specifier == RUNTIME["fiftyone"].specifier


def test_the_pinned_environment_lies_inside_every_declared_range():
    pinned = pins()
    deps = [Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    deps += [Requirement(d) for ds in PYPROJECT["project"]["optional-dependencies"].values() for d in ds]
    for req in list(RUNTIME.values()) + deps:
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} not in {req}"


def test_every_dev_requirement_is_pinned():
    # make setup installs requirements-dev.txt with -c constraints.txt: unpinned names would float
    pinned = pins()
    for name in read_requirements(ROOT / "requirements-dev.txt"):
        assert name in pinned, f"{name} is not pinned in constraints.txt"


def test_library_dependencies_are_the_runtime_ranges_without_fiftyone():
    deps = {canonicalize_name(r.name): r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
    assert "fiftyone" not in deps and "torch" in deps
    for name, req in deps.items():
        assert name in RUNTIME, f"{name} is a library dependency but not in requirements.txt"
        assert req.specifier == RUNTIME[name].specifier, f"{name}: {req.specifier} != {RUNTIME[name].specifier}"


def test_versions_agree():
    spec = yaml.safe_load((ROOT / "fiftyone.yml").read_text())
    assert PYPROJECT["project"]["version"] == spec["version"]
    assert PYPROJECT["project"]["scripts"]["prefiqs"] == "prefiqs_core.cli:main"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("prefiqs-*.whl")
    return whl


def test_wheel_holds_every_file_of_prefiqs_core_and_nothing_of_the_plugin(wheel):
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "prefiqs_core"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    packaged = {n for n in names if not n.startswith("prefiqs-")}
    assert set(tracked) and set(tracked) <= packaged, sorted(set(tracked) - packaged)
    assert all(n.startswith("prefiqs_core/") for n in packaged), sorted(packaged)
    assert "prefiqs = prefiqs_core.cli:main" in entry_points


@pytest.mark.skipif(not SLOW, reason=SLOW_REASON)
def test_pip_install_in_a_clean_venv_gives_a_working_prefiqs_command(tmp_path):
    venv = Venv(tmp_path / "venv")
    py, prefiqs = venv.python, venv.bin / "prefiqs"
    # `pip install .`; torch 2.13.0 (CPU build, inside the range) instead of the 5.5 GB CUDA build
    venv.pip_install(".", "torch==2.13.0", cwd=source_copy(tmp_path / "src"))
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=600)  # never the checkout's prefiqs_core
    helps = [subprocess.run(cmd + ["score", "--help"], **run) for cmd in ([str(prefiqs)],
                                                                         [str(py), "-m", "prefiqs_core"])]
    assert [h.returncode for h in helps] == [0, 0], helps[0].stderr[-2000:]
    assert "--backbone" in helps[0].stdout and helps[0].stdout == helps[1].stdout
    photo = ROOT / "data" / "photos" / "obama.jpg"
    assert photo.exists(), "run `make assets`"
    scored = subprocess.run([str(prefiqs), "score", str(photo), "--out", "scores.csv", "--quiet"], **run)
    assert scored.returncode == 0, scored.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert len(rows) == 1 and 0 < float(rows[0]["quality"]) <= 1, rows
    where = subprocess.run([str(py), "-c", "import prefiqs_core.cli, importlib.util as u; "
                            "print(prefiqs_core.cli.__file__, u.find_spec('fiftyone'))"], **run)
    cli, fiftyone = where.stdout.split()
    assert Path(cli).is_relative_to(venv.path) and fiftyone == "None"  # the installed copy, and no FiftyOne
    assert "torchvision" not in venv.installed()
