# periscope developer entry points. `vagrant/provision.sh` installs what these need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: test lint unit root vm test-vm demo bench install uninstall check

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

## test-vm: only the VM tier (QEMU guest, Debian 12's 6.1 kernel, the installed unit)
test-vm: vm

## install: periscoped into /opt/periscope/venv + systemd unit + /etc/periscope, and the
##          client on PATH as /usr/local/bin/periscope (root)
install:
	bash vagrant/provision.sh install

## uninstall: remove it again (the /usr/local/bin link only if it still points at our
##            venv); keeps /var/lib/periscope unless PURGE=1
uninstall:
	bash vagrant/provision.sh uninstall $(if $(PURGE),--purge)

## demo: start periscoped if none runs, trace a demo HTTP workload live (root; what
##       `provision.sh demo` runs after installing only what the demo needs)
demo:
	$(PY) -m collector.daemon.demo

bench:
	$(PY) -m bench

check:
	$(VENV)/bin/periscoped --check
