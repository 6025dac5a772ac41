PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-all check bench soak clean

$(BIN)/strangler: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/strangler
	$(BIN)/strangler demo

test: $(BIN)/strangler
	$(BIN)/python -m pytest

# The suite on each supported Python the machine has (noxfile.py: 3.11, 3.12, 3.13, one virtualenv
# each under .venv/nox; a missing interpreter is skipped). NOX_ARGS="-s tests-3.13 -- tests/routing".
test-all: $(BIN)/strangler
	$(BIN)/nox $(NOX_ARGS)

check: $(BIN)/strangler
	$(BIN)/strangler check config/routes.yaml

# Not part of `make test`: wrk against strangler and its peers in one run (installs nginx and wrk
# with apt-get when missing); BENCH_ARGS="--quick" or "--rounds 3".
bench: $(BIN)/strangler
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Not part of `make test`: 10 minutes of mixed load with faults and reloads (SOAK_SECONDS to
# shorten), then the fuzz targets with a large budget (STRANGLER_FUZZ_EXAMPLES).
soak: $(BIN)/strangler
	$(BIN)/python -m soak
	STRANGLER_FUZZ_EXAMPLES=$${STRANGLER_FUZZ_EXAMPLES:-2000} $(BIN)/python -m pytest tests/fuzz

clean:
	rm -rf $(VENV) .pytest_cache
