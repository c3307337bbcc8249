# overlaynet.flannel — the two commands of the README, and their parts.
#   make test   installs what the tests need, then runs them all (what .ci/run calls)
#   make demo   the lab + site.yml + a cross-host container ping matrix
#   make docs   the HTML docs site, into build/docs/html
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COLLECTION_DIR := build/ansible_collections/overlaynet/flannel
APT_PACKAGES := etcd-server etcd-client iproute2 iptables openssh-server openssh-client netcat-openbsd socat wireguard-tools wireguard-go \
	iputils-ping iperf3 busybox-static debootstrap systemd-container python3-venv python3-pip git \
	prometheus \
	chromium
.DEFAULT_GOAL := help

.PHONY: help deps apt venv docs test-matrix lint ruff typecheck changelog-lint ansible-lint sanity unit integration test demo lab-up lab-down molecule build clean build/sanity-tree

help:
	@echo "make test      install test dependencies and run every test (CI runs this)"
	@echo "make demo      lab machines + site.yml + container ping matrix (BACKEND=vxlan|host-gw|udp|wireguard,"
	@echo "               RELEASE=bookworm|trixie|bookworm,trixie: the machines' Debian, a list taken in turn)"
	@echo "make docs      the HTML docs site (modules, roles, guides) into build/docs/html"
	@echo "make lab-up    light lab hosts (HOSTS=3 ETCD_MEMBERS=1); make lab-down removes everything"

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-test.txt requirements-docs.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

deps: apt venv

ruff: venv
	$(BIN)/ruff check .

# mypy over the engine and lab/ (pyproject.toml [tool.mypy]).
typecheck: venv
	$(BIN)/mypy

# ansible-test needs the collection at .../ansible_collections/<ns>/<name>: a copy of the tracked files.
build/sanity-tree: venv
	rm -rf $(COLLECTION_DIR) && mkdir -p $(COLLECTION_DIR)
	git ls-files -co --exclude-standard -z -- . ':!lab' ':!bench' ':!.ci' | tar --null -T - -cf - | tar -xf - -C $(COLLECTION_DIR)
	cd $(COLLECTION_DIR) && git init -q && git add -A

# ansible-test sanity with the venv $(1): the stand-in for get-pip.py is cached under the name
# of the pip version that ansible-test installs (read from its source).
define sanity_with
	mkdir -p $$HOME/.ansible/test/cache
	pip=$$(grep -ho "pip='[0-9.]*'" $(1)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | \
		head -1 | tr -dc '0-9.' | tr . _); \
	cp tests/sanity/get_pip_offline.py $$HOME/.ansible/test/cache/get_pip_$$pip.py
	cd $(COLLECTION_DIR) && PATH=$(CURDIR)/$(1)/bin:$$PATH ansible-test sanity --venv --python 3.11 --color no
endef

sanity: build/sanity-tree
	$(call sanity_with,$(VENV))

# Every changelog fragment (and the released changelog.yaml) in antsibull-changelog's format.
changelog-lint: venv
	$(BIN)/antsibull-changelog lint

# The oldest ansible-core meta/runtime.yml promises (requires_ansible), each in its own venv:
# ansible-test sanity and the module tests. The newest this box's Python runs (3.11: 2.19) is
# the main venv's, tested by `make lint` and pytest. tests/sanity/ignore-<X.Y>.txt per version.
ANSIBLE_CORE_MATRIX ?= 2.17

.venv-core%/.installed: requirements.txt
	$(PYTHON) -m venv .venv-core$*
	.venv-core$*/bin/pip install -q --upgrade pip
	.venv-core$*/bin/pip install -q "ansible-core==$*.*" -r requirements.txt pytest pytest-timeout hypothesis PyYAML
	touch $@

test-matrix: build/sanity-tree $(foreach v,$(ANSIBLE_CORE_MATRIX),.venv-core$(v)/.installed)
	$(foreach v,$(ANSIBLE_CORE_MATRIX),$(call matrix_one,$(v)))

