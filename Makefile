# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Each creates/updates .venv and installs the project with the versions in constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,metrics,mlip,dft,cluster
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: setup demo test ui benchmarks clean

$(STAMP): pyproject.toml constraints.txt system-packages.txt
	tools/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/unimat campaign --campaign demo --source perov_5

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

ui: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/bench_representation.py

clean:
	rm -rf $(VENV) .prefect runs
