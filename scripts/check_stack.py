#!/usr/bin/env python3
"""Live stack check: the real items-api, Prometheus and Alertmanager, under load.

    python3 scripts/check_stack.py [--binary PATH] [--duration SECONDS] [--keep-tmp]

Starts the service (with fault injection, so there are 5xx to alert on), an
Alertmanager with prometheus/alertmanager.yml, and a Prometheus that scrapes the
service every second with the repo's rules; drives a mixed CRUD load; then
asserts, against what Prometheus actually holds:

  * every query of every Grafana dashboard panel (and every template variable
    query) returns data, with the variables substituted as Grafana would;
  * the classic compatibility queries (docs/DESIGN.md section 6) return data;
  * ItemsApiHighErrorRatio reaches at least `pending`;
  * every rule of prometheus/rules/*.yml is loaded and evaluates with health "ok";
  * alerts that fire reach the Alertmanager.

Prints a table of the dashboard queries and a summary; exits 1 on any failure
(2 if the stack could not be started). Every process it starts is stopped on
exit, Ctrl-C included. Needs `prometheus` and `prometheus-alertmanager` on PATH
and PyYAML (scripts/requirements.txt); nothing else beyond the standard library.
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "grafana" / "dashboards"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yml"
RULES = REPO / "prometheus" / "rules"
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"

DEFAULT_BINARY = os.environ.get("ITEMS_API_BIN", "/var/tmp/items-api-target/debug/items-api")
JOB = "items-api"  # the scrape job name the rules and dashboards select (docs/DESIGN.md section 6)

# 20 % of /items requests fail: far above the 5 % threshold of ItemsApiHighErrorRatio,
# even diluted by the 404s on unknown paths, which fault injection does not touch.
FAULT_ERROR_RATIO = "0.2"
FAULT_DELAY = "5ms"
ALERT_MUST_BE_PENDING = "ItemsApiHighErrorRatio"
ALERT_WAIT_S = 60  # its `for: 2m` cannot elapse in the run: pending is what we can see

# Modest on purpose: the machine has two cores and also runs the service,
# Prometheus (evaluating ~70 rules every second) and this script.
LOAD_THREADS = 4
LOAD_RATE = 40  # requests per second, all threads together

SCRAPE_INTERVAL = "1s"  # so a ~75 s run holds enough samples for 1m rate windows

# Queries that existing Flask/FastAPI/Sanic dashboards run; prometheus/rules/compat.yml
# must make each of them return data.
COMPAT_QUERIES = [
    'sum(rate(http_requests_total{status=~"5.."}[1m]))',
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_request_duration_seconds_count",
    "http_requests_4xx_total",
    "http_requests_5xx_total",
    "http_requests_in_progress",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "db_query_duration_seconds_bucket",
]

# Grafana's grid on a typical screen gives a time series panel about this many
# points; $__interval is the time range divided by it, floored at the scrape interval.
GRAFANA_MAX_DATA_POINTS = 1000


class StackError(Exception):
    """The stack could not be started: nothing was checked."""


# --- small helpers -----------------------------------------------------------


def log(message):
    print(message, flush=True)


def free_port():
    """A port that is free now. Another process could take it before we bind; on a
    test machine that race is rare enough, and a clash fails loudly at start-up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_duration(text):
    """A Prometheus/Grafana duration such as 15s, 1m, 1h30m, 500ms -> seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def format_duration(seconds):
    """Seconds -> the shortest exact Prometheus duration (60 -> 1m, 75 -> 75s)."""
    seconds = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def http_json(url, form=None, timeout=10):
    """GET (or POST `form`, urlencoded) and decode JSON; error bodies are decoded too,
    because Prometheus explains a bad query in the body of its 400."""
    data = urllib.parse.urlencode(form, doseq=True).encode() if form is not None else None
    try:
        with urllib.request.urlopen(url, data=data, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            raise RuntimeError(f"{url}: HTTP {e.code}") from None


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(condition, timeout, what, processes=()):
    """Poll `condition` until true; fail early if one of `processes` died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            process.check_alive()
        if condition():
            return
        time.sleep(0.3)
    raise StackError(f"timed out after {timeout} s waiting for {what}")


