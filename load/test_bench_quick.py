"""Keeps the benchmark harnesses from rotting: runs `bench.py --quick` (~20 s) and
`icount.py --quick` (~1.5 min) against the release binary and checks the JSON they write.

    python3 -m pytest -q load/test_bench_quick.py

Needs the release binary (found as bench.py finds it: ITEMS_API_BIN, CARGO_TARGET_DIR,
target/release), wrk, valgrind, and grpcio (load/requirements.txt) for the OTLP/gRPC receiver.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ENDPOINTS = ["GET /items/{id}", "POST /items"]
CONFIGS = ["off", "metrics", "full"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not shutil.which("wrk"):
        pytest.fail("wrk is not installed (apt-get install wrk)")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(HERE / "bench.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"bench.py --quick failed:\n{proc.stdout}\n{proc.stderr}"
    assert (out / "bench.md").is_file()
    return json.loads((out / "bench.json").read_text())


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_config_and_endpoint_has_positive_numbers(report):
    assert report["quick"] is True
    for cfg in CONFIGS:
        assert cfg in report["summary"], cfg
        for ep in ENDPOINTS:
            s = report["summary"][cfg][ep]
            for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "ratio_vs_off"):
                assert positive(s[key]), (cfg, ep, key, s[key])
            assert len(report["runs"][cfg][ep]) == 1
            run = report["runs"][cfg][ep][0]
            assert run["requests"] > 0 and run["err_status"] == 0


def test_full_config_really_exported_spans_and_logs(report):
    [exported] = report["otlp_exported"]
    assert exported["sink"]["/v1/traces"]["spans"] > 0
    assert exported["sink"]["/v1/logs"]["log_records"] > 0


def test_metrics_render_was_timed(report):
    render = report["metrics_render"]
    for key in ("typical", "ceiling"):
        assert render[key]["samples"] > 0
        assert positive(render[key]["median_ms"])
    assert render["ceiling"]["samples"] >= render["typical"]["samples"]


# --------------------------------------------------------------------------- icount.py --quick

ICOUNT_CONFIGS = ["off", "metrics", "default", "full", "full_grpc"]
ICOUNT_N = 100  # what --quick measures
EXPECTED_STATUS = {"GET /items/{id}": "200", "POST /items": "201"}


@pytest.fixture(scope="module")
def icount(tmp_path_factory):
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (apt-get install valgrind)")
    out = tmp_path_factory.mktemp("icount")
    proc = subprocess.run(
        [sys.executable, str(HERE / "icount.py"), "--quick", "--out", str(out),
         "--configs", ",".join(ICOUNT_CONFIGS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"icount.py --quick failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads((out / "icount.json").read_text())


def test_icount_measured_every_config_and_endpoint(icount):
    assert icount["quick"] is True
    assert icount["problems"] == []
    assert icount["setup"]["requests"] == ICOUNT_N
    assert list(icount["results"]) == ICOUNT_CONFIGS
    for cfg in ICOUNT_CONFIGS:
        assert list(icount["results"][cfg]) == ENDPOINTS, cfg
        for ep in ENDPOINTS:
            r = icount["results"][cfg][ep]
            # Exactly N requests, every one answered with the endpoint's 2xx.
            assert r["requests"] == ICOUNT_N
            assert r["statuses"] == {EXPECTED_STATUS[ep]: ICOUNT_N}, (cfg, ep, r["statuses"])
            assert r["answered_2xx"] == ICOUNT_N
            assert positive(r["instructions_per_request"]), (cfg, ep)
            assert r["instructions_per_request"] == pytest.approx(r["instructions_total"] / ICOUNT_N, abs=0.1)


def test_icount_values_are_sane(icount):
    for ep in ENDPOINTS:
        off = icount["results"]["off"][ep]["instructions_per_request"]
        # A request through hyper, poem, sea-orm and SQLite is tens of thousands of
        # instructions at least and far below ten million; anything else is a broken count.
        assert 20_000 < off < 10_000_000, (ep, off)
        assert icount["results"]["off"][ep]["ratio_vs_off"] == 1.0
        for cfg in ICOUNT_CONFIGS:
            ratio = icount["results"][cfg][ep]["ratio_vs_off"]
            assert 0.9 < ratio < 10, (cfg, ep, ratio)
        # Exporting two spans and a log record per request cannot be free.
        for cfg in ("full", "full_grpc"):
            assert icount["results"][cfg][ep]["instructions_per_request"] > off, (cfg, ep)


def test_icount_full_configs_delivered_exactly_what_the_requests_made(icount):
    for cfg, protocol in (("full", "http/protobuf"), ("full_grpc", "grpc")):
        for ep in ENDPOINTS:
            otlp = icount["results"][cfg][ep]["otlp"]
            assert otlp["protocol"] == protocol
            # One SERVER span, one CLIENT span (one statement), one access log record each.
            assert otlp["expected"] == {"spans": 2 * ICOUNT_N, "log_records": ICOUNT_N}
            got = otlp["received_at_dump"]
            assert got["spans"] == 2 * ICOUNT_N, (cfg, ep, got)
            assert got["log_records"] == ICOUNT_N, (cfg, ep, got)
            assert got["unparsed"] == 0, (cfg, ep, got)
            assert otlp["complete_at_dump"] is True
    for cfg in ("off", "metrics", "default"):
        for ep in ENDPOINTS:
            assert "otlp" not in icount["results"][cfg][ep]
