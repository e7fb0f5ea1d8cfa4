# Two entry points from a fresh clone: `make demo` and `make test`.
# Each creates .venv if it is missing and installs the project with its test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit integration clean browser screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mailer demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck browser
	$(BIN)/pytest

# The web inbox's browser tests drive Debian's Chromium. CI runs as root on
# Debian and installs it; elsewhere, say what to install.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Chromium for the browser tests (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else \
			echo "error: the browser tests need Chromium at $(CHROMIUM): run 'sudo apt-get install chromium chromium-driver' (Debian/Ubuntu)" >&2; \
			exit 1; \
		fi; \
	fi

unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

integration: $(STAMP) browser
	$(BIN)/pytest -m integration

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# The README's pictures of the web inbox (docs/inbox-*.png).
screenshots: $(STAMP) browser
	$(BIN)/python docs/screenshots.py
