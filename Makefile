# Single entry point. Every target sets up what it needs on a fresh clone.
# torch is installed first and pinned (TORCH), then lyabook, which keeps that build. Which
# build the pin gives depends on the index pip reads it from:
# - TORCH_INDEX empty (default): pip's configured index. On this project's CI and development
#   machines that serves a CPU wheel; from the public PyPI on Linux x86_64, torch==2.13.0 is a
#   CUDA build, several GB with its nvidia-* packages.
# - CPU only, public internet: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# - GPU: the CUDA build that matches the driver (nvidia-smi prints the newest CUDA version the
#   driver supports; pytorch.org's selector lists the builds), e.g.
#   make book TORCH_INDEX=https://download.pytorch.org/whl/cu128
# TORCH and TORCH_INDEX act only when .venv is created: run `make clean` to switch builds.
PYTHON      ?= python3
VENV        ?= .venv
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
PY          := $(VENV)/bin/python
NBVAL       := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg
# nbval re-executes the references, which write their results beside them: start from none
NBVAL_RUN   := rm -rf tests/notebooks/results && $(PY) -m pytest -q $(NBVAL) tests/notebooks

.PHONY: book render test references references-check notebooks bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -q -e ".[book,test]"
	touch $@

# Main job: execute every notebook (smoke on a CPU, full where CUDA is present) into out/notebooks
# (untracked) and build the book from those executed copies into out/book.
book: $(VENV)/.installed
	$(PY) -m lyabook run --profile $$($(PY) -c "import torch; print('full' if torch.cuda.is_available() else 'smoke')") \
		--device auto --out out/notebooks
	$(PY) -m lyabook build --executed out/notebooks --out out/book

# Render the committed notebooks as they are (what readers see), executing nothing.
render: $(VENV)/.installed
	$(PY) -m lyabook build --out out/rendered

# Tests: unit tests, chapter claims, reference consistency and the book build; then nbval
# re-executes the smoke-profile references and compares their tagged summaries.
test: $(VENV)/.installed
	$(PY) -m pytest -q tests
	$(NBVAL_RUN)

# Maintainers: regenerate the nbval references (smoke profile) after changing a notebook,
# and re-execute the committed notebooks at full scale.
references: $(VENV)/.installed
	$(PY) -m lyabook run --profile smoke --device cpu --out tests/notebooks

# Maintainers: the references must not depend on the CPU. MKL picks its kernels by CPU (AVX2,
# AVX-512, ...), which moves numbers computed along chaotic trajectories by about their standard
# error; re-run nbval under two other MKL code paths, as on another machine.
references-check: $(VENV)/.installed
	export MKL_CBWR=COMPATIBLE; $(NBVAL_RUN)
	export MKL_CBWR=AVX2; $(NBVAL_RUN)

notebooks: $(VENV)/.installed
	$(PY) -m lyabook run --profile full --device auto --out notebooks
	$(PY) -m lyabook.results manifest notebooks/results

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_lstm_spectrum.py

clean:
	rm -rf $(VENV) out .pytest_cache
