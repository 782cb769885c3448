# make demo: set up .venv and run the main job on bundled sample data.
# make test: install the test extras and run every test (and every rule file's own tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: demo test test-python lint bench sample clean fuzz

# The tests run in four processes (pytest-xdist): the kill tests, fakes and servers wait much of the time, so four
# keep two cores busy.
# PYTEST_ARGS adds to them (make test PYTEST_ARGS="-k clio"); TEST_PROCESSES=0 runs them in this one process.
TEST_PROCESSES ?= 4
PYTEST_ARGS ?=
PYTEST := -m pytest -q -n $(TEST_PROCESSES) $(PYTEST_ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/ocgate rules check rules/acme-corp.yaml
	$(BIN)/ocgate demo

test: $(TSTAMP)
	$(BIN)/ruff check engine api connectors rules tests bench
	$(BIN)/lint-imports
	$(BIN)/ocgate rules test rules/
	$(BIN)/python $(PYTEST)

# make test-python PY=3.13: every test on another Python, in its own .venv-3.13 (python3.13 on PATH, or pyenv's).
test-python:
	@test -n "$(PY)" || { echo "usage: make test-python PY=3.12" >&2; exit 2; }
	@test -x .venv-$(PY)/bin/python || $$(.ci/python-for $(PY)) -m venv .venv-$(PY)
	@test -f .venv-$(PY)/.installed-test -a .venv-$(PY)/.installed-test -nt pyproject.toml || { \
		.venv-$(PY)/bin/python -m pip install --quiet --upgrade pip && \
		.venv-$(PY)/bin/python -m pip install --quiet -e '.[test]' && touch .venv-$(PY)/.installed-test; }
	.venv-$(PY)/bin/python --version
	.venv-$(PY)/bin/ocgate rules test rules/
	.venv-$(PY)/bin/python $(PYTEST)
# make fuzz: the schemathesis tests of tests/api/test_fuzz.py, longer (more examples and scenarios).
fuzz: $(TSTAMP)
	OCGATE_FUZZ_EXAMPLES=$${OCGATE_FUZZ_EXAMPLES:-200} OCGATE_FUZZ_SCENARIOS=$${OCGATE_FUZZ_SCENARIOS:-300} \
		OCGATE_FUZZ_STEPS=$${OCGATE_FUZZ_STEPS:-20} $(BIN)/python -m pytest -q tests/api/test_fuzz.py

lint: $(TSTAMP)
	$(BIN)/ruff check engine api connectors rules tests bench
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench.engine_bench
	$(BIN)/python -m bench.ledes_bench

sample: $(STAMP)
	$(BIN)/ocgate sample --count 300 --seed 7 -o engine/data/samples/acme-2026-03.jsonl

clean:
	rm -rf $(VENV) .venv-3.* build *.egg-info .pytest_cache .ruff_cache .hypothesis
