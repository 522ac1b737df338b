"""Keeps the benchmark harness from rotting: runs `bench.py --quick` against the release
binary and checks the JSON it writes. Takes ~15-20 s.

    python3 -m pytest -q load/test_bench_quick.py

Needs the release binary (found as bench.py finds it: ITEMS_API_BIN, CARGO_TARGET_DIR,
target/release) and wrk.
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
