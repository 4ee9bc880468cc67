# Quick start on a fresh clone:  make demo  |  make test   (each creates .venv on first use)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Without CUDA this takes the CPU build (on our machines pip finds the CPU wheel on local disk).
# Elsewhere, pass e.g. TORCH_SPEC="torch --index-url <your CPU wheel index>".
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test demo bench-quick clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --disable-pip-version-check -q $(TORCH_SPEC)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q -n 2

demo: setup
	$(PY) -m distillab data fetch mnist > /dev/null
	$(PY) -m distillab demo --out runs/demo --overwrite
	@echo "report: runs/demo/report.md"

clean:
	rm -rf $(VENV) runs .pytest_cache
