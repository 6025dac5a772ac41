PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test check bench soak clean

$(BIN)/strangler: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/strangler
	$(BIN)/strangler demo

test: $(BIN)/strangler
	$(BIN)/python -m pytest

check: $(BIN)/strangler
	$(BIN)/strangler check config/routes.yaml

clean:
	rm -rf $(VENV) .pytest_cache