# --- processes ---------------------------------------------------------------


class Process:
    """A child process with its output in a log file, stopped by `stop()`."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        # Own session: Ctrl-C reaches only this script, which then stops the
        # children in order instead of them dying half-way through a write.
        self.popen = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)

    def check_alive(self):
        if self.popen.poll() is not None:
            raise StackError(f"{self.name} exited with code {self.popen.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines=15):
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def start_service(binary, workdir):
    if not os.access(binary, os.X_OK):
        raise StackError(f"{binary} is not an executable file (set --binary or ITEMS_API_BIN)")
    port = free_port()
    # Start from a clean configuration: an inherited OTEL_* endpoint or
    # METRICS_LISTEN_ADDR would change where telemetry goes and what we scrape.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "FAULT_")) and k not in (
               "DATABASE_URL", "LISTEN_ADDR", "METRICS_LISTEN_ADDR", "LOG_FORMAT", "BODY_LIMIT")}
    env.update({
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "DATABASE_URL": f"sqlite://{workdir}/items.db?mode=rwc",
        "FAULT_ERROR_RATIO": FAULT_ERROR_RATIO,
        "FAULT_DELAY": FAULT_DELAY,
        "LOG_FORMAT": "json",
    })
    process = Process("items-api", [str(binary)], workdir, env)
    return process, f"127.0.0.1:{port}"


def start_alertmanager(workdir):
    port = free_port()
    storage = workdir / "alertmanager-data"
    storage.mkdir()
    process = Process("alertmanager", [
        "prometheus-alertmanager",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # a single instance: no gossip port, no peers
    ], workdir)
    return process, f"127.0.0.1:{port}"


def write_prometheus_config(workdir, service_addr, alertmanager_addr):
    """prometheus/prometheus.yml with the local targets and a 1 s cadence. JSON is YAML."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(path) for path in rule_files()],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_addr]}]}]},
        "scrape_configs": [{
            "job_name": JOB,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [service_addr]}],
        }],
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_prometheus(workdir, config):
    port = free_port()
    process = Process("prometheus", [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], workdir)
    return process, f"http://127.0.0.1:{port}"


def start_stack(binary, workdir, processes):
    """Starts the three processes (appending each to `processes` at once, so the
    caller stops whatever did start) and waits until Prometheus scrapes the service."""
    service, service_addr = start_service(binary, workdir)
    processes.append(service)
    alertmanager, alertmanager_addr = start_alertmanager(workdir)
    processes.append(alertmanager)
    config = write_prometheus_config(workdir, service_addr, alertmanager_addr)
    prometheus, prom = start_prometheus(workdir, config)
    processes.append(prometheus)

    wait_until(lambda: http_ok(f"http://{service_addr}/health/ready"), 30, "items-api /health/ready", processes)
    wait_until(lambda: http_ok(f"http://{alertmanager_addr}/-/ready"), 30, "Alertmanager /-/ready", processes)
    wait_until(lambda: http_ok(f"{prom}/-/ready"), 30, "Prometheus /-/ready", processes)
    wait_until(lambda: instant_query(prom, f'up{{job="{JOB}"}} == 1')[0] == 1, 30,
               "Prometheus to scrape items-api", processes)
    return service_addr, f"http://{alertmanager_addr}", prom


# --- load --------------------------------------------------------------------


