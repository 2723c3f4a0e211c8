# Two commands do all set-up on a fresh machine (python3 and the package registries only):
#   make demo   create .venv, install, run the whole pipeline on the embedded demo dataset
#   make test   create .venv if missing, install, run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fakeproof-installed
export DVC_NO_ANALYTICS := 1
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo test test-fast check-params install bench clean-venv app leaderboard

$(STAMP): requirements.txt requirements-dev.txt requirements-app.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps torchattacks==3.5.1
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	dvc repro
	dvc metrics show

test: $(STAMP)
	$(PY) -m pytest -q -ra

check-params: $(STAMP)
	$(PY) -m fakeproof.params_check params.yaml

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

bench: $(STAMP)
	$(PY) benchmarks/bench_attacks.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_crop.py speed
	$(PY) benchmarks/bench_crop.py memory

# The web page (app/streamlit_app.py) on http://localhost:$(PORT), bound to $(ADDRESS) only.
PORT    ?= 8501
ADDRESS ?= 127.0.0.1
app: $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-app.txt
	$(PY) -m streamlit run app/streamlit_app.py --server.port $(PORT) --server.address $(ADDRESS) \
		--server.headless true --browser.gatherUsageStats false --client.toolbarMode viewer

# Pull-request report (Markdown on stdout): changed headline metrics, `dvc metrics diff --md`, and
# the plots of both revisions rendered into build/report/plots. `make report BASE=origin/main`.
BASE ?= main
.PHONY: report
report: $(STAMP)
	@$(VENV)/bin/fakeproof report --base $(BASE)

# The robust-detector leaderboard (README): ranks the experiments that exist, or first runs a grid:
#   make leaderboard ARGS="--grid model.name=smallcnn,mobilenet_v3_small --grid adv.method=pgd,trades"
ARGS ?= --from-exps
leaderboard: $(STAMP)
	@$(VENV)/bin/fakeproof leaderboard $(ARGS)

clean-venv:
	rm -rf $(VENV)
