# Two commands set everything up on a fresh machine:  make demo  /  make test
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
SEED   ?= 1
DEMO   ?= demo
# small CPU models: one thread per process avoids oversubscribing the 2 cores (numpy BLAS + torch)
export OMP_NUM_THREADS ?= 1

.PHONY: venv demo test test-all bench reproduce clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/b2bkg demo --out $(DEMO) --seed $(SEED)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m ""

bench: $(STAMP)
	$(PY) benchmarks/run.py --out benchmarks/results.json

reproduce: $(STAMP)
	$(VENV)/bin/b2bkg reproduce --out reproduce --seed $(SEED)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
