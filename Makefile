# sparkdock: `make test` and `make demo` each set up what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TIMED  := bash scripts/timed.sh
# Each step of `make test` appends its time here; the table is printed at the end.
export SPARKDOCK_TIMINGS ?= $(CURDIR)/build/timings.txt

.PHONY: help venv docker browser test test-fast lint demo lab bench clean timings-reset

help:
	@echo "make test   - set up venv + Docker engine + image, then run the whole test suite"
	@echo "make demo   - launch a real cluster, query it and monitor it end to end"
	@echo "make lab    - start JupyterLab with the sparkdock extension"
	@echo "make bench  - run the benchmarks under bench/ and record the results"

# Reinstalled only when pyproject.toml changes (its hash is kept in the venv).
venv:
	@$(TIMED) venv bash scripts/venv.sh $(PYTHON) $(VENV)

# The Docker engine and the sparkdock image. Outside CI a machine without Docker still runs the
# local-backend tests (docker tests then say loudly why they did not run); with CI=true it fails.
docker:
	@bash scripts/setup-docker.sh || { \
	  if [ "$$CI" = "true" ]; then echo "FATAL: Docker engine/image could not be set up (CI=true)"; exit 1; fi; \
	  echo "WARNING: Docker is not available; Docker tests will not run"; }

# Debian's chromium for the browser test (no browser download: playwright drives /usr/bin/chromium).
browser:
	@$(TIMED) browser bash scripts/setup-browser.sh || { \
	  if [ "$$CI" = "true" ]; then echo "FATAL: chromium could not be installed (CI=true)"; exit 1; fi; \
	  echo "WARNING: chromium is not available; the browser test will not run"; }

lint: venv
	@$(TIMED) lint $(VENV)/bin/ruff check src tests bench

# Prints the 25 slowest tests and, at the end, the time of each set-up step.
test: timings-reset venv docker browser lint
	@$(TIMED) tests $(VENV)/bin/pytest --durations=25; rc=$$?; bash scripts/timings-report.sh; exit $$rc

timings-reset:
	@rm -f "$(SPARKDOCK_TIMINGS)"

test-fast: venv
	$(VENV)/bin/pytest -m "not docker and not spark and not browser and not install"

demo: venv docker
	$(PY) -m sparkdock.demo

lab: venv docker
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks

bench: venv docker
	$(PY) bench/time_to_sql.py
	$(PY) bench/job_overhead.py
	$(PY) bench/widget_latency.py
	$(PY) bench/health_latency.py
	$(PY) bench/loop_stall.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist
