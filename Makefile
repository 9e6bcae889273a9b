# The two set-up commands of the README: `make demo` and `make test`. Both work from a clean clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-out
APT_PACKAGES := orthanc orthanc-dicomweb dcmtk dicom3tools redis-server chromium chromium-driver

.PHONY: demo test venv system-deps services node-peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,lite]'
	touch $(STAMP)

venv: $(STAMP)

# Debian tools the tests run as real peers (Orthanc as PACS, dcmtk senders, dciodvfy validator, Redis, Chromium).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The Node readers the tests hydrate our SRs with (Cornerstone3D's adapters, dcmjs), pinned by the lockfile, and
# OHIF's prebuilt viewer (tests/peers/ohif_viewer.py), installed beside the tests, outside the product. Node comes
# from Debian where none is on the PATH.
NODE_PEERS := tests/peers/node
node-peers: system-deps $(STAMP)
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; }
	@test -f $(NODE_PEERS)/node_modules/@cornerstonejs/adapters/package.json \
	  || npm ci --prefix $(NODE_PEERS) --no-audit --no-fund --loglevel=error
	@$(BIN)/python -c "from tests.peers.ohif_viewer import install_ohif; install_ohif()"

services: system-deps
	@$(BIN)/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_connect_timeout=1).ping()" 2>/dev/null \
	  || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp --logfile /tmp/mccad-redis.log

demo: $(STAMP)
	$(BIN)/mccad demo --out $(DEMO_OUT)

test: $(STAMP) services node-peers
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