class Load:
    """Mixed CRUD traffic from a few threads at a fixed total rate.

    Every route and status class the dashboards break down by gets traffic:
    2xx on all routes, 4xx (validation, missing ids, unknown paths) and the
    injected 5xx."""

    OPERATIONS = [  # (name, weight)
        ("create", 25), ("get", 20), ("list", 15), ("patch", 10), ("put", 5), ("delete", 8),
        ("get_missing", 7), ("unknown_path", 5), ("create_invalid", 5),
    ]

    def __init__(self, service_addr):
        self.host, port = service_addr.rsplit(":", 1)
        self.port = int(port)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ids = []  # items known to exist, for get/patch/put/delete
        self.status_counts = {}  # "2xx" ... -> count
        self.transport_errors = 0
        self.last_transport_error = ""
        self.threads = []

    def start(self):
        for n in range(LOAD_THREADS):
            thread = threading.Thread(target=self._run, args=(random.Random(n),), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def total(self):
        with self.lock:
            return sum(self.status_counts.values())

    def summary(self):
        with self.lock:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items()))
        last = f", last: {self.last_transport_error}" if self.transport_errors else ""
        return f"{self.total()} requests ({counts}; transport errors {self.transport_errors}{last})"

    def _run(self, rng):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        period = LOAD_THREADS / LOAD_RATE
        names, weights = zip(*self.OPERATIONS)
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            operation = rng.choices(names, weights)[0]
            try:
                status, body = self._send(connection, *self._request(operation, rng))
                self._record(operation, status, body)
            except (OSError, http.client.HTTPException) as e:
                # Reconnect on the next request; count it so a crashed service shows.
                connection.close()
                with self.lock:
                    self.transport_errors += 1
                    self.last_transport_error = f"{operation}: {e!r}"
            next_at += period
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        connection.close()

    def _random_id(self, rng):
        with self.lock:
            return rng.choice(self.ids) if self.ids else 1

    def _request(self, operation, rng):
        """(method, path, json body or None) for one operation."""
        item = {"name": f"item-{rng.randrange(10**6)}", "price": round(rng.uniform(1, 100), 2),
                "quantity": rng.randrange(0, 50)}
        if operation == "create":
            return "POST", "/items", item
        if operation == "create_invalid":
            return "POST", "/items", {"price": "not a number"}
        if operation == "get":
            return "GET", f"/items/{self._random_id(rng)}", None
        if operation == "list":
            return "GET", f"/items?limit={rng.choice((5, 20, 50))}&offset={rng.randrange(0, 20)}", None
        if operation == "patch":
            return "PATCH", f"/items/{self._random_id(rng)}", {"price": item["price"]}
        if operation == "put":
            return "PUT", f"/items/{self._random_id(rng)}", item
        if operation == "delete":
            with self.lock:
                item_id = self.ids.pop(rng.randrange(len(self.ids))) if self.ids else 1
            return "DELETE", f"/items/{item_id}", None
        if operation == "get_missing":
            return "GET", f"/items/{10**9 + rng.randrange(1000)}", None
        if operation == "unknown_path":
            return "GET", f"/no-such-{rng.choice(('page', 'thing', 'path'))}/{rng.randrange(100)}", None
        raise ValueError(operation)

    @staticmethod
    def _send(connection, method, path, body):
        headers = {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()

    def _record(self, operation, status, body):
        with self.lock:
            key = f"{status // 100}xx"
            self.status_counts[key] = self.status_counts.get(key, 0) + 1
            if operation == "create" and status == 201:
                self.ids.append(json.loads(body)["id"])


class AlertWatcher(threading.Thread):
    """Polls Prometheus' /api/v1/alerts until `alertname` is pending or firing."""

    def __init__(self, prom, alertname, started, timeout):
        super().__init__(daemon=True)
        self.prom, self.alertname, self.started, self.deadline = prom, alertname, started, started + timeout
        self.state = None  # "pending" / "firing" once seen
        self.seen_after = None  # seconds after load start
        self.error = None

    def run(self):
        while time.monotonic() < self.deadline and self.state is None:
            try:
                alerts = http_json(f"{self.prom}/api/v1/alerts")["data"]["alerts"]
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                self.error = str(e)
            else:
                states = [a["state"] for a in alerts if a["labels"].get("alertname") == self.alertname]
                if states:
                    self.state = "firing" if "firing" in states else states[0]
                    self.seen_after = time.monotonic() - self.started
                    return
            time.sleep(2)


def run_load(service_addr, prom, duration):
    """Drives the load for `duration` seconds while watching for the alert.
    Returns (load, watcher, wall-clock time the load started)."""
    load = Load(service_addr)
    started_wall, started = time.time(), time.monotonic()
    watcher = AlertWatcher(prom, ALERT_MUST_BE_PENDING, started, ALERT_WAIT_S)
    load.start()
    watcher.start()
    try:
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            time.sleep(min(15, duration - elapsed))
            log(f"  load running {time.monotonic() - started:3.0f}/{duration} s: {load.summary()}")
    finally:
        load.stop()
    if watcher.is_alive():
        log(f"  waiting up to {watcher.deadline - time.monotonic():.0f} s more for {ALERT_MUST_BE_PENDING}")
        watcher.join()
    return load, watcher, started_wall


# --- Prometheus queries --------------------------------------------------------


def instant_query(prom, expr, at=None):
    """(series, NaN series, error message or None) of an instant query. A series whose
    value is NaN (0/0, a quantile of nothing) draws nothing in Grafana, so it is
    counted apart."""
    form = {"query": expr}
    if at is not None:
        form["time"] = f"{at:.3f}"
    answer = http_json(f"{prom}/api/v1/query", form)
    if answer.get("status") != "success":
        return 0, 0, f"{answer.get('errorType')}: {answer.get('error')}"
    data = answer["data"]
    if data["resultType"] == "vector":
        values = [sample["value"][1] for sample in data["result"]]
    elif data["resultType"] == "matrix":
        values = [series["values"][-1][1] for series in data["result"] if series["values"]]
    else:  # scalar or string: one value
        values = [data["result"][1]]
    return len(values), sum(1 for v in values if v == "NaN"), None


def label_values(prom, query, start, end):
    """Evaluates a Grafana `label_values(selector, label)` / `label_values(label)` query."""
    match = re.fullmatch(r"\s*label_values\(\s*(?:(.*\S)\s*,\s*)?(\w+)\s*\)\s*", query)
    if not match:
        raise ValueError(f"unsupported variable query: {query}")
    selector, label = match.groups()
    form = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
    if selector:
        form["match[]"] = selector
    url = f"{prom}/api/v1/label/{label}/values?{urllib.parse.urlencode(form)}"
    answer = http_json(url)
    if answer.get("status") != "success":
        raise RuntimeError(f"{answer.get('errorType')}: {answer.get('error')}")
    return answer["data"]


# --- Grafana template variables ----------------------------------------------


def datasource_scrape_interval():
    """The Prometheus datasource's timeInterval: Grafana's floor for $__interval and
    the scrape interval in its $__rate_interval formula."""
    config = yaml.safe_load(DATASOURCES.read_text())
    for source in config["datasources"]:
        if source["type"] == "prometheus":
            return parse_duration(source.get("jsonData", {}).get("timeInterval", "15s"))
    raise StackError(f"{DATASOURCES}: no prometheus datasource")


def builtin_variables(range_s):
    """Grafana's global variables for a dashboard whose time range is the last `range_s` s."""
    scrape = datasource_scrape_interval()
    interval = max(scrape, range_s / GRAFANA_MAX_DATA_POINTS)
    # Grafana: $__rate_interval = max($__interval + scrape interval, 4 * scrape interval).
    rate_interval = max(interval + scrape, 4 * scrape)
    return {
        "__interval": format_duration(interval),
        "__interval_ms": str(int(interval * 1000)),
        "__rate_interval": format_duration(rate_interval),
        "__rate_interval_ms": str(int(rate_interval * 1000)),
        # Grafana writes $__range in whole seconds ("75s"), not rounded to minutes.
        "__range": f"{int(range_s)}s",
        "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
    }


def auto_interval(variable, range_s):
    """An interval variable set to `auto`: the range split into auto_count steps, no
    shorter than auto_min (Grafana also rounds to a 'nice' step; at these sizes the
    floor decides)."""
    step = range_s / variable.get("auto_count", 30)
    return format_duration(max(step, parse_duration(variable.get("auto_min", "10s"))))


def dashboard_variables(dashboard, prom, range_s, start, end):
    """Values of the dashboard's variables as Grafana would send them: job = JOB,
    every multi-value variable = All, interval variables = auto. Variable queries run
    against the live data, in list order (later variables may use earlier ones).
    Returns (values, problems)."""
    values = builtin_variables(range_s)
    problems = []
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            values[name] = variable.get("current", {}).get("value", "prometheus")
        elif kind == "interval":
            auto_name = f"__auto_interval_{name}"
            values[auto_name] = auto_interval(variable, range_s)
            current = variable.get("current", {}).get("value", auto_name)
            values[name] = values[auto_name] if current == f"${auto_name}" else current
        elif kind == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            query, unknown = substitute(query, values)
            try:
                options = label_values(prom, query, start, end) if not unknown else []
            except (ValueError, RuntimeError, OSError) as e:
                options, unknown = [], [str(e)]
            if unknown or not options:
                problems.append(f"variable ${name}: {query} returned no values {unknown or ''}".rstrip())
            if name == "job":
                values[name] = JOB
                if options and JOB not in options:
                    problems.append(f"variable $job: {JOB} not among {options}")
            elif variable.get("includeAll"):
                # "All": allValue when the dashboard sets one, else Grafana ORs every option.
                values[name] = variable.get("allValue") or "(" + "|".join(re.escape(o) for o in options) + ")"
            else:
                values[name] = options[0] if options else ""
        else:
            problems.append(f"variable ${name}: type {kind} not handled by this check")
    return values, problems


VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr, values):
    """Replaces $var, ${var}, ${var:format} and [[var]]; returns (text, unknown names).
    Formats are ignored: the dashboards' queries only use plain values."""
    unknown = []

    def replace(match):
        name = next(group for group in match.groups() if group)
        if name not in values:
            unknown.append(name)
            return match.group(0)
        return values[name]

    return VARIABLE.sub(replace, expr), unknown


