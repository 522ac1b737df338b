#!/usr/bin/env python3
"""Soak test: the release service at ~70 % of its measured capacity for 10 minutes, with RSS,
p99 and the error count written to reports/soak.md every 30 s. RSS must stay flat.

    python3 load/soak.py [--minutes 10] [--interval 30] [--ratio 0.7] [--binary PATH]

The service runs pinned to core 0 with its default telemetry (metrics on /metrics, spans made
in-process for trace ids); wrk paces a read-mostly CRUD mix (load/wrk/soak.lua) from core 1.
Capacity is measured first with the same mix, unpaced.
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from harness import (LOAD_DIR, LOADGEN_CORE, REPORTS, Client, Service, find_binary, log, pin,
                     pin_self)

SEED_ITEMS = 100
# Each paced connection sends one request per PACE_MS, so connections = target * PACE_MS / 1000.
PACE_MS = 10


def wrk(port, seconds, connections, pause_ms):
    command = pin(LOADGEN_CORE) + [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(LOAD_DIR / "wrk" / "soak.lua"), f"http://127.0.0.1:{port}",
        "--", str(SEED_ITEMS), str(pause_ms),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRK_JSON "))
    result = json.loads(line[len("WRK_JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in
                           ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--binary")
    args = parser.parse_args()
    pin_self()
    REPORTS.mkdir(exist_ok=True)
    report = REPORTS / "soak.md"

    with tempfile.TemporaryDirectory(prefix="items-soak-") as tmp, \
            Service(find_binary(args.binary), Path(tmp)) as service:
        client = Client(service.port)
        for i in range(SEED_ITEMS):
            client.create_item(name=f"seed {i}")
        log("measuring capacity: 15 s unpaced, 32 connections")
        capacity = wrk(service.port, 15, 32, 0)["rps"]
        target = capacity * args.ratio
        connections = max(1, round(target * PACE_MS / 1000))
        # A paced connection waits PACE_MS *after* each answer, so it sends a little less than
        # 1000 / PACE_MS per second; one calibration run corrects the connection count.
        achieved = wrk(service.port, 10, connections, PACE_MS)["rps"]
        connections = max(1, round(connections * target / achieved))
        log(f"capacity {capacity:.0f} req/s; soaking at {target:.0f} req/s "
            f"({connections} connections, one request per {PACE_MS} ms each after its answer)")

        rows = []
        windows = max(1, round(args.minutes * 60 / args.interval))
        started = time.monotonic()
        for window in range(1, windows + 1):
            result = wrk(service.port, args.interval, connections, PACE_MS)
            rss = service.rss_bytes()
            rows.append((window * args.interval, result["rps"], result["p99_us"] / 1000,
                         result["errors"], rss / 2**20))
            log(f"{window * args.interval:5d} s  {result['rps']:7.0f} req/s  "
                f"p99 {result['p99_us'] / 1000:6.2f} ms  errors {result['errors']}  "
                f"RSS {rss / 2**20:6.1f} MiB")
            write_report(report, capacity, target, connections, rows, done=window == windows,
                         ratio=args.ratio)
        log(f"soak finished in {time.monotonic() - started:.0f} s; report: {report}")
        verdict = rss_verdict(rows)
        log(verdict)
        return 0 if "flat" in verdict and sum(r[3] for r in rows) == 0 else 1


def rss_verdict(rows):
    """Flat: the second half's peak RSS is within 10 % of the first half's (after warm-up)."""
    half = len(rows) // 2
    if half == 0:
        return "too short to judge RSS"
    first = max(r[4] for r in rows[:half])
    second = max(r[4] for r in rows[half:])
    growth = (second - first) / first * 100
    word = "flat" if growth <= 10 else "GROWING"
    return (f"RSS {word}: peak {first:.1f} MiB in the first half, {second:.1f} MiB in the second "
            f"({growth:+.1f} %)")


def write_report(path, capacity, target, connections, rows, done, ratio):
    lines = [
        "# Soak",
        "",
        f"`python3 load/soak.py` (`just soak`): release build pinned to core 0, wrk from core 1; "
        f"measured capacity {capacity:.0f} req/s on the read-mostly mix of `load/wrk/soak.lua`, "
        f"held at {ratio:.0%} of it, {target:.0f} req/s ({connections} paced connections).",
        "",
        "| elapsed (s) | req/s | p99 (ms) | errors | RSS (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {t} | {rps:.0f} | {p99:.2f} | {errors} | {rss:.1f} |"
              for t, rps, p99, errors, rss in rows]
    lines += ["", rss_verdict(rows) if done else "(running)", ""]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
