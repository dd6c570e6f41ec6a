# The two commands of the README: `make demo` (the main job) and `make test` (the suite).
# Each does the whole set-up on a fresh machine: virtualenv, dependencies, dataset.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test setup data bench clean docs-samples

setup: $(STAMP) data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[torch,dev]"
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist; installed when we may, else we say how.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "warning: could not install dataset-fashion-mnist; tests that need it will be skipped"; \
	else \
	  echo "note: Fashion-MNIST not found in $(FMNIST); run 'sudo apt-get install dataset-fashion-mnist'"; \
	fi

demo: setup
	$(VENV)/bin/jqodi demo

test: setup
	$(PY) -m pytest -q

# Re-run the command samples marked in README.md and docs/*.md (docs/interfaces.md); ARGS=--check
# lists the stale ones without writing.
docs-samples: setup
	$(PY) scripts/doc_samples.py $(ARGS)

bench: setup
	@echo "benchmarks: see README (each prints JSON)"; ls benchmarks/*.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
