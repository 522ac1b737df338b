#!/usr/bin/env python3
"""GET /items at 1 k and 1 M rows: the first page and a page reached through the cursor must
cost the same at both sizes (within 2x), where the old offset paging and COUNT(*) grew with
the table.

    python3 load/list_bench.py                 # 1,000 and 1,000,000 rows, 31 requests each
    python3 load/list_bench.py --rows 1000 --rows 100000 --requests 15

For each size: `items-api migrate` makes the schema in a fresh SQLite file, sqlite3 bulk-inserts
the rows straight into it (a million in a few seconds; through the API it would take minutes),
then the release binary serves it, pinned to its core, with the default telemetry. Per request
kind, the median and p90 of N sequential requests over one keep-alive connection, after a
warm-up:

  first page     GET /items?limit=20
  cursor page    GET /items?limit=20&cursor=<next_cursor>, the cursor the service gave for the
                 page 100 rows before the end (reached once with an offset, as a client
                 resuming a walk would hold it)
  offset page    GET /items?limit=20&offset=<rows-100> (compatibility path, for comparison)
  counted page   GET /items?limit=20&count=true (opt-in total, for comparison)

Writes reports/list_bench.md and .json; exits 1 when the first or the cursor page at the
largest size costs more than 2x its cost at the smallest.
"""

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import Client, Service, log  # noqa: E402

PAGE = 20
LIMIT_RATIO = 2.0
GATED = ("first page", "cursor page")


def make_database(binary, path, rows):
    url = f"sqlite://{path}?mode=rwc"
    subprocess.run([str(binary), "migrate"], env={"DATABASE_URL": url}, check=True, capture_output=True)
    started = time.monotonic()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    stamp = "2026-01-01T00:00:00.000000000+00:00"
    batch = 50_000
    with db:
        for start in range(0, rows, batch):
            db.executemany(
                "INSERT INTO items (name, description, price, quantity, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (f"item {i}", None if i % 3 else f"description of item {i}", i % 1000 / 10, i % 50, stamp, stamp)
                    for i in range(start, min(rows, start + batch))
                ),
            )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    log(f"{rows:,} rows inserted in {time.monotonic() - started:.1f} s")


def timed(client, path, n):
    for _ in range(3):  # warm-up: connection, page cache, prepared statements
        status, _, _ = client.request("GET", path)
        assert status == 200, (path, status)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        status, _, body = client.request("GET", path)
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200, (path, status)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 3),
        "p90_ms": round(samples[int(len(samples) * 0.9) - 1], 3),
        "n": n,
    }


def measure(binary, rows, n):
    with tempfile.TemporaryDirectory(prefix="list-bench-") as tmp:
        work = Path(tmp)
        make_database(binary, work / "items.db", rows)
        with Service(binary, work, stdout_path=work / "service.log") as service:
            client = Client(service.port)
            # The cursor a client holds 100 rows before the end: given out by the service.
            status, _, body = client.request("GET", f"/items?limit={PAGE}&offset={rows - 100 - PAGE}")
            assert status == 200
            cursor = json.loads(body)["next_cursor"]
            assert cursor, "a page 100 rows before the end has a next page"
            status, headers, body = client.request("GET", f"/items?limit={PAGE}&cursor={cursor}")
            page = json.loads(body)
            assert status == 200 and len(page["items"]) == PAGE and page["next_cursor"], page
            assert {k.lower(): v for k, v in headers.items()}["link"] == f'<{page["next"]}>; rel="next"'
            paths = {
                "first page": f"/items?limit={PAGE}",
                "cursor page": f"/items?limit={PAGE}&cursor={cursor}",
                "offset page": f"/items?limit={PAGE}&offset={rows - 100}",
                "counted page": f"/items?limit={PAGE}&count=true",
            }
            return {kind: timed(client, path, n) for kind, path in paths.items()}


def report(results, rows_list, n):
    small, large = rows_list[0], rows_list[-1]
    lines = [
        "# GET /items at growing table sizes",
        "",
        f"SQLite, release build, default telemetry, {n} sequential requests per cell over one "
        "keep-alive connection (after 3 warm-up requests), service pinned to its core. "
        "Median (p90) in ms.",
        "",
        "| request | " + " | ".join(f"{r:,} rows" for r in rows_list) + f" | {large:,} / {small:,} |",
        "|---|" + "---:|" * (len(rows_list) + 1),
    ]
    ratios = {}
    for kind in results[small]:
        cells = [f"{results[r][kind]['median_ms']:.2f} ({results[r][kind]['p90_ms']:.2f})" for r in rows_list]
        ratio = results[large][kind]["median_ms"] / results[small][kind]["median_ms"]
        ratios[kind] = round(ratio, 2)
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    failed = [k for k in GATED if ratios[k] > LIMIT_RATIO]
    lines += [
        "",
        f"Gate: the first page and the cursor page within {LIMIT_RATIO:.0f}x between {small:,} and "
        f"{large:,} rows: **{'FAILED: ' + ', '.join(failed) if failed else 'passed'}**. "
        "The offset page and `count=true` are shown for comparison: their cost grows with the table.",
    ]
    return "\n".join(lines) + "\n", ratios, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="table sizes (default 1000 and 1000000)")
    parser.add_argument("--requests", type=int, default=31)
    parser.add_argument("--binary")
    args = parser.parse_args()
    rows_list = sorted(args.rows or [1_000, 1_000_000])
    binary = harness.find_binary(args.binary)
    harness.pin_self()
    results = {}
    for rows in rows_list:
        log(f"measuring at {rows:,} rows")
        results[rows] = measure(binary, rows, args.requests)
        log(json.dumps(results[rows]))
    text, ratios, failed = report(results, rows_list, args.requests)
    harness.REPORTS.mkdir(exist_ok=True)
    (harness.REPORTS / "list_bench.md").write_text(text)
    (harness.REPORTS / "list_bench.json").write_text(
        json.dumps({"rows": rows_list, "results": results, "ratios": ratios}, indent=2) + "\n"
    )
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
