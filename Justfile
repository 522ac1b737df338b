# items-api: `just run` serves the API alone; `just test` runs every check CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The Docker stack: up, up-collector, down, logs, ps, open, check-compose (see deploy/README.md).
import 'stack.just'

# PostgreSQL server for the `postgres` test variants (an admin URL; each test makes its own database).
export ITEMS_API_TEST_POSTGRES_URL := env_var_or_default("ITEMS_API_TEST_POSTGRES_URL", "")

# List the recipes.
default:
    @just --list

# Run the service alone on SQLite: API and /metrics on http://localhost:8000.
run *args:
    cargo run --release -- {{args}}

# Everything CI checks: format, lint, unit and integration tests, Prometheus/Alertmanager configs, the container stack files.
test: fmt-check lint test-rust check-prometheus check-compose check-stack

# Check formatting without changing files.
fmt-check:
    cargo fmt --all --check

# Format the code.
fmt:
    cargo fmt --all

# Clippy on every target, warnings are errors.
lint:
    cargo clippy --all-targets -- -D warnings

# Unit and integration tests; the PostgreSQL variants run when ITEMS_API_TEST_POSTGRES_URL is set.
test-rust:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${ITEMS_API_TEST_POSTGRES_URL}" ]; then
        cargo test --all-targets
    else
        cargo test --all-targets -- --skip postgres::
        echo
        echo "NOTE: PostgreSQL tests were SKIPPED: set ITEMS_API_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres to run them."
    fi

# promtool/amtool: Prometheus config, rules and their unit tests, Alertmanager config.
check-prometheus:
    bash prometheus/check.sh

# Live check: the real service with faults, a real Prometheus with the rules and a real Alertmanager;
# every dashboard and compat query must return data and the error-ratio alert must go pending.
check-stack duration="75":
    cargo build --quiet
    python3 scripts/check_stack.py --binary "${CARGO_TARGET_DIR:-target}/debug/items-api" --duration {{duration}}
