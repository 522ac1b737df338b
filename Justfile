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
[group('dev')]
run *args:
    cargo run --release -- {{args}}

# Everything CI checks: format, lint, unit and integration tests, Prometheus/Alertmanager configs, the container stack files.
[group('test')]
test: fmt-check lint test-rust test-openapi check-prometheus check-compose check-stack test-bench

# Check formatting without changing files.
[group('test')]
fmt-check:
    cargo fmt --all --check

# Fast checks before a commit: format, clippy and the unit tests (no services, no integration tests).
[group('dev')]
check: fmt-check lint
    cargo test --lib --bins

# Format the code.
[group('dev')]
fmt:
    cargo fmt --all

# Clippy on every target, warnings are errors.
[group('test')]
lint:
    cargo clippy --all-targets -- -D warnings

# Unit and integration tests; the PostgreSQL variants run when ITEMS_API_TEST_POSTGRES_URL is set.
[group('test')]
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

# /openapi.json against the real binary: schemathesis (--checks all, stateful phase) on SQLite and PostgreSQL, and a generated client's round trip (~40 s).
[group('test')]
test-openapi:
    cargo build --quiet
    ITEMS_API_BINARY="${CARGO_TARGET_DIR:-target}/debug/items-api" python3 -m pytest -q -p no:cacheprovider tests/openapi

# promtool/amtool: Prometheus config, rules and their unit tests, Alertmanager config.
[group('test')]
check-prometheus:
    bash prometheus/check.sh

# Live check (~1.5 min): three services (5xx faults, 1.5 s delay, healthy), real Prometheus and Alertmanager;
# every dashboard and compat query returns data, the error alert reaches mail and webhook, the latency alert fires, healthy stays silent.
[group('test')]
check-stack duration="75":
    cargo build --quiet
    python3 scripts/check_stack.py --binary "${CARGO_TARGET_DIR:-target}/debug/items-api" --duration {{duration}}

# Locust mix against a running service (`just run` first): CSV + HTML in reports/.
[group('perf')]
load users="20" spawn="5" time="30s" host="http://127.0.0.1:8000":
    bash load/run_load.sh {{users}} {{spawn}} {{time}} {{host}}

# Step the load up until the service breaks, watched by a real Prometheus: reports/stress.md with charts (~6 min; `just stress --quick` ~1 min).
[group('perf')]
stress *args:
    cargo build --release
    python3 load/stress.py {{args}}

# The cost of telemetry (wrk: off / metrics / default / full) and /metrics render time at 1x, 10x, 100x series: reports/bench.md, bench.json, metrics_render.json.
[group('perf')]
bench *args:
    cargo build --release
    python3 load/bench.py {{args}}
    cargo bench --bench metrics_render

# GET /items at 1 k and 1 M rows (SQLite): first page and cursor page must stay within 2x; reports/list_bench.md (~1 min).
[group('perf')]
bench-list *args:
    cargo build --release
    python3 load/list_bench.py {{args}}

# Instructions per request under callgrind, off / metrics / default / full (OTLP/HTTP and gRPC) on GET and POST: reports/icount.json (~3 min; `--quick` ~1.5 min).
[group('perf')]
bench-icount *args:
    cargo build --release
    python3 load/icount.py {{args}}

# The benchmark harnesses in quick mode (wrk for a few seconds, callgrind on 100 requests a config), so they cannot rot.
[group('test')]
test-bench:
    cargo build --release
    python3 -m pytest -q -p no:cacheprovider load/test_bench_quick.py

# Ten minutes at 70 % of measured capacity; RSS, p99 and errors every 30 s to reports/soak.md.
[group('perf')]
soak *args:
    cargo build --release
    python3 load/soak.py {{args}}
