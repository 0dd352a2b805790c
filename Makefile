# Shipyard: the two commands a newcomer needs.
#
#   make up     install (first time) and start the platform on http://127.0.0.1:8000
#   make test   install what the tests need and run the whole suite
#
# Everything goes into .venv (made from the system's /usr/bin/python3 so that the
# per-user system accounts can run it) and configurable-http-proxy into .venv/bin.

PYTHON ?= /usr/bin/python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: up test install lint bench clean

up: install
	$(BIN)/shipyard up

test: install
	$(BIN)/python -m tests.run

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "python3-venv is missing: apt-get install -y python3-venv"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	test -x $(BIN)/configurable-http-proxy || npm install --silent -g --prefix $(VENV) configurable-http-proxy@5
	touch $(STAMP)

lint: install
	$(BIN)/ruff check hub_ext server_ext tests bench config
	$(BIN)/ruff format --check hub_ext server_ext tests bench config

bench: install
	$(BIN)/python bench/spawn.py
	$(BIN)/python bench/envbuild.py
	$(BIN)/python bench/scheduler.py

clean:
	rm -rf $(VENV) .shipyard .shipyard-test .pytest_cache
