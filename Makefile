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

.PHONY: venv demo test lint broker stop-broker clean kernel lab student

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The notebooks name the kernel "gradelab", so papermill and JupyterLab always
# run them with this virtualenv's Python and the project installed.
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/gradelab/kernel.json

$(KERNEL_SPEC): $(VENV)/.installed
	$(BIN)/python -m ipykernel install --sys-prefix --name gradelab \
	  --display-name "Python (gradelab)"

kernel: $(KERNEL_SPEC)

# The virtualenv, with the project installed and its Jupyter kernel named.
venv: $(VENV)/.installed $(KERNEL_SPEC)

# JupyterLab on the course, with the local broker running. Jupyter does not
# run as root without --allow-root, which containers and course VMs need.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

lab: venv kernel
	$(GRADELAB) broker start
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# The student version of the course: otter-grader's assign removes the
# solutions and keeps the check cells; the result is in build/student/.
# One Python process runs assign for every notebook, because importing otter
# takes several seconds.
student: venv
	rm -rf build/student build/otter
	$(BIN)/python -c 'import pathlib, otter.assign; \
	  [otter.assign.main(str(p), f"build/otter/{p.stem}") \
	   for p in sorted(pathlib.Path("notebooks").glob("[0-9]*.ipynb"))]'
	mkdir -p build/student
	cp build/otter/*/student/*.ipynb build/student/
	cp -r notebooks/data build/student/

broker: venv
	$(GRADELAB) broker start

stop-broker: venv
	$(GRADELAB) broker stop

demo: broker
	$(GRADELAB) produce --simulate 3000 --seed 7
	$(GRADELAB) averages --by subject --from-beginning --idle-timeout 3

# Benchmark gradelab against bare kafka-python and Kafka's Java tools on the
# local broker (a few minutes): prints the table, writes
# benchmarks/results.json and benchmarks/ratios.png. Pass BENCH_ARGS=--quick
# for a shorter run.
BENCH_ARGS ?=
.PHONY: bench
bench: venv kernel
	$(GRADELAB) broker start
	$(BIN)/python benchmarks/run.py --notebooks --chart benchmarks/ratios.png \
	  $(BENCH_ARGS)

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

test: venv kernel test-tools lint
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	-$(GRADELAB) broker stop
	rm -rf build .pytest_cache .ruff_cache