def dashboard_targets(panels):
    """(panel, target) for every target, recursing into rows (collapsed rows keep
    their panels inside the row)."""
    for panel in panels:
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel, target
        yield from dashboard_targets(panel.get("panels", []))


# --- checks ---------------------------------------------------------------------


class QueryResult(NamedTuple):
    source: str  # dashboard file stem, or "compat"
    panel_id: int  # 0 for compat queries
    panel: str  # "title [refId]", or "-"
    expr: str  # as sent, variables substituted
    series: int
    nan: int  # series whose value is NaN
    error: str  # Prometheus' error, or ""

    def problem(self):
        """Why this query fails the check, or "" if it passes."""
        if self.error:
            return self.error
        if self.series == 0:
            return "empty result"
        if self.nan == self.series:
            return "every series is NaN"  # Grafana draws nothing: as good as empty
        return ""


def evaluate(source, panel_id, panel, expr, values, prom, at):
    expr, unknown = substitute(expr, values)
    if unknown:
        return QueryResult(source, panel_id, panel, expr, 0, 0, f"undefined variable(s) ${', $'.join(unknown)}")
    series, nan, error = instant_query(prom, expr, at)
    return QueryResult(source, panel_id, panel, expr, series, nan, error or "")


def check_dashboards(prom, range_s, start, at):
    """Evaluates every dashboard query at `at`. Returns (results, variable problems)."""
    results, problems = [], []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        values, variable_problems = dashboard_variables(dashboard, prom, range_s, start, at)
        problems += [f"{path.name}: {p}" for p in variable_problems]
        for panel, target in dashboard_targets(dashboard.get("panels", [])):
            name = f"{panel.get('title', '?')} [{target.get('refId', '?')}]"
            results.append(evaluate(path.stem, panel.get("id", 0), name, target["expr"], values, prom, at))
    return results, problems


