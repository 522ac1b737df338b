#!/usr/bin/env python3
"""Step the Locust user mix up until items-api breaks, watching it with a real Prometheus.

    python3 load/stress.py            # stages 20, 100, 200, then x1.5 each (300, 450, 700, 1050,
                                      # 1600, ...), 40 s each, ≤ 7 min of load
    python3 load/stress.py --quick    # stages 5, 10, 20, 30 (10 s each), about a minute
    python3 load/stress.py --brief    # the FastAPI brief's profile: 20 users (spawn 5/s) for 5 min,
                                      # 100 (spawn 10/s) for 5 min, then 200 (spawn 20/s) and +100 per
                                      # 5 min stage until it breaks (budget 40 min); the brief's think
                                      # times (CRUD 1-3 s, read-only 2-5 s)

What it does:
  1. starts the release binary on a fresh SQLite file in a temp dir, pinned to core 0;
  2. starts Prometheus (the Debian `prometheus` package) in the temp dir, scraping the
     service every 1 s, pinned to core 1;
  3. runs one headless Locust process per stage (load/locustfile.py, pinned to core 1),
     stage after stage, until the error ratio passes 1 % or the p95 passes 500 ms (the
     breaking point), or the time budget runs out;
  4. per stage: RPS, p50/p95/p99 and error % from Locust's stats CSV; service CPU (rate of
     process_cpu_time_seconds_total), RSS (process_memory_usage_bytes), server-side HTTP p95
     and DB p95 (histogram_quantile over the _bucket series) from Prometheus; Locust's own CPU;
  5. cross-checks the number of requests Locust made with Prometheus's
     sum(http_server_request_duration_seconds_count) after a final scrape (raw counter
     values; they must be equal);
  6. writes reports/stress.md, stress.json and PNG charts, naming the breaking point and the
     resource that saturated.

The box has 2 cores: the service gets core 0 and the load generator core 1, so "CPU
saturated" for the service means ~100 % (one core), not 200 %. Locust is single-process
and can itself become the bottleneck; the report says so when its core is full.
"""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import LOADGEN_CORE, SERVICE_CORE, Service, log  # noqa: E402

LOCUSTFILE = harness.LOAD_DIR / "locustfile.py"
ERROR_LIMIT = 0.01  # ratio
WAIT_DEFAULT = "0.1-0.5"
# The FastAPI brief's stages: (users, spawn rate per second), 5 minutes each; after 200
# users it goes on "until breaking", here +100 users a stage at the same spawn rate.
BRIEF_SPAWN = [(20, 5), (100, 10), (200, 20)]
BRIEF_LATER_SPAWN = 20
P95_LIMIT_MS = 500.0
SATURATED_PCT = 85.0  # of one core


# --------------------------------------------------------------------------- Prometheus


class Prometheus:
    def __init__(self, workdir, target_port, scrape_s=1):
        self.dir = Path(workdir) / "prometheus"
        self.dir.mkdir(parents=True)
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scrape_s = scrape_s
        (self.dir / "prometheus.yml").write_text(
            "global:\n"
            f"  scrape_interval: {scrape_s}s\n"
            f"  scrape_timeout: {int(scrape_s * 900)}ms\n"
            f"  evaluation_interval: {scrape_s}s\n"
            "scrape_configs:\n"
            "  - job_name: items-api\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.proc = None
        self._log = None

    def start(self):
        binary = shutil.which("prometheus")
        if not binary:
            sys.exit("prometheus not found: apt-get install prometheus")
        self._log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            harness.pin(LOADGEN_CORE)
            + [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            harness.wait_http("127.0.0.1", self.port, "/-/ready", timeout=60, proc=self.proc)
        except RuntimeError:
            self._log.flush()
            sys.stderr.write((self.dir / "prometheus.log").read_text()[-2000:])
            raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.scalar('max(up{job="items-api"})') == 1:
                return self
            time.sleep(0.5)
        raise RuntimeError("Prometheus never saw the service up")

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {expr}: {body}")
        return body["data"]["result"]

    def scalar(self, expr, at=None):
        result = self.query(expr, at)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if value != value else value  # NaN → None

    def last_scrape(self):
        result = self.query('timestamp(up{job="items-api"})')
        return float(result[0]["value"][1]) if result else 0.0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()


# --------------------------------------------------------------------------- Locust


def read_locust_csv(prefix):
    stats = {}
    with open(f"{prefix}_stats.csv") as f:
        for row in csv.DictReader(f):
            stats[(row["Type"], row["Name"])] = row
    failures = []
    path = Path(f"{prefix}_failures.csv")
    if path.exists():
        with open(path) as f:
            failures = list(csv.DictReader(f))
    return stats, failures


def run_stage(args, service, users, stage_s, workdir, wait, spawn=None):
    """One Locust process: `users` users spawned `spawn` per second (default: all running
    within ~4 s), for `stage_s` s. `wait` (low, high) overrides the locustfile's think
    times; None keeps them (the brief's)."""
    prefix = workdir / f"stage-{users:04d}"
    spawn = spawn or max(10, users // 4)
    cmd = harness.pin(LOADGEN_CORE) + [
        shutil.which("locust") or "locust",
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary",
        "--users", str(users),
        "--spawn-rate", str(spawn),
        "--run-time", f"{stage_s}s",
        "--stop-timeout", "10",
        "--host", service.base,
        "--csv", str(prefix),
        "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCUST_WAIT_MIN", "LOCUST_WAIT_MAX")}
    if wait is not None:
        env.update(LOCUST_WAIT_MIN=str(wait[0]), LOCUST_WAIT_MAX=str(wait[1]))
    import psutil  # a Locust dependency

    started = time.time()
    with open(workdir / f"stage-{users:04d}.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        ps = psutil.Process(proc.pid)
        samples = []  # (wall time, locust cpu s, service cpu s)
        while proc.poll() is None:
            try:
                t = ps.cpu_times()
                samples.append((time.time(), t.user + t.system, service.cpu_seconds()))
            except psutil.Error:
                pass
            time.sleep(0.5)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"locust exited {proc.returncode}; see {workdir}/stage-{users:04d}.log")
    ramp_s = users / spawn
    # The steady part: from a second after every user is running (locust needs ~1-2 s to
    # start) to the last sample before it stopped.
    win_start = started + 2.0 + ramp_s
    steady = [s for s in samples if s[0] >= win_start]
    if len(steady) < 2:
        steady = samples[-2:] if len(samples) >= 2 else samples
    if len(steady) >= 2:
        dt = steady[-1][0] - steady[0][0]
        locust_cpu = 100.0 * (steady[-1][1] - steady[0][1]) / dt
        proc_cpu = 100.0 * (steady[-1][2] - steady[0][2]) / dt
        win_end = steady[-1][0]
        win_start = steady[0][0]
    else:
        locust_cpu = proc_cpu = None
        win_end = ended
    stats, failures = read_locust_csv(prefix)
    agg = stats[("", "Aggregated")]
    n, f = int(agg["Request Count"]), int(agg["Failure Count"])
    stage = {
        "users": users,
        "spawn_rate": spawn,
        "seconds": round(ended - started, 1),
        "requests": n,
        "failures": f,
        "error_pct": 100.0 * f / n if n else 0.0,
        "rps": float(agg["Requests/s"]),
        "p50_ms": float(agg["50%"]),
        "p95_ms": float(agg["95%"]),
        "p99_ms": float(agg["99%"]),
        "max_ms": float(agg["Max Response Time"]),
        "locust_cpu_pct": locust_cpu,
        "service_cpu_pct_proc": proc_cpu,
        "window": [win_start, win_end],
        "by_route": {
            f"{k[0]} {k[1]}": {
                "requests": int(v["Request Count"]),
                "failures": int(v["Failure Count"]),
                "p95_ms": float(v["95%"]),
            }
            for k, v in stats.items()
            if k[0]
        },
        "top_failures": sorted(
            ({"method": r["Method"], "name": r["Name"], "error": r["Error"], "count": int(r["Occurrences"])}
             for r in failures),
            key=lambda r: -r["count"],
        )[:5],
    }
    return stage


def prometheus_stage(prom, stage):
    start, end = stage["window"]
    w = max(3, int(end - start))
    q = {
        "service_cpu_pct": f"100 * sum(rate(process_cpu_time_seconds_total[{w}s]))",
        "rss_mib": "max(max_over_time(process_memory_usage_bytes[%ds])) / 1048576" % w,
        "server_rps": f"sum(rate(http_server_request_duration_seconds_count[{w}s]))",
        "server_p95_ms": "1000 * histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket[%ds])))" % w,
        "db_p95_ms": "1000 * histogram_quantile(0.95, sum by (le) (rate(db_client_operation_duration_seconds_bucket[%ds])))" % w,
        "db_ops_per_s": f"sum(rate(db_client_operation_duration_seconds_count[{w}s]))",
        "db_pool_used_max": f'max(max_over_time(db_client_connection_count{{db_client_connection_state="used"}}[{w}s]))',
        "active_requests_max": f"max(max_over_time(sum(http_server_active_requests)[{w}s:1s]))",
        "items_stored": "max(items_stored)",
        "db_pool_max": "max(db_client_connection_max)",
    }
    out = {}
    for key, expr in q.items():
        try:
            out[key] = prom.scalar(expr, at=end)
        except Exception as err:  # keep going; the report shows the gap
            log(f"  query {key} failed: {err}")
            out[key] = None
    try:
        per_op = prom.query(
            "1000 * histogram_quantile(0.95, sum by (le, db_operation_name, db_collection_name) "
            f"(rate(db_client_operation_duration_seconds_bucket[{w}s])))",
            at=end,
        )
        out["db_p95_ms_by_operation"] = {
            f"{r['metric'].get('db_operation_name', '?')} {r['metric'].get('db_collection_name', '')}".strip():
            (None if r["value"][1] == "NaN" else round(float(r["value"][1]), 3))
            for r in per_op
        }
    except Exception as err:
        log(f"  per-operation DB query failed: {err}")
        out["db_p95_ms_by_operation"] = {}
    if out.get("service_cpu_pct") and out.get("server_rps"):
        out["cpu_us_per_req"] = out["service_cpu_pct"] / 100.0 / out["server_rps"] * 1e6
    out["prom_window_s"] = w
    return out


# --------------------------------------------------------------------------- analysis


def fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)


def diagnose(stages, broke):
    """Name the resource that ran out, from the numbers of the last (or breaking) stage."""
    last = stages[-1]
    first = stages[0]
    findings = []
    cpu = last.get("service_cpu_pct")
    if cpu is None:
        cpu = last.get("service_cpu_pct_proc")
    lcpu = last.get("locust_cpu_pct")
    inside = last.get("server_p95_ms")
    db_last, db_first = last.get("db_p95_ms"), first.get("db_p95_ms")
    by_op = last.get("db_p95_ms_by_operation") or {}
    slowest_op = max(((k, v) for k, v in by_op.items() if v is not None), key=lambda kv: kv[1], default=None)
    routes = sorted(last["by_route"].items(), key=lambda kv: -kv[1]["p95_ms"])
    cpu_full = cpu is not None and cpu >= SATURATED_PCT
    if cpu_full:
        where = ""
        if inside is not None and last["p95_ms"] > 0:
            if inside >= 0.5 * last["p95_ms"]:
                where = (f"; the wait is inside the service (in-service p95 ≈ {inside:.0f} ms, interpolated in "
                         f"coarse histogram buckets, vs the client's {last['p95_ms']:.0f} ms)")
            else:
                where = (f"; requests wait before reaching the handler (client p95 {last['p95_ms']:.0f} ms vs "
                         f"in-service p95 {inside:.1f} ms): a full run queue")
        findings.append(
            f"**service CPU** (primary): {cpu:.0f} % of its one core (core {SERVICE_CORE}){where}"
        )
        loaded = [s for s in stages if s.get("cpu_us_per_req") and (s.get("service_cpu_pct") or 0) >= 20]
        if len(loaded) >= 2 and loaded[-1]["cpu_us_per_req"] >= 1.3 * loaded[0]["cpu_us_per_req"]:
            a, b = loaded[0], loaded[-1]
            findings.append(
                f"the CPU cost per request grew from {a['cpu_us_per_req']:.0f} µs ({a['users']} users, "
                f"{fmt(a.get('items_stored'), '.0f')} items) to {b['cpu_us_per_req']:.0f} µs ({b['users']} users, "
                f"{fmt(b.get('items_stored'), '.0f')} items), so throughput fell once the core was full. The likely "
                "cause is GET /items (about half the mix): every call counts the whole table and pages with "
                "OFFSET, so its CPU cost grows with the table"
            )
    pool_used, pool_max = last.get("db_pool_used_max"), last.get("db_pool_max")
    if pool_used is not None and pool_max and pool_used >= pool_max:
        first_full = next((s["users"] for s in stages if (s.get("db_pool_used_max") or 0) >= pool_max), None)
        findings.append(
            f"**DB pool**: all {pool_max:.0f} connections in use (first at {first_full} users); DB p95 "
            f"{fmt(db_last, '.0f')} ms is mostly waiting for a connection, as every operation type shows "
            "the same p95"
            if by_op and db_last and min(v for v in by_op.values() if v) >= 0.7 * db_last
            else f"**DB pool**: all {pool_max:.0f} connections in use (first at {first_full} users)"
        )
    if lcpu is not None and lcpu >= SATURATED_PCT:
        findings.append(
            f"**load generator CPU**: Locust at {lcpu:.0f} % of core {LOADGEN_CORE}; beyond this it cannot "
            "send more, and its own scheduling delay inflates the latencies it measures"
        )
    elif lcpu is not None and cpu_full:
        findings.append(f"not the load generator: Locust used {lcpu:.0f} % of core {LOADGEN_CORE}")
    if db_last is not None and db_first and db_last >= 10 and db_last >= 5 * db_first and not cpu_full:
        findings.append(
            f"**database** (primary): DB p95 rose from {db_first:.2f} ms to {db_last:.2f} ms with service CPU "
            f"only {fmt(cpu, '.0f')} % (SQLite serialises writers; pool max used "
            f"{fmt(last.get('db_pool_used_max'), '.0f')})"
        )
    if slowest_op and db_last is not None and db_last >= 10:
        findings.append(
            "DB p95 by operation: " + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(
                by_op.items(), key=lambda kv: -(kv[1] or 0)) if v is not None)
            + (f"; the table held {last['items_stored']:.0f} items" if last.get("items_stored") else "")
        )
    if routes and last["p95_ms"] > 50:
        findings.append("client p95 by route: " + ", ".join(
            f"{k} {v['p95_ms']:.0f} ms" for k, v in routes))
    if len(stages) >= 2:
        prev = stages[-2]
        if last["users"] >= 1.3 * prev["users"] and last["rps"] < 1.1 * prev["rps"]:
            findings.append(
                f"**throughput plateau**: {prev['users']} → {last['users']} users moved RPS only "
                f"{prev['rps']:.0f} → {last['rps']:.0f}: more users only add queueing"
            )
    if last["failures"]:
        top = "; ".join(f"{r['count']}× {r['method']} {r['name']}: {r['error'][:120]}" for r in last["top_failures"][:3])
        findings.append(f"**errors**: {top}")
    if not findings:
        findings.append(
            f"nothing saturated: service CPU {fmt(cpu, '.0f')} %, Locust CPU {fmt(lcpu, '.0f')} %, "
            f"DB p95 {fmt(db_last, '.2f')} ms"
        )
    return findings


def optimisations(stages, broke):
    """The report's last section: three optimisations for the bottleneck this run found,
    each with its expected impact (from this run's numbers where they allow) and its
    implementation complexity."""
    last = stages[-1]
    loaded = [s for s in stages if s.get("cpu_us_per_req")]
    cost = loaded[-1]["cpu_us_per_req"] if loaded else None
    cpu = last.get("service_cpu_pct") or last.get("service_cpu_pct_proc")
    db_p95, db_first = last.get("db_p95_ms"), stages[0].get("db_p95_ms")
    cpu_full = cpu is not None and cpu >= SATURATED_PCT
    db_bound = (not cpu_full and db_p95 is not None and db_first and db_p95 >= 10 and db_p95 >= 5 * db_first)
    # One item read is ~29 % of this mix: CrudUser get 3 of 12, ReadOnlyUser get 5 of 15,
    # the two in equal numbers.
    get_share = (3 / 12 + 5 / 15) / 2
    # `just bench`: building the SERVER and CLIENT spans costs about 10 µs a request even
    # with nothing exported (README, "What telemetry costs").
    span_us = 10.0
    if cpu_full:
        found = (f"the service's CPU: {cpu:.0f} % of its one core at {last['users']} users"
                 + (f", {cost:.0f} µs of CPU per request" if cost else ""))
    elif db_bound:
        found = f"the database: DB p95 rose from {db_first:.2f} ms to {db_p95:.2f} ms while CPU stayed at {fmt(cpu, '.0f')} %"
    else:
        found = ("nothing saturated in this run (a smoke run, or the budget ended first); the full run saturates "
                 "the service's CPU (README, \"How much load it takes\"), so these target that")
    share = f" ≈ {100 * span_us / cost:.0f} % of the {cost:.0f} µs a request costs here" if cost else ""
    items = [
        ("Answer item reads without a round trip to the SQLite thread",
         "sqlx runs every SQLite connection on its own thread: each statement crosses threads twice (the "
         "request's task hands it to the connection's thread and is woken with the rows), which costs context "
         "switches and wake-ups on a core that is already full. A per-instance read-through cache for "
         "`GET /items/{id}`, invalidated by this instance's PUT, PATCH and DELETE, skips that for item reads.",
         f"item reads are ≈ {100 * get_share:.0f} % of this mix; a hit skips the statement, both thread "
         "crossings and row decoding, roughly half of a read's CPU, so ≈ 10–15 % more requests per core at "
         "saturation (an estimate: measure it with this report before and after).",
         "medium: a bounded cache (e.g. the moka crate), invalidation on every write path, hit/miss metrics; "
         "correct only while one instance owns the database (SQLite), so off with PostgreSQL and several "
         "replicas unless invalidation is shared."),
        ("Build spans only for the traces that are kept",
         "The default configuration builds a SERVER and a CLIENT span per request even when nothing exports "
         "them, for their ids. Where traces are not read, `OTEL_TRACES_EXPORTER=none` builds none; where they "
         "are, parent-based ratio sampling (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`) with spans left "
         "unbuilt when not sampled keeps a representative share.",
         f"≈ {span_us:.0f} µs per request{share}, i.e. that much more throughput at CPU saturation.",
         "low for the configuration (it exists today; the cost is losing trace ids in answers); medium for "
         "skipping span construction when unsampled, in the HTTP middleware."),
        ("Take writes off the single SQLite writer: PostgreSQL and more replicas",
         "SQLite serialises writers (WAL lets readers run beside one writer) and the service runs on one "
         "core here; writes (create, update, delete) are a third of the CRUD user's requests. On PostgreSQL "
         "(`DATABASE_URL=postgres://…`, supported today) the stack runs several replicas behind the gateway "
         "(`just up --scale api=3`), which spreads the CPU-bound work over cores and lets writes proceed "
         "concurrently.",
         "near-linear in cores for this CPU-bound mix until PostgreSQL itself saturates (≈ 2× on this 2-core "
         "box is the ceiling, the load generator shares it); p95 stays flat further, as writes no longer "
         "queue behind one another.",
         "low in code (nothing to change), medium in operations: a PostgreSQL to run, back up and size "
         "(DB_MAX_CONNECTIONS × replicas within its max_connections)."),
    ]
    if db_bound:
        items = [items[2], items[0], items[1]]  # the writer first when the database is the limit
    out = ["## Three optimisations for the bottleneck found", "",
           f"The bottleneck: {found}. (Paging with COUNT(*) and OFFSET, which made `GET /items` dearer as the "
           "table grew, is being replaced by keyset paging in separate work; these are the next costs.)", ""]
    for n, (title, what, impact, complexity) in enumerate(items, 1):
        out += [f"{n}. **{title}.** {what}", f"   - *Expected impact:* {impact}",
                f"   - *Implementation complexity:* {complexity}", ""]
    return out


