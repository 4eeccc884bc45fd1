# The two commands of the README: `make run` and `make test`. Each sets up what it
# needs (virtual environment, Python packages, Debian packages) and then runs.
VENV ?= .venv
PORT ?= 8000
METRICS_PORT ?= 9464
PY := $(VENV)/bin/python
export VENV PORT METRICS_PORT

.PHONY: run test setup setup-tests lint typecheck test-unit test-integration test-quality stop bench render

setup:
	@bash scripts/setup.sh

# the test tools too: Debian's chromium for the browser tests
setup-tests:
	@SETUP_TESTS=1 bash scripts/setup.sh

run: setup
	@bash scripts/run.sh

stop:
	@bash scripts/stop.sh

lint: setup
	$(VENV)/bin/ruff check services deployments tests load_tests scripts
	$(VENV)/bin/ruff format --check services deployments tests load_tests scripts

typecheck: setup
	$(VENV)/bin/mypy

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup-tests
	$(PY) -m pytest -q tests/integration

test-quality: setup
	$(PY) -m pytest -q tests/quality

# Screenshots of the browser tests land in $(PIXSERVE_ARTIFACTS) (default var/test-artifacts).
test: setup-tests lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 tests

bench: setup
	$(PY) load_tests/bench_upscale.py --model tiny --requests 16 --size 512

render: setup
	$(PY) scripts/chart_readme.py
	$(PY) scripts/render_k8s.py
