# Two entry points from a fresh clone: `make demo` and `make test`.
# Each creates .venv if it is missing and installs the project with its test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit integration clean browser screenshots postgres-server

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

test: lint typecheck browser postgres-server
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

integration: $(STAMP) browser postgres-server
	$(BIN)/pytest -m integration

# The queue's tests start a throwaway PostgreSQL (mailer/testing/postgres.py).
# Its server binaries: Debian's, installed here if missing and we are root
# (CI is); otherwise the pip-installable pgserver, into .venv.
FIND_PG := $(BIN)/python -c "from mailer.testing.postgres import find_bindir; find_bindir()"
postgres-server: $(STAMP)
	@$(FIND_PG) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's postgresql package for the queue's tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "installing pgserver (a PostgreSQL server on pip) for the queue's tests"; \
	    $(BIN)/python -m pip install --quiet 'pgserver>=0.1.4,<0.2'; \
	  fi; \
	  $(FIND_PG); }

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# The README's pictures of the web inbox (docs/inbox-*.png).
screenshots: $(STAMP) browser
	$(BIN)/python docs/screenshots.py