# --------------------------------------------------------------------------- charts and report


def charts(stages, out_dir, broke_users):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [s["users"] for s in stages]
    files = {}

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(users, [s["rps"] for s in stages], "o-", label="Locust req/s")
    ax.plot(users, [s.get("server_rps") or 0 for s in stages], "x--", label="server req/s (Prometheus)")
    ax.set_xlabel("users")
    ax.set_ylabel("requests per second")
    ax.set_title("items-api throughput vs users")
    if broke_users:
        ax.axvline(broke_users, color="red", linestyle=":", label=f"breaking point ({broke_users} users)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    files["rps"] = out_dir / "stress_rps.png"
    fig.savefig(files["rps"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax.plot(users, [max(s[key], 0.1) for s in stages], "o-", label=f"{label} (Locust)")
    ax.plot(users, [max(s.get("server_p95_ms") or 0.01, 0.01) for s in stages], "x--", label="p95 in service (Prometheus)")
    ax.plot(users, [max(s.get("db_p95_ms") or 0.01, 0.01) for s in stages], "x:", label="DB p95 (Prometheus)")
    ax.axhline(P95_LIMIT_MS, color="red", linestyle=":", label=f"p95 limit {P95_LIMIT_MS:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("users")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title("items-api latency vs users")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["latency"] = out_dir / "stress_latency.png"
    fig.savefig(files["latency"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(users, [s.get("service_cpu_pct") or 0 for s in stages], "o-", label=f"service CPU % (core {SERVICE_CORE})")
    ax.plot(users, [s.get("locust_cpu_pct") or 0 for s in stages], "s--", label=f"Locust CPU % (core {LOADGEN_CORE})")
    ax.axhline(100, color="grey", linestyle=":")
    ax.set_ylim(0, 110)
    ax.set_xlabel("users")
    ax.set_ylabel("% of one core")
    ax2 = ax.twinx()
    ax2.plot(users, [s.get("rss_mib") or 0 for s in stages], "^-.", color="tab:green", label="service RSS MiB")
    ax2.set_ylabel("RSS MiB")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    ax.set_title("resources vs users")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    files["resources"] = out_dir / "stress_resources.png"
    fig.savefig(files["resources"], dpi=100)
    plt.close(fig)
    return files


def write_report(out_dir, meta, stages, broke, findings, crosscheck, files):
    lines = [
        "# items-api stress test",
        "",
        f"Generated {meta['generated']}{' (QUICK mode: small stages, a smoke run)' if meta['quick'] else ''}. "
        f"Binary `{meta['binary']}`, SQLite in a temp dir, Locust {meta['locust_version']}, "
        f"Prometheus scraping every {meta['scrape_s']} s.",
        "",
        f"CPU layout: the service is pinned to core {SERVICE_CORE} (`taskset -c {SERVICE_CORE}`, so Tokio runs one "
        f"worker and 100 % = its whole budget); Locust, Prometheus and this driver share core {LOADGEN_CORE}. "
        "Locust is a single process and competes with Prometheus for its core, so at high stages the load "
        "generator can saturate before the service: the Locust CPU column shows when. Other processes on the "
        f"box used {meta['other_processes_cpu']['others_pct_of_box']} % of its CPU during the run.",
        "",
        f"User mix: load/locustfile.py (CrudUser and ReadOnlyUser, equal numbers), think time "
        + (f"{meta['wait'][0]}–{meta['wait'][1]} s" if meta.get("wait") else "the brief's (CRUD 1–3 s, read-only 2–5 s)")
        + f". Stages of {meta['stage_s']} s; each stage is a fresh Locust "
        "process (users ramp in ≤ 4 s; Locust's numbers cover the whole stage, Prometheus's the steady part). "
        "The database is kept across stages and grows (CrudUsers create twice as often as they delete, and "
        "a CrudUser deletes only beyond the 3 items it creates when it starts), so later stages also list a "
        "bigger table.",
        f"Stop rule: error ratio > {ERROR_LIMIT * 100:.0f} % or p95 > {P95_LIMIT_MS:.0f} ms, or the "
        f"{meta['budget_s']:.0f} s budget.",
        "",
        "| users | req/s | p50 ms | p95 ms | p99 ms | errors % | service CPU % | CPU µs/req | Locust CPU % | RSS MiB | in-service p95 ms | DB p95 ms | DB pool used | items in table |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(
            f"| {s['users']} | {s['rps']:.0f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | {s['p99_ms']:.0f} "
            f"| {s['error_pct']:.2f} | {fmt(s.get('service_cpu_pct'), '.0f')} | {fmt(s.get('cpu_us_per_req'), '.0f')} "
            f"| {fmt(s.get('locust_cpu_pct'), '.0f')} "
            f"| {fmt(s.get('rss_mib'), '.1f')} | {fmt(s.get('server_p95_ms'), '.2f')} | {fmt(s.get('db_p95_ms'), '.2f')} "
            f"| {fmt(s.get('db_pool_used_max'), '.0f')}/{fmt(s.get('db_pool_max'), '.0f')} | {fmt(s.get('items_stored'), '.0f')} |"
        )
    lines += [""]
    if broke:
        lines.append(f"**Breaking point: {broke['users']} users** ({broke['reason']}); the last stage that held "
                     f"was {broke['last_ok'] if broke['last_ok'] else 'none'} users.")
    else:
        lines.append(f"**No breaking point** within the budget: the last stage, {stages[-1]['users']} users, "
                     f"held (p95 {stages[-1]['p95_ms']:.0f} ms, errors {stages[-1]['error_pct']:.2f} %).")
    lines += ["", "What saturated (read from the last stage's numbers):", ""]
    lines += [f"- {f}" for f in findings]
    lines += [
        "",
        "## Cross-check: Locust vs Prometheus",
        "",
        f"- requests Locust made (all stages): **{crosscheck['locust_total']}**",
        f"- `sum(http_server_request_duration_seconds_count)` in Prometheus after a final scrape: "
        f"**{crosscheck['prometheus_total']}**",
        f"- same counter read straight from /metrics: {crosscheck['metrics_endpoint_total']}",
        f"- {'EQUAL' if crosscheck['equal'] else 'NOT EQUAL'}"
        + ("" if crosscheck["equal"] else f" (difference {crosscheck['difference']}; connection-level failures, "
           f"which never reach the service, were {crosscheck['connection_failures']})"),
        "",
        "## Charts",
        "",
    ]
    lines += [f"![{k}]({p.name})" for k, p in files.items()]
    lines += [
        "",
        "## How to read it",
        "",
        "- *req/s, p50/p95/p99, errors %* are Locust's, per stage, as a client sees them.",
        "- *service CPU %* is `rate(process_cpu_time_seconds_total)` over the stage's steady window; ~100 % "
        "means the service's only core is full.",
        "- *CPU µs/req* is service CPU divided by the service's own request rate "
        "(`sum(rate(http_server_request_duration_seconds_count))`).",
        "- *in-service p95* is `histogram_quantile(0.95, http_server_request_duration_seconds_bucket)`: the "
        "time inside the service's middleware. When client p95 ≫ in-service p95, requests waited outside "
        "the handler (a full CPU run queue, socket backlog, or a busy load generator). Above 1 s the buckets "
        "are 1, 2.5, 5 s wide, so the interpolated quantile is coarse there and can exceed Locust's.",
        "- *DB pool used* is the peak of `db_client_connection_count{state=\"used\"}` over "
        "`db_client_connection_max`; DB operation time includes waiting for a pooled connection.",
        "- *DB p95* is `histogram_quantile(0.95, db_client_operation_duration_seconds_bucket)`; it climbing "
        "while CPU is not full points at the database (SQLite allows one writer at a time).",
        "",
    ]
    lines += optimisations(stages, broke)
    (out_dir / "stress.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description="items-api stress test with Locust and Prometheus")
    parser.add_argument("--quick", action="store_true", help="stages 5,10,20 of 10 s each (~1 min)")
    parser.add_argument("--brief", action="store_true",
                        help="the FastAPI brief's stages: 20 users spawn 5/s for 5 min, 100 spawn 10/s for 5 min, "
                             "200 spawn 20/s, then +100 users per 5 min stage until breaking (budget 40 min), "
                             "with the locustfile's own think times")
    parser.add_argument("--stages", help="comma list of user counts to start with (default 20,100,200)")
    parser.add_argument("--step", type=int, help="users added per stage after the listed ones "
                        "(default: none, grow by --growth instead)")
    parser.add_argument("--growth", type=float, default=1.5,
                        help="after the listed stages, multiply users by this (rounded to 50; default 1.5)")
    parser.add_argument("--stage-seconds", type=int, help="seconds per stage (default 40)")
    parser.add_argument("--budget", type=float, help="seconds of load at most (default 420)")
    parser.add_argument("--wait", default=WAIT_DEFAULT,
                        help=f"Locust think time range, seconds (default {WAIT_DEFAULT}; --brief: the locustfile's)")
    parser.add_argument("--binary", help="items-api release binary")
    parser.add_argument("--out", default=str(harness.REPORTS))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (service log, Prometheus data)")
    parser.add_argument("--report-only", metavar="STRESS_JSON",
                        help="no load: rewrite stress.md and the charts from a saved stress.json")
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads(Path(args.report_only).read_text())
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        broke = saved["breaking_point"]
        findings = diagnose(saved["stages"], broke)
        files = charts(saved["stages"], out_dir, broke["users"] if broke else None)
        write_report(out_dir, saved["meta"], saved["stages"], broke, findings, saved["crosscheck"], files)
        saved["findings"] = findings
        (out_dir / "stress.json").write_text(json.dumps(saved, indent=2))
        print(f"rewrote {out_dir / 'stress.md'} from {args.report_only}")
        return
    spawn_rates = {}  # users -> spawn rate; others: all users running within ~4 s
    if args.quick:
        stages = [5, 10, 20]
        step, stage_s, budget = 10, 10, 60.0
    elif args.brief:
        stages, step, stage_s, budget = [users for users, _ in BRIEF_SPAWN], 100, 300, 2400.0
        spawn_rates = dict(BRIEF_SPAWN)
    else:
        stages, step, stage_s, budget = [20, 100, 200], None, 40, 420.0
    if args.stages:
        stages = [int(x) for x in args.stages.split(",")]
    step = args.step or step
    stage_s = args.stage_seconds or stage_s
    budget = args.budget or budget
    # The brief's profile keeps the locustfile's think times (CRUD 1-3 s, read-only 2-5 s).
    wait = None if args.brief and args.wait == WAIT_DEFAULT else tuple(float(x) for x in args.wait.split("-", 1))
    if not shutil.which("locust"):
        sys.exit("locust not found: pip install -r load/requirements.txt")

    harness.pin_self(LOADGEN_CORE)
    binary = harness.find_binary(args.binary)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="items-stress-"))
    locust_version = subprocess.run(["locust", "--version"], capture_output=True, text=True).stdout.split()[1]
    log(f"binary {binary}; temp dir {tmp}")
    then = f"+{step}" if step else f"x{args.growth}"
    think = f"{wait[0]}-{wait[1]} s" if wait else "the locustfile's (CRUD 1-3 s, read-only 2-5 s)"
    log(f"service on core {SERVICE_CORE}; Locust + Prometheus on core {LOADGEN_CORE}; stages {stages} then {then}, "
        f"{stage_s} s each, budget {budget:.0f} s, think time {think}")

    audit = harness.CpuAudit()
    service = Service(binary, tmp / "service", stdout_path=tmp / "service.log")
    prom = None
    results = []
    broke = None
    exit_code = 0
    try:
        service.start()
        log(f"service up at {service.base}")
        prom = Prometheus(tmp, service.port).start()
        log(f"prometheus up at {prom.url}, scraping every {prom.scrape_s} s")
        t_begin = time.monotonic()
        users_iter = list(stages)
        i = 0
        last_ok = None
        while True:
            if i < len(users_iter):
                users = users_iter[i]
            elif step:
                users = results[-1]["users"] + step
            else:
                users = max(results[-1]["users"] + 50, int(round(results[-1]["users"] * args.growth / 50.0)) * 50)
            elapsed = time.monotonic() - t_begin
            if elapsed + stage_s + 5 > budget and results:
                log(f"time budget reached ({elapsed:.0f} s of {budget:.0f} s): stopping before {users} users")
                break
            log(f"stage {i + 1}: {users} users for {stage_s} s")
            stage = run_stage(args, service, users, stage_s, tmp, wait,
                              spawn_rates.get(users, BRIEF_LATER_SPAWN if args.brief else None))
            time.sleep(prom.scrape_s * 1.5)  # let Prometheus scrape the end of the window
            stage.update(prometheus_stage(prom, stage))
            results.append(stage)
            log(
                f"  {stage['rps']:.0f} req/s, p50 {stage['p50_ms']:.0f} ms, p95 {stage['p95_ms']:.0f} ms, "
                f"p99 {stage['p99_ms']:.0f} ms, errors {stage['error_pct']:.2f} %, service CPU "
                f"{fmt(stage.get('service_cpu_pct'), '.0f')} %, Locust CPU {fmt(stage.get('locust_cpu_pct'), '.0f')} %, "
                f"RSS {fmt(stage.get('rss_mib'), '.1f')} MiB, DB p95 {fmt(stage.get('db_p95_ms'), '.2f')} ms"
            )
            reasons = []
            if stage["error_pct"] > ERROR_LIMIT * 100:
                reasons.append(f"error ratio {stage['error_pct']:.2f} % > {ERROR_LIMIT * 100:.0f} %")
            if stage["p95_ms"] > P95_LIMIT_MS:
                reasons.append(f"p95 {stage['p95_ms']:.0f} ms > {P95_LIMIT_MS:.0f} ms")
            if reasons:
                broke = {"users": users, "reason": " and ".join(reasons), "last_ok": last_ok}
                log(f"BREAKING POINT at {users} users: {broke['reason']}")
                break
            last_ok = users
            i += 1

        # Cross-check after one more scrape than the last request.
        log("cross-check: waiting for a scrape after the last request")
        t_last = time.time()
        deadline = time.monotonic() + 15
        while prom.last_scrape() < t_last + 0.2 and time.monotonic() < deadline:
            time.sleep(0.25)
        prom_total = prom.scalar("sum(http_server_request_duration_seconds_count)")
        client = harness.Client(service.port)
        _, _, body = client.request("GET", "/metrics")
        client.close()
        direct = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("http_server_request_duration_seconds_count")
        )
        locust_total = sum(s["requests"] for s in results)
        conn_failures = sum(
            r["count"] for s in results for r in s["top_failures"]
            if "status" not in r["error"].lower() and "expected" not in r["error"]
        )
        crosscheck = {
            "locust_total": locust_total,
            "prometheus_total": None if prom_total is None else int(prom_total),
            "metrics_endpoint_total": int(direct),
            "equal": prom_total is not None and int(prom_total) == locust_total,
            "difference": None if prom_total is None else int(prom_total) - locust_total,
            "connection_failures": conn_failures,
        }
        log(f"requests: Locust {locust_total}, Prometheus {crosscheck['prometheus_total']}, "
            f"/metrics {crosscheck['metrics_endpoint_total']} → {'EQUAL' if crosscheck['equal'] else 'NOT EQUAL'}")
        if not crosscheck["equal"]:
            exit_code = 1
    finally:
        if prom:
            prom.stop()
        service.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    others = audit.stop()
    findings = diagnose(results, broke)
    meta = {
        "other_processes_cpu": others,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "profile": "quick" if args.quick else "brief" if args.brief else "default",
        "binary": str(binary),
        "locust_version": locust_version,
        "scrape_s": 1,
        "stage_s": stage_s,
        "budget_s": budget,
        "wait": wait,
    }
    files = charts(results, out_dir, broke["users"] if broke else None)
    write_report(out_dir, meta, results, broke, findings, crosscheck, files)
    (out_dir / "stress.json").write_text(json.dumps(
        {"meta": meta, "stages": results, "breaking_point": broke, "findings": findings, "crosscheck": crosscheck},
        indent=2))
    print()
    print((out_dir / "stress.md").read_text().split("## Cross-check")[0].split("\n\n", 4)[-1])
    print(f"wrote {out_dir / 'stress.md'}, stress.json and {', '.join(p.name for p in files.values())}")
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
