# The two set-up commands: `make serve` (the auto-attendant) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test venv bench fuzz clean

$(BIN)/ivr: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/ivr

serve: venv
	$(BIN)/ivr serve

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
