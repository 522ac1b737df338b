#!/usr/bin/env python3
"""What the telemetry costs, in instructions per request: repeatable to about 1 % (0.2 % on a
quiet box) where wall-clock ratios are not (on a shared box they moved 4x between rounds).

    python3 load/icount.py                  # N=1000 per config and endpoint, ~3 min
    python3 load/icount.py --quick          # N=100, warm-up 20, idle 1 s: the CI smoke run (~1.5 min)
    python3 load/icount.py --configs off,full_grpc --endpoints get --keep-dumps reports/icount-dumps

Each run starts the release binary under `valgrind --tool=callgrind` (all threads in one
count) on a fresh SQLite file, pinned to core 0 like bench.py, with LOG_FORMAT=json and
RUST_LOG=info (stdout to a file). Then, on one keep-alive connection, one request after
another:

  1. GET /items/{id}: create one item first; POST /items: nothing first;
  2. W warm-up requests (200; 20 with --quick), then wait until the OTLP receiver has
     every warm-up span and log record (full configs only);
  3. `callgrind_control -z PID` (zero the counters);
  4. N measured requests (1000; 100 with --quick), each must answer 200 / 201;
  5. idle 7 s (1 s with --quick), and in the full configs also until the receiver has every
     span and log record the measured requests made, so the exporters' work is counted;
  6. `callgrind_control -d PID` (dump) and divide the dump's total by N.

So the per-request count includes the exporters' work for those requests, and the idle
timers (under 0.1 k per request at N=1000: 0.2 s and 15 s of idle gave the same count).

Configs (bench.py's, with one difference: `full` sends metrics to Prometheus only, since an
OTLP metric push runs once per interval, not per request, and would make the count depend
on how long valgrind takes):
  off        OTEL_SDK_DISABLED=true: no OTel providers; the stdout JSON access log stays.
  metrics    Prometheus /metrics only: OTEL_TRACES_EXPORTER=none, OTEL_LOGS_EXPORTER=none.
  default    the defaults with no OTLP endpoint: metrics; spans built for their trace ids
             and exported nowhere; no OTLP logs.
  full       metrics + traces at 100 % (parentbased_always_on) + OTLP logs, exported over
             OTLP/HTTP protobuf to load/otlp_sink.py (a live receiver on core 1).
  full_grpc  the same over OTLP/gRPC (the sink needs grpcio).

Writes reports/icount.json (or --out DIR) and prints the table with ratios against off.
Exits non-zero when a run fails, a request is not 2xx, or (full configs) the receiver did
not get exactly the spans and log records the measured requests make.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import harness  # noqa: E402
from harness import Client, OtlpSink, Service, log  # noqa: E402

ENDPOINTS = {
    "GET /items/{id}": {"key": "get", "method": "GET", "expect": 200},
    "POST /items": {"key": "post", "method": "POST", "expect": 201},
}
POST_BODY = {"name": "bench item", "price": 9.99, "quantity": 3}  # what wrk/bench.lua posts

CONFIG_DOC = {
    "off": "OTEL_SDK_DISABLED=true (stdout JSON access log still on)",
    "metrics": "metrics only: Prometheus /metrics, OTEL_TRACES_EXPORTER=none, OTEL_LOGS_EXPORTER=none",
    "default": "default env, no OTLP endpoint: Prometheus /metrics; spans built for trace ids, exported nowhere",
    "full": "Prometheus metrics + traces 100 % + OTLP logs, to a live receiver over OTLP/HTTP protobuf",
    "full_grpc": "Prometheus metrics + traces 100 % + OTLP logs, to a live receiver over OTLP/gRPC",
}
EXPORTING = {"full": "http/protobuf", "full_grpc": "grpc"}

# What one request sends to the receiver (docs/DESIGN.md §6): one SERVER span and one CLIENT
# span per DB statement (both endpoints run one), and one access log record.
EXPECTED_PER_REQUEST = {
    "GET /items/{id}": {"spans": 2, "log_records": 1},
    "POST /items": {"spans": 2, "log_records": 1},
}


def config_env(name, sink):
    """bench.py's environments; the full ones without the OTLP metric push."""
    if name in EXPORTING:
        protocol = EXPORTING[name]
        return bench.config_env("full", sink.url(protocol), protocol, otlp_metrics=False)
    return bench.config_env(name, None)


