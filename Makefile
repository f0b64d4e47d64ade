# downstream-scaling: `make run` (install, build the offline corpus, run the default sweep, write the report)
# and `make test` on a fresh machine with Python 3.10+ and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU machines: the pinned CPU wheel first, so nothing pulls a multi-GB CUDA build. GPU users install their
# own torch into $(VENV) first (or set TORCH_SPEC=); the install below keeps any torch already there.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
export DS_CACHE ?= $(CURDIR)/.cache
SWEEP ?= en_de
# make run/plan: independent tasks side by side, one process each (on 2 cores, 2 x 1 thread did the default
# sweep in 11.3 min against ~15 for one 2-thread process: docs/benchmarks.md). Left out when ARGS says
# anything about the executor.
WORKERS ?= 2
ARGS ?=
RESULTS ?=
STAMP := $(VENV)/.installed

.PHONY: install corpus run plan test test-slow test-slurm slurm report lint clean help gpu-bundle
help:
	@echo "make run | test | test-slow | test-slurm | slurm | report [SWEEP=en_de RESULTS=path] | plan | corpus | lint | clean"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

# Always asked: the builder returns at once when the corpus is there and of its version, and rebuilds an older one.
corpus: | $(STAMP)
	@$(PY) scripts/build_corpus.py --cache "$(DS_CACHE)"

EXEC_ARGS = $(if $(findstring executor,$(ARGS)),,executor.workers=$(WORKERS))

run: install corpus
	$(PY) -m pipeline +sweep=$(SWEEP) $(EXEC_ARGS) $(ARGS)
	@if [ -f reports/$(SWEEP)/report.html ] && [[ "$(ARGS)" != *paths.reports=* ]]; then \
		echo "report: $(CURDIR)/reports/$(SWEEP)/report.html"; fi

plan: install corpus
	$(PY) -m pipeline +sweep=$(SWEEP) stage=plan $(EXEC_ARGS) $(ARGS)

# pytest exits 5 when it collects no tests: not a failure for a suite that is still growing.
test: install corpus
	$(PY) -m pytest -q -m "not slow and not slurm" $(ARGS) || [ $$? -eq 5 ]

# The slow suite includes the SLURM tests (marked slurm and slow): they start a private single-node cluster
# (scripts/slurm_local.sh) and skip, saying why, where its packages are missing and cannot be installed.
test-slow: install corpus
	$(PY) -m pytest -q -m "slow" --durations=15 $(ARGS) || [ $$? -eq 5 ]

# The Debian packages of a local single-node SLURM (slurm-wlm, munge, slurmdbd, mariadb-server); needs root.
slurm:
	scripts/slurm_local.sh install

test-slurm: install corpus
	$(PY) -m pytest -q -m "slurm" $(ARGS) || [ $$? -eq 5 ]

report: install
	$(PY) -m pipeline +sweep=$(SWEEP) stage=report $(if $(RESULTS),paths.results=$(abspath $(RESULTS))) $(ARGS)

# What scripts/gpu_check.sh needs on a GPU machine that reaches no registry (docs/cluster.md): the wheels of
# gpu-requirements.txt for its Python 3.12 (exact pins of everything carried and of its whole dependency closure,
# made by scripts/pin_gpu_requirements.py from this environment; --no-deps only stops pip from adding the image's
# own numpy/pandas/pyarrow, every dependency is pinned in the file), and the en-de slice of the corpus.
# Carry both: [".whl", ".cache/l10n-en-de.tar.xz"]; there pip resolves them with their dependencies and checks.
gpu-bundle: corpus
	rm -rf .whl && mkdir -p .whl
	grep -v '^antlr4-python3-runtime' gpu-requirements.txt > .whl/binary.txt
	$(PIP) download --quiet --no-deps --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl -r .whl/binary.txt
	$(PIP) wheel --quiet --no-deps -w .whl $$(grep '^antlr4-python3-runtime==' gpu-requirements.txt)
	rm .whl/binary.txt
	tar -cJf $(DS_CACHE)/l10n-en-de.tar.xz -C $(DS_CACHE) l10n/pairs/en-de l10n/mono/en.jsonl l10n/mono/de.jsonl \
		l10n/manifest.json
	@du -sh .whl $(DS_CACHE)/l10n-en-de.tar.xz

lint: install
	$(VENV)/bin/ruff check pipeline scripts tests

clean:
	rm -rf artifacts reports outputs multirun
