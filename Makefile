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

# a comma inside $(call ...) arguments
, := ,

PYTHON ?= /usr/bin/python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
TEST_STAMP = $(VENV)/.installed-test

# every recipe line runs in bash with pipefail, so a filtered pip still fails when pip does
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c

# the JupyterLab extension: its sources, its build (the wheel's shared-data), and where
# the venv's JupyterLab looks for it
LABEXT_BUILT   = server_ext/labextension/package.json
LABEXT_SOURCES = labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
                 labextension/.yarnrc.yml labextension/install.json \
                 $(shell find labextension/src labextension/style -type f 2>/dev/null)
LABEXT_LINK    = $(VENV)/share/jupyter/labextensions/shipyard-jupyterlab
JLPM           = PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/jlpm

# `$(call step,WHAT)` opens a step: its name now, and (with `$(done)` at the end of the
# same recipe line) how long it took, so an install is never minutes of silence
step = printf '\n==> %s\n' "$(1)"; started=$$(date +%s)
done = printf '    done in %ss\n' "$$(( $$(date +%s) - started ))"
# pip's own progress, a line per package it fetches, without its resolver chatter
PIP_PROGRESS = sed -un -e 's/^Collecting \([^ ]*\).*/    fetching \1/p' -e 's/^Successfully installed .*/    installed/p' -e '/ERROR\|error:/p'

# What pip installs that no process here uses and every process pays for at import:
# rfc3987-syntax (jsonschema's optional "iri" format checker, via jupyter-events) builds
# a grammar when imported, 1.5-2.5 s in the hub, each service and each user server. The
# environments' locks leave it out the same way (images/overrides.txt says why).
DROP_UNUSED = $(BIN)/python -m pip uninstall --quiet --yes rfc3987-syntax

.PHONY: up test install test-install test-packages labextension lint bench clean

up: install
	$(BIN)/shipyard up

test: install test-install
	$(BIN)/python -m tests.run

# apt-get waits for another apt or dpkg (an unattended upgrade, a second install) to
# finish, rather than failing at once on its lock
APT = apt-get -o DPkg::Lock::Timeout=600

# What only the tests use, never installed by `make up`: the test extras (pytest,
# Playwright, Django for the OIDC provider...), Debian's chromium for the browser tests
# (Playwright cannot download browsers here) and slapd, the OpenLDAP server the directory
# tests start with their own config on a free port (its postinst is told to make no
# default directory, so no system instance is configured or started), and podman, runc
# and debootstrap, with which the image tests build an environment image on this machine,
# and iptables, with which the container spawner keeps each user's network to the hub,
# and prometheus (with promtool), which the metrics tests start with their own config on a
# free loopback port and which checks the shipped rules; the package's own instance (on
# :9090, a systemd unit) is stopped and disabled when this installs it: no test uses it.
test-install: $(TEST_STAMP) test-packages

$(TEST_STAMP): pyproject.toml $(STAMP)
	@$(call step,the test extras (pytest$(,) Playwright$(,) Django...)); \
		$(BIN)/python -m pip install --progress-bar off -e '.[test]' 2>&1 | $(PIP_PROGRESS) && \
		$(DROP_UNUSED) && $(done)
	touch $(TEST_STAMP)

test-packages:
	@test -x /usr/bin/chromium || { $(call step,Debian's chromium for the browser tests); \
		export DEBIAN_FRONTEND=noninteractive; \
		{ $(APT) install -y -q chromium || { $(APT) update -q && $(APT) install -y -q chromium; }; } \
		|| { echo "chromium is missing: apt-get install -y chromium"; exit 1; } && $(done); }
	@test -x /usr/sbin/slapd || { $(call step,Debian's slapd for the LDAP tests); \
		export DEBIAN_FRONTEND=noninteractive; \
		echo "slapd slapd/no_configuration boolean true" | debconf-set-selections; \
		{ $(APT) install -y -q slapd || { $(APT) update -q && $(APT) install -y -q slapd; }; } \
		|| { echo "slapd is missing: apt-get install -y slapd"; exit 1; } && $(done); }
	@test -x /usr/bin/podman -a -x /usr/sbin/runc -a -x /usr/sbin/debootstrap -a -x /usr/sbin/iptables || { \
		$(call step,Debian's podman$(,) runc$(,) debootstrap and iptables for the container tests); \
		export DEBIAN_FRONTEND=noninteractive; \
		{ $(APT) install -y -q podman runc debootstrap iptables \
			|| { $(APT) update -q && $(APT) install -y -q podman runc debootstrap iptables; }; } \
		|| { echo "podman is missing: apt-get install -y podman runc debootstrap iptables"; exit 1; } \
		&& $(done); }
	@test -x /usr/bin/prometheus -a -x /usr/bin/promtool || { \
		$(call step,Debian's prometheus for the metrics tests); \
		export DEBIAN_FRONTEND=noninteractive; \
		{ $(APT) install -y -q --no-install-recommends prometheus \
			|| { $(APT) update -q && $(APT) install -y -q --no-install-recommends prometheus; }; } \
		|| { echo "prometheus is missing: apt-get install -y prometheus"; exit 1; }; \
		{ command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1; } || true; \
		$(done); }

# What the platform needs, and nothing more: the venv with Shipyard and its
# dependencies, the JupyterLab extension, configurable-http-proxy.
install: $(STAMP) labextension

# the venv and JupyterLab first: jlpm, which builds the extension, comes with it
$(BIN)/jlpm:
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm"; exit 1; }
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { echo "python3-venv is missing: apt-get install -y python3-venv"; exit 1; }
	@$(call step,[1/4] a virtual environment in $(VENV) with JupyterLab); \
		{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --progress-bar off 'jupyterlab>=4.2,<5' 2>&1 | $(PIP_PROGRESS) && $(done)

# rebuilt when any source of the extension changes (the build rewrites package.json)
$(LABEXT_BUILT): $(LABEXT_SOURCES) | $(BIN)/jlpm
	@$(call step,[2/4] the JupyterLab extension (labextension/ with jlpm)); \
		log=$(CURDIR)/$(VENV)/labextension-build.log; \
		{ cd labextension && $(JLPM) install && $(JLPM) build:prod; } > $$log 2>&1 \
		|| { tail -40 $$log; echo "The extension's build failed: $$log has all of it."; exit 1; }; $(done)
	touch $@

# the editable install finds the extension built (its build hook then skips npm)
$(STAMP): pyproject.toml | $(LABEXT_BUILT)
	@command -v npm >/dev/null || { echo "npm is missing: apt-get install -y nodejs npm"; exit 1; }
	@$(call step,[3/4] Shipyard and what it runs on (JupyterHub$(,) MLflow$(,) papermill...)); \
		{ test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } && \
		$(BIN)/python -m pip install --progress-bar off -e . 2>&1 | $(PIP_PROGRESS) && \
		$(DROP_UNUSED) && $(done)
	@$(call step,[4/4] configurable-http-proxy (npm)); \
		{ test -x $(BIN)/configurable-http-proxy || npm install --silent -g --prefix $(VENV) configurable-http-proxy@5; } && $(done)
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
	$(BIN)/python bench/tracking.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/chaos.py

clean:
	rm -rf $(VENV) .shipyard .shipyard-test .pytest_cache
	rm -rf server_ext/labextension labextension/lib labextension/node_modules labextension/.yarn labextension/tsconfig.tsbuildinfo
