# periscope developer entry points. `vagrant/provision.sh` installs what these need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: test lint unit root vm test-vm demo bench install uninstall check

## test: everything CI runs (lint, unit, root, vm). The VM tier's guest image (~4 min to
##       build when its recipe changed) is built in the background while the other tiers run:
##       it needs only the recipe, not their results.
VM_IMAGE_LOG := tests/vm/.cache/image-build.log
test:
	@mkdir -p $(dir $(VM_IMAGE_LOG)); \
	bash tests/vm/run.sh image >$(VM_IMAGE_LOG) 2>&1 & img=$$!; \
	trap 'kill $$img 2>/dev/null || true' EXIT; \
	$(MAKE) --no-print-directory lint unit root || exit $$?; \
	echo "== vm image, prepared while the tiers above ran ($(VM_IMAGE_LOG)):"; \
	wait $$img || true; grep -E '^(\[vm|SKIP|FAIL)' $(VM_IMAGE_LOG) || true; \
	$(MAKE) --no-print-directory vm

lint:
	$(PY) -m ruff check collector probes redact tests bench
	$(PY) -m mypy

## unit: the suite, then the L7 parts again on the sources of what mypyc compiled
unit:
	$(PYTEST) tests/unit -q
	PERISCOPE_PURE=1 $(PYTEST) tests/unit/l7 tests/unit/capture tests/unit/serve \
		tests/unit/test_native.py -q

root:
	$(PYTEST) tests/root -q --durations=12

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
