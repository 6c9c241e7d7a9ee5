# Two commands on a fresh machine: `make demo` (the main job on the embedded default) and `make test`.
# Each creates .venv and installs what it needs (torch and triton pinned by constraints.txt).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
# DeepSpeed installs as pure Python and builds no op at run time: we pass torch's AdamW in, and our runs tell its CPU
# process group to skip its shared-memory op, which only its inference layers use (vlbert_fast/engine/distributed.py).
export DS_BUILD_OPS := 0

.PHONY: install demo test lint bench bench-static clean check-cuda

# The extension's sources (csrc/): editing one rebuilds vlbert_fast._C on the next `make install` / `make test`.
CSRC := $(wildcard csrc/*.cpp csrc/*.cu csrc/*.h)

$(VENV)/.installed: setup.py requirements.txt requirements-dev.txt constraints.txt $(CSRC)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -r requirements-dev.txt
	$(PIP) install -q -c constraints.txt --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vlbert-fast pretrain

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

# The benchmark suites: `make bench` on a GPU; arguments through BENCH, e.g. BENCH="all --smoke" on a CPU.
BENCH ?=
bench: $(VENV)/.installed
	$(BIN)/vlbert-fast bench $(BENCH)

# The static sm_90 scorecard (no GPU needed): benchmarks/results/sm90_static.csv and .md; BENCH="--smoke" for CI's subset.
bench-static: $(VENV)/.installed
	$(BIN)/vlbert-fast bench static $(BENCH)

lint: $(VENV)/.installed
	$(BIN)/ruff check vlbert_fast benchmarks tests setup.py
	$(BIN)/ruff format --check vlbert_fast benchmarks tests setup.py

# Compile-check the CUDA sources with nvcc (object files for sm_90 only; no GPU needed). CI runs it where nvcc is.
check-cuda: $(VENV)/.installed
	csrc/check_cuda_compile.sh $(BIN)/python

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache vlbert_fast/_C*.so
