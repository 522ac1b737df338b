#!/usr/bin/env bash
# Run the Locust user mix headless against a service that is already running.
#
#   load/run_load.sh [USERS] [SPAWN_RATE] [TIME] [HOST]
#   load/run_load.sh 20 5 30s http://127.0.0.1:8000      # the defaults
#
# Writes reports/load_stats.csv, load_stats_history.csv, load_failures.csv,
# load_exceptions.csv and reports/load.html (reports/ at the repo root, gitignored),
# prints Locust's summary, and exits non-zero when any request failed.
set -euo pipefail

users="${1:-20}"
spawn="${2:-5}"
run_time="${3:-30s}"
host="${4:-http://127.0.0.1:8000}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
reports="${repo}/reports"
mkdir -p "${reports}"

if ! command -v locust >/dev/null 2>&1; then
    echo "locust is not installed: pip install -r load/requirements.txt" >&2
    exit 2
fi

if ! python3 - "${host}" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/health/ready", timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as err:
    print(f"service not ready at {sys.argv[1]}: {err}", file=sys.stderr)
    sys.exit(1)
EOF
then
    echo "start it first, e.g. 'just run' (or pass its URL as the 4th argument)" >&2
    exit 2
fi

echo "locust: ${users} users, spawn ${spawn}/s, ${run_time} against ${host}"
status=0
locust -f "${here}/locustfile.py" \
    --headless --only-summary \
    --users "${users}" --spawn-rate "${spawn}" --run-time "${run_time}" \
    --stop-timeout 10 \
    --host "${host}" \
    --csv "${reports}/load" --csv-full-history \
    --html "${reports}/load.html" \
    --loglevel WARNING || status=$?

python3 - "${reports}/load_stats.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
agg = next(r for r in rows if r["Name"] == "Aggregated")
n, f = int(agg["Request Count"]), int(agg["Failure Count"])
print(f"\nrequests {n}, failures {f} ({100.0 * f / max(n, 1):.2f} %), "
      f"{float(agg['Requests/s']):.1f} req/s, p50 {agg['50%']} ms, "
      f"p95 {agg['95%']} ms, p99 {agg['99%']} ms")
EOF
echo "reports: ${reports}/load_stats.csv, ${reports}/load.html"

if [ "${status}" -ne 0 ]; then
    echo "FAILED: locust exited ${status} (some requests failed, see ${reports}/load_failures.csv)" >&2
fi
exit "${status}"
