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
	$(BIN)/unimat campaign --campaign demo --source perov_5 --profile demo

# the tests keep their Prefect runs in .prefect-test-gw<N> (tests/conftest.py), away from the demo's .prefect;
# two xdist workers, one per core, the server and cluster tests together on one of them (tests/conftest.py);
# the slowest tests are listed at the end: the suite must stay under 15 minutes on 2 cores
TEST_WORKERS ?= 2
test: $(STAMP)
	PREFECT_HOME=$(CURDIR)/.prefect-test $(BIN)/python -m pytest -q -rs --durations=15 \
	  --numprocesses $(TEST_WORKERS) --dist loadgroup

# Prefect server + UI on loopback (SQLite under $(PREFECT_HOME)); `make ui UI_PORT=4300` for another port.
# Remote users: an SSH tunnel (ssh -L 4200:127.0.0.1:4200 host); a shared server: deployments/README.md.
UI_PORT ?= 4200
ui: $(STAMP)
	PREFECT_SERVER_UI_API_URL=http://127.0.0.1:$(UI_PORT)/api PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false \
	  $(BIN)/prefect server start --host 127.0.0.1 --port $(UI_PORT)

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/bench_representation.py

clean:
	rm -rf $(VENV) .prefect runs