def check_compat(prom, at):
    return [evaluate("compat", 0, "-", expr, {}, prom, at) for expr in COMPAT_QUERIES]


def query_failures(results):
    return [f"{r.source} / {r.panel}: {r.problem()}\n      {r.expr}" for r in results if r.problem()]


def rule_files():
    return sorted(RULES.glob("*.yml"))


def rules_in_files():
    """{(absolute file, group, rule name, kind)} of prometheus/rules/*.yml."""
    rules = set()
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                kind = "recording" if "record" in rule else "alerting"
                rules.add((str(path), group["name"], rule.get("record") or rule["alert"], kind))
    return rules


def loaded_rules(prom):
    """{(file, group, name, kind): (health, lastError)} as Prometheus reports them."""
    groups = http_json(f"{prom}/api/v1/rules")["data"]["groups"]
    return {(g["file"], g["name"], r["name"], r["type"]): (r["health"], r.get("lastError", ""))
            for g in groups for r in g["rules"]}, groups


def check_rules(prom, prometheus_started):
    """Every rule of the files is loaded and evaluates with health ok. A group is
    first evaluated up to one of its intervals after start (1m for the long SLO
    windows), so wait for that before judging. Returns (counts, failures)."""
    expected = rules_in_files()
    loaded, groups = loaded_rules(prom)
    longest = max((g["interval"] for g in groups), default=1)
    deadline = prometheus_started + longest + 10
    waiting = sorted({group for (_, group, _, _), (health, _) in loaded.items() if health == "unknown"})
    if waiting:
        log(f"  waiting up to {deadline - time.monotonic():.0f} s for the first evaluation of {', '.join(waiting)}")
    while waiting and time.monotonic() < deadline:
        time.sleep(2)
        loaded, _ = loaded_rules(prom)
        waiting = [group for (_, group, _, _), (health, _) in loaded.items() if health == "unknown"]
    failures = []
    for key in sorted(expected):
        file, group, name, kind = key
        where = f"rules/{Path(file).name} / {group} / {name}"
        if key not in loaded:
            failures.append(f"{where}: {kind} rule not loaded by Prometheus")
        elif loaded[key][0] != "ok":
            failures.append(f"{where}: health {loaded[key][0]} {loaded[key][1]}".rstrip())
    counts = {kind: sum(1 for k in expected if k[3] == kind) for kind in ("recording", "alerting")}
    return counts, failures


