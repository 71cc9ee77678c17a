# vtr: `make demo` runs the main job end to end, `make test` installs and runs the checks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test lint demo bench wheel clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-installs when the dependency list changes.
$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -q -c constraints.txt -e ".[dev,distill,serve]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/pytest -q -m "not gpu and not slow and not postgres and not ray and not browser" --timeout 600

demo: install
	$(VENV)/bin/vtr demo --out demo_out

# A pure-Python wheel of vtr in .whl/, for CUDA machines that get the code without an install step.
wheel: install
	rm -rf .whl && $(PIP) wheel -q --no-deps --no-build-isolation -w .whl .

# GPU tests + benchmarks on a CUDA machine (results in benchmarks/results/): see benchmarks/device_run.sh.
bench: wheel
	bash benchmarks/device_run.sh all

clean:
	rm -rf $(VENV) build *.egg-info demo_out
