# periscope developer entry points. `vagrant/provision.sh` installs what these need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: test lint unit root vm demo bench install uninstall check

## test: everything CI runs (lint, unit, root, vm)
test: lint unit root vm

lint:
	$(PY) -m ruff check collector probes redact tests bench
	$(PY) -m mypy

unit:
	$(PYTEST) tests/unit -q

root:
	$(PYTEST) tests/root -q

vm:
	bash tests/vm/run.sh

demo:
	$(PY) -m collector.demo

bench:
	$(PY) -m bench

check:
	$(VENV)/bin/periscoped --check
