# gradelab: two commands on a fresh clone.
#   make demo   start the local Kafka broker, stream simulated scores, print averages
#   make test   install what the tests need, start the broker, run ruff and pytest
# Everything is installed by these targets: Python packages into .venv, the
# Kafka jars through Maven into .gradelab/, and Xvfb through apt for the
# dashboard tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
GRADELAB := $(BIN)/gradelab
PYTEST_ARGS ?=

.PHONY: venv demo test lint broker stop-broker clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

broker: venv
	$(GRADELAB) broker start

stop-broker: venv
	$(GRADELAB) broker stop

demo: broker
	$(GRADELAB) produce --simulate 3000 --seed 7
	$(GRADELAB) averages --by subject --from-beginning --idle-timeout 3

# Xvfb runs the dashboard's real Tk window in the tests; xauth is needed by
# xvfb-run. Installed once through apt when missing.
test-tools:
	@command -v Xvfb >/dev/null && command -v xauth >/dev/null || { \
	  echo "Installing Xvfb through apt..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq xvfb xauth >/dev/null; }

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

test: venv test-tools lint
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	-$(GRADELAB) broker stop
	rm -rf build .pytest_cache .ruff_cache
