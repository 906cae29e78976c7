# Sundial entry points. The logic lives in scripts/; this file stays thin.
#
#   make dev            Postgres + `sundial dev --demo` (in-process queue)
#   make test           lint, local services, chromium (make browser),
#                       schemathesis against the admin API (make api-fuzz),
#                       then every test in the workspace (the console's
#                       browser test included)
#   make services       start Postgres + SQS emulator; prints `export` lines:
#                         eval "$(make -s services)"
#   make build          Lambda artifacts (ARCH=arm64 default, or x86_64)
#   make deploy         sam deploy (guided the first time)
#   make help           everything else

SHELL := bash
MAKEFLAGS += --no-print-directory
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Ports of the local services (loopback only). Override: make test PGPORT=55433
PGPORT ?= 55432
MOTO_PORT ?= 54566
export PGPORT MOTO_PORT

ARCH ?= arm64
TEST_ARGS ?=
DEV_ARGS ?=
SAM_ARGS ?=

STEP := scripts/step.sh
SERVICES := scripts/services.sh

.PHONY: help dev dev-smoke test api-fuzz lint fmt-check clippy size-check bench build deploy lint-infra size \
        browser services services-pg services-stop services-status services-check ci

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

services: ## start Postgres + moto (idempotent); prints export lines only
	@$(SERVICES) up

services-pg: ## start Postgres only; prints export lines only
	@$(SERVICES) pg

services-stop: ## stop the services this checkout started
	@$(SERVICES) stop

services-status: ## say whether the services answer
	@$(SERVICES) status

browser: ## install Debian's headless chromium for the console's browser test (idempotent)
	@$(STEP) browser scripts/chromium.sh

services-check: ## round trip: psql select 1, SQS create/send/receive on moto
	@$(SERVICES) run -- .venv/bin/python scripts/check-services.py

lint: fmt-check clippy size-check ## rustfmt --check, clippy -D warnings, file and function sizes

fmt-check:
	@$(STEP) "cargo fmt --check" cargo fmt --all -- --check

clippy:
	@$(STEP) clippy cargo clippy --workspace --all-targets -- -D warnings

size-check:
	@$(STEP) "code size" scripts/code-size.py --check

test: lint ## lint, api-fuzz, then all tests against local Postgres + SQS emulator
	@$(STEP) services $(SERVICES) up >/dev/null
	@$(MAKE) browser
	@$(MAKE) api-fuzz
	@$(STEP) tests $(SERVICES) run -- scripts/cargo-test.sh $(TEST_ARGS)

api-fuzz: ## schemathesis against the admin API's OpenAPI document (API_FUZZ_EXAMPLES, API_FUZZ_SEED)
	@$(STEP) api-fuzz $(SERVICES) run --pg-only -- scripts/api-fuzz.sh

dev: ## Postgres + `sundial dev --demo` (extra flags: DEV_ARGS="--port 9090")
	@$(SERVICES) run --pg-only -- cargo run -p sundial-cli --bin sundial -- dev --demo $(DEV_ARGS)

dev-smoke: ## prove `make dev` works: demo fires twice, clean SIGTERM
	@$(SERVICES) run --pg-only -- scripts/dev-smoke.sh

bench: ## quick benchmarks (release build) against local Postgres + the SQS emulator
	@$(SERVICES) run -- cargo run --release -p sundial-cli --bin sundial -- bench all --quick

build: ## Lambda artifacts in target/lambda/<fn>/bootstrap (ARCH=arm64|x86_64)
	@$(STEP) "build $(ARCH)" scripts/build-lambda.sh $(ARCH)

size: ## files over 500 lines and functions over 60 in shared/src (exceptions: docs/ARCHITECTURE.md)
	@scripts/code-size.py

lint-infra: ## cfn-lint + SAM transform check of infra/template.yaml (offline)
	@$(STEP) lint-infra scripts/lint-infra.sh

deploy: build ## sam deploy (guided when infra/samconfig.toml is missing)
	@scripts/deploy.sh $(SAM_ARGS)

ci: test lint-infra ## what .ci/run does
