# Two entry points matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest screenshots bench bench-quick clean

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

# 4 workers on any machine: most tests wait on child processes, not on a core
# (2 cores: ~100 s instead of ~300 s serially).
pytest: $(STAMP)
	$(BIN)/pytest -n 4

test: lint typecheck pytest

screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py

# Benchmarks print one JSON object each (benchmarks/README.md); the issue-12 ones also
# keep it in benchmarks/results/. `bench` is the full set (minutes); `bench-quick` runs
# each script small (< 60 s each on 2 cores). The plot needs the bench extra (matplotlib).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/journal_write_rate.py
	$(BIN)/python benchmarks/tui_latency.py
	$(BIN)/python benchmarks/reaper_scan.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/output_path.py
	$(BIN)/python benchmarks/cpumeter_scan.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/idle.py
	$(BIN)/python benchmarks/api_path.py
	$(BIN)/python benchmarks/resume.py
	$(BIN)/python benchmarks/checkpoint_cost.py
	$(BIN)/python benchmarks/plot.py

bench-quick: $(BENCH_STAMP)
	$(BIN)/python benchmarks/journal_write_rate.py --events 20000 --pace-events 10000
	$(BIN)/python benchmarks/tui_latency.py --presses 20 --seconds 2
	$(BIN)/python benchmarks/reaper_scan.py --repeat 10
	$(BIN)/python benchmarks/overhead.py --quick
	$(BIN)/python benchmarks/output_path.py --quick
	$(BIN)/python benchmarks/cpumeter_scan.py --quick
	$(BIN)/python benchmarks/scale.py --quick
	$(BIN)/python benchmarks/idle.py --quick
	$(BIN)/python benchmarks/api_path.py --quick
	$(BIN)/python benchmarks/resume.py --quick
	$(BIN)/python benchmarks/checkpoint_cost.py --iterations 10
	$(BIN)/python benchmarks/plot.py --quick

clean:
	rm -rf $(VENV) .loopvisor .pytest_cache .mypy_cache .ruff_cache
