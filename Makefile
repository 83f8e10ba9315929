# Single entry point. Every target sets up what it needs on a fresh clone.
# torch is installed first and pinned: a bare `pip install torch` pulls several GB of CUDA
# packages. Override for a GPU machine, e.g.  make test TORCH="torch==2.13.0 --index-url ...".
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python

.PHONY: test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

test: $(VENV)/.installed  ## run the test suite (CPU, a few minutes)
	$(PY) -m pytest -q

bench: $(VENV)/.installed  ## LSTM spectrum benchmark; prints ratios, writes benchmarks/results/
	$(PY) benchmarks/bench_lstm_spectrum.py

clean:
	rm -rf $(VENV) .pytest_cache
