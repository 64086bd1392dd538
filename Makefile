# wine-quality: every task a developer or the CI pipeline runs. The targets call scripts/,
# so the GitHub workflows, .ci/run and a laptop all run the same steps.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
MODEL_DIR   ?= artifacts/model
DATA_DIR    ?= data/wine-quality
# Where `wine-quality data` copies the UCI files from: the UCI site by default, or a local folder.
export WINE_QUALITY_DATA_SOURCE ?=
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.PHONY: help venv tools data train run serve test lint image image-test chart-check e2e release-local bench clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: ## create .venv with the pinned dependencies
	scripts/bootstrap.sh dev

tools: ## install system tools the tests drive (podman, prometheus, chromium, helm, ...)
	scripts/install-tools.sh

data: venv ## download and verify the UCI wine data into data/
	$(BIN)/wine-quality data --dest $(DATA_DIR)

train: data ## train, select and gate the model; writes $(MODEL_DIR)
	$(BIN)/wine-quality train --data-dir $(DATA_DIR) --output $(MODEL_DIR)

$(MODEL_DIR)/metadata.json:
	$(MAKE) train

serve: venv $(MODEL_DIR)/metadata.json ## serve the model on http://127.0.0.1:8080
	WINE_QUALITY_MODEL_DIR=$(MODEL_DIR) $(BIN)/wine-quality serve

run: train serve ## the main job: venv, data, train, serve on localhost

# lint needs only the venv's linters and helm (no root, no apt): not the whole `tools` target.
lint: venv ## every linter the CI lint job runs
	scripts/install-helm.sh
	scripts/lint.sh

# test does not lint: the CI lint job and .ci/run run `make lint` once, on their own.
test: venv tools ## the whole test suite (what .ci/run, after make lint, and the CI test job run)
	$(BIN)/python -m pytest

image: venv $(MODEL_DIR)/metadata.json ## build the container image (podman, or docker when an engine runs)
	scripts/image.sh build

image-test: image ## run the image as Kubernetes would and smoke-test it
	scripts/image.sh test

chart-check: venv tools ## lint, render and validate the Helm chart offline
	scripts/chart-check.sh

e2e: image ## install the chart and smoke-test it (kind with docker, podman kube play here)
	scripts/e2e.sh

# The release steps of the CI workflow against a registry on loopback (scripts/registry.sh start runs
# one): REGISTRY=127.0.0.1:PORT make release-local. IMAGE=... reuses a built image when it fits.
release-local: venv tools $(MODEL_DIR)/metadata.json ## the CI release steps against a loopback registry (REGISTRY=127.0.0.1:PORT)
	MODEL_DIR=$(MODEL_DIR) scripts/release-local.sh

bench: venv $(MODEL_DIR)/metadata.json ## latency/throughput benchmark; writes benchmarks/results/
	scripts/bench.sh

clean: ## remove build output (keeps .venv, .tools and data)
	rm -rf build artifacts .pytest_cache .ruff_cache
