# Quick start: `make demo` (trace the arm64 reboot flow on the bundled miniature trees), `make test`.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: install demo test realtrees bench

install:
	$(PIP_INSTALL) -e '.[test]'

demo: install
	$(PYTHON) -m flowscan trace arm64-reboot

test: install
	$(PYTHON) -m pytest -q

# Real Linux/QEMU releases (built by ../shared/realtrees/get-real-trees; downloads on first use).
realtrees: install
	$(PYTHON) -m pytest -q -m realtrees

bench: install
	$(PYTHON) -m benchmarks
