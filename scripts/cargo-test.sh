#!/usr/bin/env bash
# Run the workspace tests. Expects the services env (scripts/services.sh run).
# cargo-nextest when installed (one process per test: isolated, parallel,
# with per-test timings), plus doctests, which nextest does not run;
# plain `cargo test` otherwise. Extra arguments go to the test runner,
# e.g. `make test TEST_ARGS=schedule`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# End-to-end tests run the Lambda bootstraps and the CLI as processes; build
# every binary of the workspace first so they exist next to the tests.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  nextest_args=(--workspace --no-tests=warn)
  if [[ "${CI:-}" == "true" ]]; then
    # Show every test's duration (nextest stays fail-fast, its default).
    nextest_args+=(--status-level all --final-status-level slow)
  fi
  # Doctests are not run by nextest: run them first (there are few or
  # none), so that nextest's summary is the last thing printed.
  if (($# == 0)); then
    cargo test --workspace --doc --quiet
  fi
  cargo nextest run "${nextest_args[@]}" "$@"
else
  echo "[test] cargo-nextest not found; using cargo test (install: cargo install cargo-nextest --locked)" >&2
  cargo test --workspace "$@"
fi
