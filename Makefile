# One-command set-up: `make smoke` (CPU sweep on the embedded corpus) and `make test`.
# TORCH pins the PyTorch version; here pip takes the CPU wheel on local disk, on a Linux GPU host
# PyPI serves the CUDA build of the same version.  Override: `make install TORCH=2.11.0`.
PYTHON ?= python3
TORCH ?= 2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TORCH)

.PHONY: install smoke test cpu-sweep clean
install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

smoke: install
	$(PY) -m sweep +experiment=smoke

# one pytest worker per core, a test file per worker at a time (its module fixtures built once): 20 min -> 12 on 2 cores
test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n auto --dist loadfile

# benchmarks/cpu_sweep/: isoFLOP sweeps on prose and code from ../shared/corpora (~1-1.5 h on 2 cores)
cpu-sweep: install
	PY=$(PY) scripts/cpu_sweep.sh

clean:
	rm -rf outputs .pytest_cache