# --------------------------------------------------------------------------- callgrind


def valgrind_wrapper(out_file, log_file):
    return [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_file}",
        f"--log-file={log_file}",
        "--dump-instr=no",
        "--vgdb=yes",
    ]


def callgrind_control(flag, pid):
    out = subprocess.run(
        ["callgrind_control", flag, str(pid)], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        raise RuntimeError(f"callgrind_control {flag} {pid} failed: {out.stdout}{out.stderr}")
    return out.stdout


def dump_total(path):
    """The instruction total of one callgrind dump (`summary:`, else `totals:`)."""
    text = Path(path).read_text(errors="replace")
    for key in ("summary", "totals"):
        m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no summary/totals line in {path}")


def wait_dump(out_file, known, timeout=120.0):
    """The dump file `callgrind_control -d` made: one that was not in `known`, complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(set(Path(out_file).parent.glob(Path(out_file).name + "*")) - known)
        for path in new:
            text = path.read_text(errors="replace")
            if re.search(r"^totals:\s+\d+", text, re.M):
                return path
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump appeared next to {out_file}")


# --------------------------------------------------------------------------- one run


def send(client, endpoint, item_id, n, statuses):
    spec = ENDPOINTS[endpoint]
    for _ in range(n):
        if spec["method"] == "GET":
            status, _, _ = client.request("GET", f"/items/{item_id}")
        else:
            status, _, _ = client.request("POST", "/items", POST_BODY)
        statuses[str(status)] = statuses.get(str(status), 0) + 1


def wait_sink(sink, want, timeout):
    """Polls the receiver until it holds at least `want` ({"spans": n, "log_records": m});
    returns what it holds then."""
    deadline = time.monotonic() + timeout
    while True:
        got = received(sink.stats())
        if all(got[k] >= v for k, v in want.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def received(stats):
    return {
        "spans": stats.get("/v1/traces", {}).get("spans", 0),
        "log_records": stats.get("/v1/logs", {}).get("log_records", 0),
        "metrics": stats.get("/v1/metrics", {}).get("metrics", 0),
        "unparsed": sum(e.get("unparsed", 0) for e in stats.values()),
    }


def tail(path, lines=15):
    try:
        return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def one_run(args, binary, workdir, cfg, endpoint, sink, keep_dir):
    """One service under callgrind, one endpoint: returns the run's record."""
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{cfg}.{ENDPOINTS[endpoint]['key']}"
    out_file = workdir / f"callgrind.{tag}.out"
    wrapper = valgrind_wrapper(out_file, workdir / f"valgrind.{tag}.log")
    svc = Service(binary, workdir, env=config_env(cfg, sink), stdout_path=workdir / f"stdout.{tag}.log",
                  wrapper=wrapper)
    exporting = cfg in EXPORTING
    expect = EXPECTED_PER_REQUEST[endpoint]
    # The receiver is shared by the runs: this run's telemetry is what comes on top of this.
    start_counts = received(sink.stats()) if exporting else None
    t0 = time.monotonic()
    try:
        svc.start(timeout=args.start_timeout)
    except RuntimeError as err:
        svc.stop()
        raise RuntimeError(f"{tag}: the service did not start under valgrind: {err}\n"
                           f"{tail(workdir / f'valgrind.{tag}.log')}{tail(svc.stdout_path)}") from err
    started_s = time.monotonic() - t0
    statuses_warm, statuses = {}, {}
    client = Client(svc.port)
    try:
        # Everything the service answered before the zero: setup, then warm-up.
        item_id = client.create_item() if endpoint == "GET /items/{id}" else None
        before_zero = 1 if item_id is not None else 0
        send(client, endpoint, item_id, args.warmup, statuses_warm)
        before_zero += args.warmup
        baseline = None
        if exporting:
            # Everything made so far must be out before the zero, so that the receiver's delta
            # over the measured window is those requests' and nothing else.
            want = {k: start_counts[k] + v * before_zero for k, v in expect.items()}
            baseline = wait_sink(sink, want, timeout=args.flush_timeout)
            if baseline["spans"] < want["spans"] or baseline["log_records"] < want["log_records"]:
                raise RuntimeError(f"{tag}: warm-up telemetry did not arrive: want {want}, got {baseline}")
            time.sleep(1.5)  # anything still on its way (start-up log records)
            baseline = received(sink.stats())
        callgrind_control("-z", svc.proc.pid)
        t1 = time.monotonic()
        send(client, endpoint, item_id, args.requests, statuses)
        measured_s = time.monotonic() - t1
        # Idle at least --idle; the exporting configs also until the receiver has all that the
        # measured requests made (so a shorter --idle still counts their whole export).
        idle_until = time.monotonic() + args.idle
        if exporting:
            wait_sink(sink, {k: baseline[k] + v * args.requests for k, v in expect.items()},
                      timeout=args.flush_timeout)
        time.sleep(max(0.0, idle_until - time.monotonic()))
        idle_s = time.monotonic() - t1 - measured_s
        known = set(out_file.parent.glob(out_file.name + "*"))
        callgrind_control("-d", svc.proc.pid)
        dump = wait_dump(out_file, known)
        at_dump = received(sink.stats()) if exporting else None
    finally:
        client.close()
        svc.stop(timeout=120)
    total = dump_total(dump)
    record = {
        "instructions_total": total,
        "instructions_per_request": round(total / args.requests, 1),
        "requests": args.requests,
        "statuses": statuses,
        "answered_2xx": sum(v for k, v in statuses.items() if k.startswith("2")),
        "warmup_statuses": statuses_warm,
        "start_s": round(started_s, 1),
        "measured_s": round(measured_s, 1),
        "idle_s": round(idle_s, 1),
    }
    if exporting:
        want = {k: v * args.requests for k, v in expect.items()}
        delta = {k: at_dump[k] - baseline[k] for k in at_dump}
        record["otlp"] = {
            "protocol": EXPORTING[cfg],
            "expected": want,
            "received_at_dump": delta,
            "complete_at_dump": all(delta[k] == v for k, v in want.items()) and delta["unparsed"] == 0,
        }
    if keep_dir:
        keep_dir.mkdir(parents=True, exist_ok=True)
        kept = keep_dir / f"callgrind.{tag}.out"
        shutil.copyfile(dump, kept)
        record["dump"] = str(kept)
    return record


def problems(record, cfg, endpoint):
    """Why a run cannot be trusted, or []."""
    out = []
    want = ENDPOINTS[endpoint]["expect"]
    if record["statuses"] != {str(want): record["requests"]}:
        out.append(f"{cfg} {endpoint}: expected {record['requests']} x {want}, got {record['statuses']}")
    if record["instructions_total"] <= 0:
        out.append(f"{cfg} {endpoint}: no instructions counted")
    otlp = record.get("otlp")
    if otlp and not otlp["complete_at_dump"]:
        out.append(f"{cfg} {endpoint}: receiver got {otlp['received_at_dump']}, expected {otlp['expected']}")
    return out


# --------------------------------------------------------------------------- report


def fmt_table(results, configs):
    lines = ["| endpoint | config | instructions/request | vs off |", "|---|---|---:|---:|"]
    for ep in ENDPOINTS:
        if ep not in results.get("off", {}):
            continue
        base = results["off"][ep]["instructions_per_request"]
        for cfg in configs:
            r = results.get(cfg, {}).get(ep)
            if r is None:
                continue
            lines.append(f"| {ep} | {cfg} | {r['instructions_per_request'] / 1e3:.1f} k | "
                         f"{r['instructions_per_request'] / base:.3f}x |")
    return "\n".join(lines)


def valgrind_version():
    out = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    return out.stdout.strip()


def git_commit():
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=harness.REPO,
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def main():
    parser = argparse.ArgumentParser(description="items-api telemetry cost in instructions per request (callgrind)")
    parser.add_argument("--quick", action="store_true", help="N=100, warm-up 20, idle 1 s (the CI smoke run)")
    parser.add_argument("--requests", type=int, default=1000, help="measured requests per run (N)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per run")
    parser.add_argument("--idle", type=float, default=7.0, help="seconds of idle before the dump")
    parser.add_argument("--configs", default="off,metrics,default,full,full_grpc",
                        help="comma list of " + ",".join(CONFIG_DOC) + " (off is always included)")
    parser.add_argument("--endpoints", default="get,post", help="comma list of get, post")
    parser.add_argument("--binary", help="items-api release binary")
    parser.add_argument("--out", default=str(harness.REPORTS), help="directory for icount.json")
    parser.add_argument("--keep-dumps", help="copy each run's callgrind dump here (for callgrind_annotate)")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds for start-up under valgrind")
    parser.add_argument("--flush-timeout", type=float, default=60.0,
                        help="seconds to wait for the warm-up telemetry to reach the receiver")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup, args.idle = 100, 20, 1.0
    if args.requests < 1 or args.warmup < 0:
        sys.exit("--requests must be ≥ 1 and --warmup ≥ 0")
    configs = harness.config_list(args.configs, CONFIG_DOC)
    keys = {v["key"]: ep for ep, v in ENDPOINTS.items()}
    endpoints = []
    for k in (e.strip() for e in args.endpoints.split(",") if e.strip()):
        if k not in keys:
            sys.exit(f"unknown endpoint {k!r} (get, post)")
        endpoints.append(keys[k])
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install valgrind")
    grpc = "full_grpc" in configs
    if grpc:
        try:
            import grpc as _  # noqa: F401
        except ImportError:
            sys.exit("full_grpc needs grpcio for the OTLP/gRPC receiver: pip install -r load/requirements.txt")

    harness.pin_self(harness.LOADGEN_CORE)
    binary = harness.find_binary(args.binary)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep_dir = Path(args.keep_dumps) if args.keep_dumps else None
    tmp = Path(tempfile.mkdtemp(prefix="items-icount-"))
    log(f"binary {binary}; {len(configs)} configs x {len(endpoints)} endpoints, N={args.requests}, "
        f"warm-up {args.warmup}, idle {args.idle} s, under callgrind")
    started = time.monotonic()
    results = {c: {} for c in configs}
    failures = []
    sink = OtlpSink(grpc=grpc)
    try:
        sink.start()
        for ep in endpoints:
            for cfg in configs:
                rec = one_run(args, binary, tmp / f"{cfg}-{ENDPOINTS[ep]['key']}", cfg, ep, sink, keep_dir)
                results[cfg][ep] = rec
                failures += problems(rec, cfg, ep)
                extra = ""
                if "otlp" in rec:
                    extra = f"; receiver got {rec['otlp']['received_at_dump']} (expected {rec['otlp']['expected']})"
                log(f"  {ep:16s} {cfg:9s} {rec['instructions_per_request'] / 1e3:8.1f} k instr/req  "
                    f"({rec['start_s']} s start, {rec['measured_s']} s measured){extra}")
    finally:
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for ep in endpoints:
        base = results["off"][ep]["instructions_per_request"]
        for cfg in configs:
            results[cfg][ep]["ratio_vs_off"] = round(results[cfg][ep]["instructions_per_request"] / base, 4)
    report = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "binary": str(binary),
        "commit": git_commit(),
        "setup": {
            "tool": valgrind_version() + " --tool=callgrind (all threads)",
            "requests": args.requests,
            "warmup": args.warmup,
            "idle_s": args.idle,
            "env": {"LOG_FORMAT": "json", "RUST_LOG": "info"},
            "service_core": harness.SERVICE_CORE,
            "expected_per_request": EXPECTED_PER_REQUEST,
            "elapsed_s": round(time.monotonic() - started, 1),
        },
        "configs": {c: CONFIG_DOC[c] for c in configs},
        "results": results,
        "problems": failures,
    }
    (out_dir / "icount.json").write_text(json.dumps(report, indent=2))
    print()
    print(fmt_table(results, configs))
    print(f"\nwrote {out_dir / 'icount.json'} ({report['setup']['elapsed_s']} s)")
    if failures:
        print("\nPROBLEMS:\n  " + "\n  ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