def check_alert(watcher):
    if watcher.state in ("pending", "firing"):
        return [], f"{ALERT_MUST_BE_PENDING} {watcher.state} {watcher.seen_after:.0f} s after load start"
    detail = f" (last error: {watcher.error})" if watcher.error else ""
    return [f"{ALERT_MUST_BE_PENDING} not pending or firing within {ALERT_WAIT_S} s of load start{detail}"], ""


def check_alertmanager(prom, alertmanager, timeout=20):
    """Prometheus knows the Alertmanager and every alert firing in Prometheus reaches
    it (the notifications it then sends to the placeholder webhooks fail to resolve:
    that is expected and not checked). Returns (description, failures)."""
    active = http_json(f"{prom}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    if not any(am["url"].startswith(alertmanager) for am in active):
        return "", [f"Prometheus does not list {alertmanager} among its Alertmanagers: {active}"]
    alerts = http_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
    firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
    if not firing:
        return "", ["no alert is firing in Prometheus, so delivery to Alertmanager cannot be checked "
                    "(the load should make ItemsApiErrorSpike fire)"]
    deadline = time.monotonic() + timeout
    while True:
        received = {a["labels"]["alertname"] for a in http_json(f"{alertmanager}/api/v2/alerts")}
        missing = firing - received
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    if missing:
        return "", [f"firing in Prometheus but not in Alertmanager: {', '.join(sorted(missing))}"]
    return f"firing alerts received by Alertmanager: {', '.join(sorted(firing))}", []


# --- output -----------------------------------------------------------------------


def truncate(text, width):
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(results):
    log(f"{'dashboard':<13}  {'panel [ref]':<44}  {'query':<72}  {'series':>6}")
    log("-" * 141)
    for r in results:
        nan = f" ({r.nan} NaN)" if r.nan else ""
        flag = f"  <- FAIL: {r.problem()}" if r.problem() else ""
        log(f"{r.source:<13}  {truncate(r.panel, 44):<44}  {truncate(r.expr, 72):<72}  {r.series:>6}{nan}{flag}")


# --- main -----------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=DEFAULT_BINARY,
                        help="items-api binary (default: $ITEMS_API_BIN or %(default)s)")
    parser.add_argument("--duration", type=int, default=75, help="seconds of load (default %(default)s)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, data) for debugging")
    return parser.parse_args()


