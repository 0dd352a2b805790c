# Shipyard: the two commands a newcomer needs.
#
#   make up     install (first time) and start the platform on http://127.0.0.1:8000
#   make test   install what the tests need and run the whole suite
#
# Everything goes into .venv (made from the system's /usr/bin/python3 so that the
# per-user system accounts can run it) and configurable-http-proxy into .venv/bin.
# The JupyterLab extension (labextension/) is built with the venv's jlpm into
# server_ext/labextension whenever its sources change, and linked into the venv's
# share/jupyter/labextensions so its JupyterLab loads the build (`make labextension`).

PYTHON ?= /usr/bin/python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

# the JupyterLab extension: its sources, its build (the wheel's shared-data), and where
# the venv's JupyterLab looks for it
LABEXT_BUILT   = server_ext/labextension/package.json
LABEXT_SOURCES = labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
                 labextension/.yarnrc.yml labextension/install.json \
                 $(shell find labextension/src labextension/style -type f 2>/dev/null)
LABEXT_LINK    = $(VENV)/share/jupyter/labextensions/shipyard-jupyterlab
JLPM           = PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/jlpm

.PHONY: up test install test-packages labextension lint bench clean

up: install
	$(BIN)/shipyard up

test: install test-packages
	$(BIN)/python -m tests.run

# Debian packages only the tests use (never installed by `make up`): slapd, the OpenLDAP
# server the directory tests start with their own config on a free port. Its postinst is
# told to make no default directory, so no system instance is configured or started.
test-packages:
	@test -x /usr/sbin/slapd || { export DEBIAN_FRONTEND=noninteractive; \
		echo "slapd slapd/no_configuration boolean true" | debconf-set-selections; \
		apt-get install -y -q slapd || { apt-get update -q && apt-get install -y -q slapd; }; } \
		|| { echo "slapd is missing: apt-get install -y slapd"; exit 1; }

install: $(STAMP) labextension

# the venv and JupyterLab first: jlpm, which builds the extension, comes with it
$(BIN)/jlpm:
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "python3-venv is missing: apt-get install -y python3-venv"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'jupyterlab>=4.2,<5'

# rebuilt when any source of the extension changes (the build rewrites package.json)
$(LABEXT_BUILT): $(LABEXT_SOURCES) | $(BIN)/jlpm
	cd labextension && $(JLPM) install && $(JLPM) build:prod
	touch $@

# the editable install finds the extension built (its build hook then skips npm)
$(STAMP): pyproject.toml | $(LABEXT_BUILT)
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	test -x $(BIN)/configurable-http-proxy || npm install --silent -g --prefix $(VENV) configurable-http-proxy@5
	@# the browser test drives Debian's chromium (Playwright cannot download browsers here)
	@test -x /usr/bin/chromium || { export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } \
		|| { echo "chromium is missing: apt-get install -y chromium"; exit 1; }
	touch $(STAMP)

# Build the extension if its sources changed, and make the venv's JupyterLab load this
# build: the editable install copies it into share/jupyter/labextensions once; a link
# (what `jupyter labextension develop` makes) follows every rebuild.
labextension: $(LABEXT_BUILT)
	@if [ -d $(VENV) ] && [ ! -L $(LABEXT_LINK) ]; then \
		rm -rf $(LABEXT_LINK) && mkdir -p $(dir $(LABEXT_LINK)) && \
		ln -s $(CURDIR)/server_ext/labextension $(LABEXT_LINK) && \
		echo "linked $(LABEXT_LINK) -> server_ext/labextension"; \
	fi

lint: install
	$(BIN)/ruff check hub_ext server_ext tests bench config
	$(BIN)/ruff format --check hub_ext server_ext tests bench config

bench: install
	$(BIN)/python bench/spawn.py
	$(BIN)/python bench/envbuild.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/audit.py

clean:
	rm -rf $(VENV) .shipyard .shipyard-test .pytest_cache
	rm -rf server_ext/labextension labextension/lib labextension/node_modules labextension/.yarn labextension/tsconfig.tsbuildinfo