define matrix_one
	@echo "== ansible-core $(1): $$(.venv-core$(1)/bin/ansible --version | head -1)"
	$(call sanity_with,.venv-core$(1))
	.venv-core$(1)/bin/python -m pytest tests/integration/modules tests/unit/ops -q -p no:cacheprovider

endef

lint: ruff typecheck changelog-lint ansible-lint sanity

unit: venv
	$(BIN)/python -m pytest tests/unit -q

integration: deps
	$(BIN)/python -m pytest tests/integration -q

test: deps lint test-matrix
	$(BIN)/python -m pytest tests -q -p no:cacheprovider --durations=25

build: venv
	$(BIN)/ansible-galaxy collection build --force --output-path build/

COLLECTION_LINK := build/collections/ansible_collections/overlaynet/flannel

$(COLLECTION_LINK):
	mkdir -p $(dir $@) && ln -sfn ../../../.. $@

# The main job: 3 nspawn machines with docker and a 3-member etcd (mutual TLS and etcd auth: the
# inventory carries the certificate paths and the password's file), site.yml, ping matrix.
RELEASE ?= bookworm

demo: deps $(COLLECTION_LINK)
	$(BIN)/python -m lab.machine_lab up --machines 3 --etcd-members 3 --release $(RELEASE)
	ANSIBLE_COLLECTIONS_PATH=build/collections $(BIN)/ansible-playbook -i lab/inventory.yml site.yml \
		$(if $(BACKEND),-e '{"flannel_backend": {"type": "$(BACKEND)"}}')
	$(BIN)/python -m lab.machine_lab ping-matrix

lab-up: deps
	$(BIN)/python -m lab up --hosts $${HOSTS:-3} --etcd-members $${ETCD_MEMBERS:-1}

# Removes both kinds of lab (light hosts and machines), whichever is up.
lab-down: venv
	$(BIN)/python -m lab down
	$(BIN)/python -m lab.machine_lab down

# The docs site, built as antsibull-docs sets a collection docsite up: `sphinx-init` writes the
# Sphinx project (conf.py, build.sh); conf.py gets an import of docs/sphinx/conf_overrides.py (offline
# intersphinx, README sections); build.sh writes the module and role pages from the installed
# collection (COLLECTION_LINK: this tree, so the pages are read from the sources) with the
# guides of docs/docsite, and runs sphinx-build with -W (a warning fails the build).
# DOCS_DIR=<dir> builds elsewhere (tests/integration/test_docs_site.py).
DOCS_DIR ?= build/docs

docs: venv $(COLLECTION_LINK)
	@test -n "$(DOCS_DIR)" || { echo 'docs: DOCS_DIR is empty' >&2; exit 2; }
	rm -rf $(DOCS_DIR)/src $(DOCS_DIR)/html && mkdir -p $(DOCS_DIR)/src
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections $(BIN)/antsibull-docs sphinx-init --use-current \
		--squash-hierarchy --fail-on-error --dest-dir $(DOCS_DIR)/src overlaynet.flannel >/dev/null
	printf '\nimport sys\nsys.path.insert(0, %s)\nfrom conf_overrides import *  # noqa: E402,F401,F403\n' \
		"'$(CURDIR)/docs/sphinx'" >> $(DOCS_DIR)/src/conf.py
	$(BIN)/python docs/sphinx/ansible_inventory.py $(DOCS_DIR)/src/ansible_devel.inv
	PATH=$(CURDIR)/$(BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/build/collections $(DOCS_DIR)/src/build.sh
	mv $(DOCS_DIR)/src/build/html $(DOCS_DIR)/html
	@echo "docs: $(DOCS_DIR)/html/index.html"

molecule: deps $(COLLECTION_LINK)
	PATH=$(CURDIR)/$(BIN):$$PATH molecule test

ansible-lint: venv $(COLLECTION_LINK)
	ANSIBLE_COLLECTIONS_PATH=build/collections $(BIN)/ansible-lint --profile production roles site.yml extensions/molecule

clean: lab-down
	rm -rf build