def raise_on_sigterm():
    """SIGTERM behaves like Ctrl-C, so the finally blocks stop the children."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def run_checks(args, workdir, processes):
    log(f"starting items-api ({args.binary}), Alertmanager and Prometheus in {workdir}")
    prometheus_started = time.monotonic()
    service_addr, alertmanager, prom = start_stack(Path(args.binary), workdir, processes)
    log(f"  items-api http://{service_addr}  Alertmanager {alertmanager}  Prometheus {prom}")

    log(f"load: {LOAD_RATE} req/s from {LOAD_THREADS} threads for {args.duration} s "
        f"(FAULT_ERROR_RATIO={FAULT_ERROR_RATIO}, FAULT_DELAY={FAULT_DELAY})")
    load, watcher, load_started = run_load(service_addr, prom, args.duration)
    log(f"  load done: {load.summary()}")
    for process in processes:
        process.check_alive()

    at = time.time()
    # The dashboard's time range is the run: from the start of the load to now.
    range_s = at - load_started
    log(f"evaluating dashboards and compat queries at {time.strftime('%H:%M:%S', time.localtime(at))} "
        f"(time range {range_s:.0f} s; " + ", ".join(f"${k}={v}" for k, v in builtin_variables(range_s).items()
                                                     if not k.endswith("_ms")) + ")")
    dashboard_results, failures = check_dashboards(prom, range_s, load_started, at)
    compat_results = check_compat(prom, at)
    failures += query_failures(dashboard_results + compat_results)

    log("checking alerts and rules")
    alert_failures, alert_note = check_alert(watcher)
    failures += alert_failures
    delivery_note, delivery_failures = check_alertmanager(prom, alertmanager)
    failures += delivery_failures
    rule_counts, rule_failures = check_rules(prom, prometheus_started)
    failures += rule_failures
    if load.total() == 0 or load.transport_errors > load.total() // 100:
        failures.append(f"load: {load.summary()}: the service did not answer reliably")

    log("")
    print_table(dashboard_results + compat_results)
    log("")
    dashboards = len({r.source for r in dashboard_results})
    panels = len({(r.source, r.panel_id) for r in dashboard_results})
    ok = sum(1 for r in dashboard_results if not r.problem())
    compat_ok = sum(1 for r in compat_results if not r.problem())
    rules_total = sum(rule_counts.values())
    log(f"summary: dashboard queries {ok}/{len(dashboard_results)} non-empty "
        f"({panels} panels, {dashboards} dashboards); compat queries {compat_ok}/{len(compat_results)} non-empty; "
        f"rules {rules_total - len(rule_failures)}/{rules_total} ok "
        f"({rule_counts['recording']} recording, {rule_counts['alerting']} alerting); "
        f"{alert_note or ALERT_MUST_BE_PENDING + ' NOT pending'}; {delivery_note or 'alert delivery FAILED'}; "
        f"load {load.summary()}")
    return failures


def main():
    args = parse_args()
    raise_on_sigterm()
    for tool in ("prometheus", "prometheus-alertmanager"):
        if not shutil.which(tool):
            log(f"check_stack: {tool} not found (Debian: apt-get install prometheus prometheus-alertmanager)")
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="check-stack-"))
    processes = []
    try:
        failures = run_checks(args, workdir, processes)
    except StackError as e:
        log(f"check_stack: could not run the stack: {e}")
        for process in processes:
            log(f"  last lines of {process.name}.log:\n{process.log_tail()}")
        return 2
    except KeyboardInterrupt:
        log("check_stack: interrupted")
        return 130
    finally:
        # Reverse order: Prometheus stops scraping before the service goes away.
        for process in reversed(processes):
            process.stop()
        if args.keep_tmp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        log(f"\nFAILED: {len(failures)} problem(s)")
        for failure in failures:
            log(f"  - {failure}")
        return 1
    log("\nOK: the live stack matches the dashboards, rules and alerts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
