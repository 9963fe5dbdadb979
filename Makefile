# Two entry points matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest screenshots bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Runs the shipped demo offline: the TUI on a terminal, headless lines otherwise.
# Exit code 4 means "a loop needs attention": the demo's stuck loop does that on purpose.
demo: $(STAMP)
	@$(BIN)/loopvisor loops.toml; code=$$?; \
	if [ $$code -eq 4 ]; then echo "demo finished: exit code 4 (a loop waits for a person, as designed)"; \
	else exit $$code; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py

bench: $(STAMP)
	$(BIN)/python benchmarks/journal_write_rate.py
	$(BIN)/python benchmarks/tui_latency.py
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .loopvisor .pytest_cache .mypy_cache .ruff_cache
