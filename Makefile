# Everything a fresh clone needs: `make test` and `make demo` build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-all demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# PyPI's torchvision does not import beside the machine's torch 2.13 CPU wheel; this pair works.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(VENV)/bin/pytest -q -m "not slow"

test-all: install
	$(VENV)/bin/pytest -q

demo: install
	$(VENV)/bin/fmctl finetune

bench: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) tests/bench/trainer_bench.py
	$(PY) tests/bench/trainer_bench.py --ablate
	$(PY) tests/bench/trainer_bench.py --accuracy
	$(PY) tests/bench/trainer_bench.py --checkpointing
	$(PY) tests/bench/trainer_bench.py --compile
	$(PY) tests/bench/trainer_bench.py --dropout
	$(PY) tests/bench/prepare_bench.py
	$(PY) tests/bench/distributed_bench.py
	$(PY) tests/bench/export_bench.py
	$(PY) tests/bench/int8_bench.py
	$(PY) tests/bench/generate_bench.py
	$(PY) tests/bench/vision_bench.py

clean:
	rm -rf $(VENV) runs multirun .pytest_cache
