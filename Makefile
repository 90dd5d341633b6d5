# The two set-up commands: `make serve` (the auto-attendant) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test venv bench fuzz mutate clean graphs

# _native.c: the compiled media path is built by this install (gcc and the Python headers).
$(BIN)/ivr: pyproject.toml simplesip/core/_native.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $@

venv: $(BIN)/ivr

serve: venv
	$(BIN)/ivr serve --config examples/first-run.yaml

test: venv
	$(BIN)/python -m pytest -q

# The shipped flows' pictures in docs/flows.md and docs/img/ (needs Graphviz: apt-get install graphviz).
graphs: venv
	$(BIN)/python docs/make_graphs.py

bench: venv
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info simplesip/core/_native*.so

# Long fuzzing runs (atheris), outside the test suite; figures in docs/security.md.
fuzz: venv
	$(BIN)/pip install -q -e ".[fuzz]"
	$(BIN)/python fuzz/make_corpus.py build/fuzz-corpus
	for h in sip:350000 sdp:200000 rtp:250000 auth:150000 flow:60000; do \
	  name=$${h%%:*}; runs=$${h##*:}; \
	  FUZZ_SUPPRESS_KNOWN=1 $(BIN)/python fuzz/fuzz_$$name.py -runs=$$runs -max_len=4096 \
	    -artifact_prefix=build/fuzz-corpus/$$name- build/fuzz-corpus/$$name || exit 1; \
	done

# Mutation testing of the protocol and media core (mutmut), outside the test suite; each module
# against its own unit tests, results kept in build/mutate/. Scores and survivors: docs/testing.md.
# One module: make mutate MODULES="g711 jitter".
mutate: venv
	$(BIN)/pip install -q -e ".[mutate]"
	$(BIN)/python tools/mutate.py $(MODULES)
