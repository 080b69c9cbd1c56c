# heatgate: two commands do all the set-up on a fresh machine.
#   make test   create .venv, install heatgate with its test extra, install Mosquitto if it is
#               missing (as root, from Debian's packages), then ruff, mypy and pytest.
#   make demo   the whole system on this machine (see README.md); DEMO_ARGS="--duration-s 60" to stop by itself.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: test lint typecheck pytest install system-deps demo bench schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "heatgate needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

system-deps:
	@if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; \
	else \
		echo "mosquitto is not installed; run: sudo apt-get install mosquitto mosquitto-clients" >&2; exit 1; \
	fi
	@if command -v nats-server >/dev/null 2>&1 || test -x /usr/sbin/nats-server; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing nats-server from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null; \
	else \
		echo "nats-server is not installed; run: sudo apt-get install nats-server" >&2; exit 1; \
	fi

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy

pytest: install system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: install system-deps lint typecheck pytest

demo: install system-deps
	$(PY) -m agent demo $(DEMO_ARGS)

# Every benchmark with short settings and one table of figures (~5 min); BENCH_ARGS="--only agent,peer".
bench: install system-deps
	$(PY) bench/run_all.py $(BENCH_ARGS)

schemas: install
	$(PY) -m agent.schemas --write

clean:
	rm -rf build *.egg-info .mypy_cache .pytest_cache .ruff_cache
