# The two commands of the README: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-uftp test lint typecheck unit bench install clean

# pip prints what it downloads and installs (the first run takes a minute or two)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "everkit needs Python >= 3.11")'
	@echo "[1/3] creating $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[2/3] updating pip"
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "[3/3] installing everkit, its development tools and the UFTP adapter into $(VENV)"
	$(BIN)/python -m pip install -e '.[dev,uftp]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@tools/ensure-mosquitto --optional
	$(BIN)/everkit demo --config config/sil-dc.yaml

# the demo with a DSO that buys flexibility during the session (docs/uftp.md)
demo-uftp: $(STAMP)
	@tools/ensure-mosquitto --optional
	$(BIN)/everkit demo --uftp --config config/sil-dc.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	@tools/ensure-mosquitto
	$(BIN)/pytest

bench: $(STAMP)
	@tools/ensure-mosquitto
	$(BIN)/python bench/framework_roundtrip.py
	$(BIN)/python bench/psu_latency.py
	$(BIN)/python bench/ocpp_bridge.py --evses 8 --duration 60
	$(BIN)/python bench/smart_charging.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
