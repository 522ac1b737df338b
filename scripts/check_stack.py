#!/usr/bin/env python3
"""Live stack check: the real items-api, Prometheus and Alertmanager, under load.

    python3 scripts/check_stack.py [--binary PATH] [--duration SECONDS] [--keep-tmp]

Three phases run side by side, so the whole check takes about as long as one:

  errors   an items-api with FAULT_ERROR_RATIO=0.2 (20 % of /items requests fail)
  delay    an items-api with FAULT_DELAY=1500ms (every /items request takes 1.5 s)
  healthy  an items-api without faults

Each is scraped every second by its own Prometheus (job items-api, as in
production, so the shipped rules aggregate it alone) loaded with a rendered copy
of prometheus/rules/*.yml in which only `for` is shortened (to FOR_IN_TEST); the
shipped files are never changed. All three send to one real Alertmanager (the
Debian package), configured by prometheus/render_alertmanager.sh with a local
SMTP sink (aiosmtpd) and a local webhook sink (prometheus/webhook_receiver.py, the
stack's own receiver). Mixed CRUD load drives each service; then it asserts:

  * errors: ItemsApiHighErrorRatio reaches the SMTP sink and the webhook sink
    through the `page` route, with its summary;
  * delay: ItemsApiHighLatencyP95 fires;
  * healthy: no alert was ever pending or firing, and none reached Alertmanager;
  * every query of every Grafana dashboard panel (and every template variable
    query) returns data on the errors phase, variables substituted as Grafana would;
  * every FastAPI-instrumentator, FastAPI-brief and Sanic name of
    prometheus/rules/compat.yml returns data with its labels, worker is the
    service's pid and server its host name, and
    `sum by (handler) (rate(http_requests_total[1m]))` has one series per route;
  * every rule is loaded and evaluates with health "ok".

Prints a table of the queries and a summary; exits 1 on any failure (2 if the
stack could not be started). Every process it starts is stopped on exit, Ctrl-C
included. Needs `prometheus` and `prometheus-alertmanager` on PATH, PyYAML and
aiosmtpd (scripts/requirements.txt).
"""

import argparse
import email
import email.policy
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
from aiosmtpd.controller import Controller

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "grafana" / "dashboards"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "datasources.yml"
RULES = REPO / "prometheus" / "rules"
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager.yml"
RENDER_ALERTMANAGER = REPO / "prometheus" / "render_alertmanager.sh"
WEBHOOK_RECEIVER = REPO / "prometheus" / "webhook_receiver.py"

DEFAULT_BINARY = os.environ.get("ITEMS_API_BIN", "/var/tmp/items-api-target/debug/items-api")
JOB = "items-api"  # the scrape job name the rules and dashboards select (docs/DESIGN.md section 6)


class Phase(NamedTuple):
    name: str
    env: dict  # fault injection
    threads: int
    rate: float  # requests per second, all threads together


PHASES = [
    # 20 % of /items requests fail: far above the 5 % threshold of ItemsApiHighErrorRatio,
    # even diluted by the 404s on unknown paths, which fault injection does not touch.
    Phase("errors", {"FAULT_ERROR_RATIO": "0.2"}, threads=4, rate=30),
    # Every /items request takes 1.5 s: p95 between the 1 s and 2 s bounds. The
    # threads block on the delay, so this phase makes few requests.
    Phase("delay", {"FAULT_DELAY": "1500ms"}, threads=6, rate=30),
    Phase("healthy", {}, threads=3, rate=15),
]
ERROR_ALERT = "ItemsApiHighErrorRatio"  # must reach mail and webhook, via route:
ERROR_ROUTE = "page"
LATENCY_ALERT = "ItemsApiHighLatencyP95"  # must fire in the delay phase
# Only `for` changes in the rendered rules: 10 s instead of minutes, so the alerts
# can fire within the run. Thresholds, windows and expressions are the shipped ones.
FOR_IN_TEST = "10s"

SCRAPE_INTERVAL = "1s"  # so a ~75 s run holds enough samples for 1m rate windows

# Queries that existing Flask/FastAPI/Sanic dashboards run; prometheus/rules/compat.yml
# must make each of them return data, with the labels named in it.
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
    # prometheus-fastapi-instrumentator
    'http_requests_total{handler!="", method!="", status!=""}',
    'http_request_duration_seconds_bucket{handler!="", method!="", le!=""}',
    'http_requests_inprogress{handler!="", method!=""}',
    'http_request_size_bytes_sum{handler!=""}',
    'http_request_size_bytes_count{handler!=""}',
    'http_response_size_bytes_sum{handler!=""}',
    'http_response_size_bytes_count{handler!=""}',
    'sum by (handler) (rate(http_requests_total[1m]))',
    'histogram_quantile(0.95, sum by (le, handler) (rate(http_request_duration_seconds_bucket[1m])))',
    # the FastAPI brief's own metrics
    'fastapi_app_info{version!="", environment!=""}',
    "db_connection_pool_size",
    # the Sanic middleware's labels
    'http_requests_total{server!="", worker!=""}',
    'http_request_duration_seconds_bucket{server!="", worker!=""}',
    # business counters: all four exist from start-up
    "sum(items_created_total) + sum(items_read_total) + sum(items_updated_total) + sum(items_deleted_total)",
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



def start_service(binary, workdir, phase):
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
        "DATABASE_URL": f"sqlite://{workdir}/items-{phase.name}.db?mode=rwc",
        "LOG_FORMAT": "json",
        **phase.env,
    })
    process = Process(f"items-api-{phase.name}", [str(binary)], workdir, env)
    return process, f"127.0.0.1:{port}"


class SmtpSink:
    """A local SMTP server (aiosmtpd) that keeps every message it is sent."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # email.message.EmailMessage
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 OK"

    @property
    def address(self):
        return f"{self.controller.hostname}:{self.controller.port}"

    def start(self):
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def received(self):
        with self.lock:
            return list(self.messages)


def start_webhook_sink(workdir):
    port = free_port()
    process = Process("webhook-receiver", [sys.executable, "-u", str(WEBHOOK_RECEIVER),
                                           "--host", "127.0.0.1", "--port", str(port)], workdir)
    return process, f"http://127.0.0.1:{port}"


def start_alertmanager(workdir, smtp_address, webhook_url):
    """The shipped alertmanager.yml, rendered by the shipped render_alertmanager.sh with
    the local sinks as delivery settings, as compose renders it with Mailpit's."""
    config = workdir / "alertmanager.yml"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ALERT_")},
           "ALERT_SMTP_SMARTHOST": smtp_address,
           "ALERT_EMAIL_FROM": "alertmanager@check-stack.test",
           "ALERT_EMAIL_TO": "oncall@check-stack.test",
           "ALERT_WEBHOOK_URL": webhook_url}
    result = subprocess.run(["sh", str(RENDER_ALERTMANAGER), str(ALERTMANAGER_CONFIG), str(config)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"render_alertmanager.sh failed: {result.stderr.strip()}")
    port = free_port()
    storage = workdir / "alertmanager-data"
    storage.mkdir()
    process = Process("alertmanager", [
        "prometheus-alertmanager",
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # a single instance: no gossip port, no peers
    ], workdir)
    return process, f"127.0.0.1:{port}"


def render_rules(workdir):
    """A copy of prometheus/rules/*.yml in which every `for` longer than FOR_IN_TEST is
    FOR_IN_TEST. Nothing else changes; the shipped files are only read."""
    out = workdir / "rules"
    out.mkdir()
    short = parse_duration(FOR_IN_TEST)
    changed = 0
    for path in sorted(RULES.glob("*.yml")):
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule and parse_duration(rule["for"]) > short:
                    rule["for"] = FOR_IN_TEST
                    changed += 1
        (out / path.name).write_text(yaml.safe_dump(document, sort_keys=False))
    return out, changed


def write_prometheus_config(workdir, phase, rules_dir, service_addr, alertmanager_addr):
    """prometheus/prometheus.yml with the local targets and a 1 s cadence. JSON is YAML.
    external_labels name the phase on every alert it sends to the shared Alertmanager."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL,
                   "external_labels": {"check_phase": phase.name}},
        "rule_files": [str(rules_dir / "*.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_addr]}]}]},
        "scrape_configs": [{
            "job_name": JOB,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [service_addr]}],
        }],
    }
    path = workdir / f"prometheus-{phase.name}.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_prometheus(workdir, phase, config):
    port = free_port()
    process = Process(f"prometheus-{phase.name}", [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / f'prometheus-data-{phase.name}'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], workdir)
    return process, f"http://127.0.0.1:{port}"


class Stack(NamedTuple):
    services: dict  # phase name -> "host:port"
    pids: dict  # phase name -> pid of the service
    proms: dict  # phase name -> Prometheus base URL
    alertmanager: str  # base URL
    webhook: str  # base URL of the webhook sink
    smtp: SmtpSink
    rules_dir: Path
    for_changed: int


def start_stack(binary, workdir, processes, smtp):
    """Starts everything (appending each process to `processes` at once, so the caller
    stops whatever did start) and waits until each Prometheus scrapes its service."""
    smtp.start()
    webhook_process, webhook = start_webhook_sink(workdir)
    processes.append(webhook_process)
    alertmanager, alertmanager_addr = start_alertmanager(workdir, smtp.address, webhook)
    processes.append(alertmanager)
    rules_dir, changed = render_rules(workdir)
    services, pids, proms = {}, {}, {}
    for phase in PHASES:
        service, services[phase.name] = start_service(binary, workdir, phase)
        processes.append(service)
        pids[phase.name] = service.popen.pid
        config = write_prometheus_config(workdir, phase, rules_dir, services[phase.name], alertmanager_addr)
        prometheus, proms[phase.name] = start_prometheus(workdir, phase, config)
        processes.append(prometheus)

    wait_until(lambda: http_ok(f"{webhook}/health"), 30, "the webhook receiver", processes)
    wait_until(lambda: http_ok(f"http://{alertmanager_addr}/-/ready"), 30, "Alertmanager /-/ready", processes)
    for phase in PHASES:
        addr, prom = services[phase.name], proms[phase.name]
        wait_until(lambda: http_ok(f"http://{addr}/health/ready"), 60, f"items-api ({phase.name}) /health/ready",
                   processes)
        wait_until(lambda: http_ok(f"{prom}/-/ready"), 60, f"Prometheus ({phase.name}) /-/ready", processes)
        wait_until(lambda: instant_query(prom, f'up{{job="{JOB}"}} == 1')[0] == 1, 60,
                   f"Prometheus ({phase.name}) to scrape items-api", processes)
    return Stack(services, pids, proms, f"http://{alertmanager_addr}", webhook, smtp, rules_dir, changed)


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

    def __init__(self, service_addr, threads, rate):
        self.threads_n, self.rate = threads, rate
        self.host, port = service_addr.rsplit(":", 1)
        self.port = int(port)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ids = []  # items known to exist, for get/patch/put/delete
        self.status_counts = {}  # "2xx" ... -> count
        self.transport_errors = 0
        self.last_transport_error = ""
        self.reconnects = 0  # keep-alive connections the service had closed, reopened once
        self.threads = []

    def start(self):
        for n in range(self.threads_n):
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
        return (f"{self.total()} requests ({counts}; transport errors {self.transport_errors}{last}; "
                f"closed keep-alive connections reopened {self.reconnects})")

    def _run(self, rng):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        period = self.threads_n / self.rate
        names, weights = zip(*self.OPERATIONS)
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            operation = rng.choices(names, weights)[0]
            request = self._request(operation, rng)
            try:
                try:
                    status, body = self._send(connection, *request)
                except (BrokenPipeError, ConnectionResetError):
                    # The service had closed this keep-alive connection after an earlier
                    # answer (seen only in the errors phase, a few times in a thousand
                    # requests), so the request could not be sent: reconnect and send it
                    # once more, as HTTP clients do. A second failure counts below.
                    connection.close()
                    with self.lock:
                        self.reconnects += 1
                    status, body = self._send(connection, *request)
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


def rules_in_files(directory, only_kind=None):
    """{(absolute file, group, rule name, kind)} of the rule files in `directory`."""
    rules = set()
    for path in sorted(directory.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                kind = "recording" if "record" in rule else "alerting"
                if only_kind in (None, kind):
                    rules.add((str(path), group["name"], rule.get("record") or rule["alert"], kind))
    return rules


def loaded_rules(prom):
    """{(file, group, name, kind): (health, lastError)} as Prometheus reports them."""
    groups = http_json(f"{prom}/api/v1/rules")["data"]["groups"]
    return {(g["file"], g["name"], r["name"], r["type"]): (r["health"], r.get("lastError", ""))
            for g in groups for r in g["rules"]}, groups


def check_rules(prom, prometheus_started, rules_dir):
    """Every rule of the files is loaded and evaluates with health ok. A group is
    first evaluated up to one of its intervals after start (1m for the long SLO
    windows), so wait for that before judging. Returns (counts, failures)."""
    expected = rules_in_files(rules_dir)
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




# --- alerts and their delivery -------------------------------------------------


def alerts_in(prom, state=None):
    """{alertname: [alert, ...]} of a Prometheus' pending/firing alerts."""
    found = {}
    for alert in http_json(f"{prom}/api/v1/alerts")["data"]["alerts"]:
        if state is None or alert["state"] == state:
            found.setdefault(alert["labels"]["alertname"], []).append(alert)
    return found


def text_of(message):
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def error_alert_mail(stack):
    """The first mail about ERROR_ALERT from the errors phase, or None."""
    for message in stack.smtp.received():
        if ERROR_ALERT in str(message["Subject"]) and "check_phase=errors" in text_of(message):
            return message
    return None


def error_alert_webhook(stack):
    """The first webhook notification about ERROR_ALERT from the errors phase, or None."""
    for entry in reversed(http_json(f"{stack.webhook}/")):
        payload = entry["payload"]
        for alert in payload.get("alerts", []):
            labels = alert.get("labels", {})
            if labels.get("alertname") == ERROR_ALERT and labels.get("check_phase") == "errors":
                return entry
    return None


class Watch(threading.Thread):
    """While the load runs: when the error alert's mail and webhook arrive, and when the
    latency alert fires in the delay phase (seconds after the load started)."""

    def __init__(self, stack, started):
        super().__init__(daemon=True)
        self.stack, self.started = stack, started
        self.stop_event = threading.Event()
        self.mail_after = self.webhook_after = self.latency_after = None
        self.error = None

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.poll()
            except (OSError, RuntimeError, KeyError, ValueError) as e:
                self.error = repr(e)
            if None not in (self.mail_after, self.webhook_after, self.latency_after):
                return
            self.stop_event.wait(1)

    def poll(self):
        elapsed = time.monotonic() - self.started
        if self.mail_after is None and error_alert_mail(self.stack) is not None:
            self.mail_after = elapsed
        if self.webhook_after is None and error_alert_webhook(self.stack) is not None:
            self.webhook_after = elapsed
        if self.latency_after is None and LATENCY_ALERT in alerts_in(self.stack.proms["delay"], "firing"):
            self.latency_after = elapsed

    def stop(self):
        self.stop_event.set()
        self.join(timeout=10)


def check_delivery(stack, prom_errors):
    """ERROR_ALERT, firing in the errors phase, reached mail and webhook through its
    route, with its summary. Returns (notes, failures)."""
    failures = []
    firing = alerts_in(prom_errors, "firing").get(ERROR_ALERT, [])
    if not firing:
        failures.append(f"{ERROR_ALERT} is not firing in the errors phase")
    # The summary, as the rule's annotation template renders it.
    summary_re = re.compile(r"items-api answers [0-9.]+% of requests with 5xx")
    mail, hook = error_alert_mail(stack), error_alert_webhook(stack)
    notes = []
    if mail is None:
        failures.append(f"no mail about {ERROR_ALERT} reached the SMTP sink "
                        f"({len(stack.smtp.received())} mails: "
                        f"{[str(m['Subject']) for m in stack.smtp.received()][:5]})")
    else:
        subject, body = str(mail["Subject"]), text_of(mail)
        expected_to = "oncall@check-stack.test"
        if expected_to not in str(mail["To"]):
            failures.append(f"mail To is {mail['To']!r}, not the configured {expected_to}")
        if "alertmanager@check-stack.test" not in str(mail["From"]):
            failures.append(f"mail From is {mail['From']!r}, not the configured sender")
        if f"({ERROR_ROUTE})" not in subject or f"via route {ERROR_ROUTE}" not in body:
            failures.append(f"mail does not name the route {ERROR_ROUTE}: {subject!r}")
        match = summary_re.search(subject)
        if not match or f"summary: {match.group(0)}" not in body:
            failures.append(f"mail lacks the alert's summary: subject {subject!r}")
        notes.append(f"mail {subject!r}")
    if hook is None:
        failures.append(f"no webhook about {ERROR_ALERT} reached the webhook sink")
    else:
        payload = hook["payload"]
        if hook["path"] != f"/{ERROR_ROUTE}" or payload.get("receiver") != ERROR_ROUTE:
            failures.append(f"webhook came by {hook['path']} receiver {payload.get('receiver')!r}, "
                            f"not route {ERROR_ROUTE}")
        summaries = [a["annotations"].get("summary", "") for a in payload["alerts"]
                     if a["labels"].get("alertname") == ERROR_ALERT]
        if not any(summary_re.fullmatch(s) for s in summaries):
            failures.append(f"webhook lacks the alert's summary: {summaries}")
        notes.append(f"webhook {hook['path']} receiver={payload.get('receiver')} summary={summaries[:1]}")
    return notes, failures


def check_latency(prom_delay):
    firing = alerts_in(prom_delay, "firing").get(LATENCY_ALERT, [])
    if not firing:
        pending = alerts_in(prom_delay).get(LATENCY_ALERT, [])
        state = "pending" if pending else "neither pending nor firing"
        return "", [f"{LATENCY_ALERT} is {state} under FAULT_DELAY=1500ms"]
    return f"{LATENCY_ALERT} firing (p95 {float(firing[0]['value']):.2f} s)", []


def check_silence(stack, range_s):
    """Healthy: no alert was pending or firing at any time of the load (ALERTS holds
    every pending and firing evaluation), and Alertmanager got nothing from it. The
    window starts with the load, after the first scrape: before it, `absent(up)` is
    briefly true on any Prometheus that has just started."""
    prom = stack.proms["healthy"]
    window = format_duration(range_s)
    answer = http_json(f"{prom}/api/v1/query", {"query": f"count by (alertname, alertstate) "
                                                           f"(count_over_time(ALERTS[{window}]))"})
    ever = [f"{s['metric']['alertname']} ({s['metric']['alertstate']})" for s in answer["data"]["result"]]
    received = [a["labels"]["alertname"] for a in http_json(f"{stack.alertmanager}/api/v2/alerts")
                if a["labels"].get("check_phase") == "healthy"]
    failures = []
    if ever:
        failures.append(f"healthy phase: alerts were active: {', '.join(sorted(ever))}")
    if received:
        failures.append(f"healthy phase: Alertmanager received {', '.join(sorted(received))}")
    total = len(rules_in_files(stack.rules_dir, "alerting"))
    return (f"healthy: {len(ever)} of {total} alerts ever pending or firing during the {window} of load, "
            f"{len(received)} received by Alertmanager"), failures


def check_sanic_and_routes(stack, prom, at):
    """server/worker are the service's host name and pid; one series per route."""
    failures = []
    pid = str(stack.pids["errors"])
    host = socket.gethostname()
    answer = http_json(f"{prom}/api/v1/query", {"query": "count by (server, worker) (http_requests_total)",
                                                 "time": f"{at:.3f}"})
    pairs = {(s["metric"].get("server"), s["metric"].get("worker")) for s in answer["data"]["result"]}
    hostname_file = Path("/proc/sys/kernel/hostname")
    kernel_host = hostname_file.read_text().strip() if hostname_file.exists() else host
    if pairs != {(kernel_host, pid)}:
        failures.append(f"http_requests_total server/worker are {sorted(pairs)}, expected ({kernel_host!r}, {pid!r})")
    by_handler = http_json(f"{prom}/api/v1/query", {"query": "sum by (handler) (rate(http_requests_total[1m]))",
                                                     "time": f"{at:.3f}"})["data"]["result"]
    handlers = sorted(s["metric"].get("handler", "") for s in by_handler)
    routes = http_json(f"{prom}/api/v1/query", {"query": "count by (http_route) "
                                                          "(rate(http_server_request_duration_seconds_count[1m]))",
                                                 "time": f"{at:.3f}"})["data"]["result"]
    routes = sorted(s["metric"]["http_route"] for s in routes)
    if handlers != routes:
        failures.append(f"sum by (handler) (rate(http_requests_total[1m])): handlers {handlers}, routes {routes}")
    return f"server={kernel_host} worker={pid}; one series per route: {', '.join(handlers)}", failures


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


def run_load(stack, duration):
    """Drives every phase's load for `duration` seconds while watching for the alerts.
    Returns (loads, watch, wall-clock time the load started)."""
    loads = {phase.name: Load(stack.services[phase.name], phase.threads, phase.rate) for phase in PHASES}
    started_wall, started = time.time(), time.monotonic()
    watch = Watch(stack, started)
    for load in loads.values():
        load.start()
    watch.start()
    try:
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= duration:
                break
            time.sleep(min(15, duration - elapsed))
            seen = ", ".join(f"{what} at {t:.0f} s" for what, t in (
                ("mail", watch.mail_after), ("webhook", watch.webhook_after), ("latency alert", watch.latency_after))
                if t is not None) or "no alert delivery yet"
            log(f"  load {time.monotonic() - started:3.0f}/{duration} s: "
                + "; ".join(f"{name} {load.total()}" for name, load in loads.items()) + f"; {seen}")
    finally:
        for load in loads.values():
            load.stop()
    # Delivery may still be on its way (group_wait): give it a little longer.
    deadline = time.monotonic() + 30
    while watch.is_alive() and time.monotonic() < deadline:
        time.sleep(1)
    watch.stop()
    return loads, watch, started_wall


def run_checks(args, workdir, processes, smtp):
    run_started = time.monotonic()
    log(f"starting 3 items-api ({args.binary}; phases {', '.join(p.name for p in PHASES)}), "
        f"3 Prometheus, Alertmanager, an SMTP sink and a webhook sink in {workdir}")
    stack = start_stack(Path(args.binary), workdir, processes, smtp)
    log(f"  Alertmanager {stack.alertmanager}  SMTP sink {smtp.address}  webhook sink {stack.webhook}  "
        f"rules: {stack.for_changed} `for` shortened to {FOR_IN_TEST} in {stack.rules_dir}")
    for phase in PHASES:
        log(f"  {phase.name:<8} items-api http://{stack.services[phase.name]} (pid {stack.pids[phase.name]}) "
            f"{' '.join(f'{k}={v}' for k, v in phase.env.items()) or 'no faults'}; "
            f"Prometheus {stack.proms[phase.name]}")
    prometheus_started = time.monotonic()

    log(f"load for {args.duration} s: " + "; ".join(f"{p.name} {p.rate:g} req/s from {p.threads} threads"
                                                    for p in PHASES))
    loads, watch, load_started = run_load(stack, args.duration)
    for name, load in loads.items():
        log(f"  {name}: {load.summary()}")
    for process in processes:
        process.check_alive()

    prom = stack.proms["errors"]
    at = time.time()
    # The dashboard's time range is the run: from the start of the load to now.
    range_s = at - load_started
    log(f"evaluating dashboards and compat queries on the errors phase at "
        f"{time.strftime('%H:%M:%S', time.localtime(at))} (time range {range_s:.0f} s; "
        + ", ".join(f"${k}={v}" for k, v in builtin_variables(range_s).items() if not k.endswith("_ms")) + ")")
    dashboard_results, failures = check_dashboards(prom, range_s, load_started, at)
    compat_results = check_compat(prom, at)
    failures += query_failures(dashboard_results + compat_results)
    sanic_note, sanic_failures = check_sanic_and_routes(stack, prom, at)
    failures += sanic_failures

    log("checking alerts, their delivery and the rules")
    delivery_notes, delivery_failures = check_delivery(stack, prom)
    failures += delivery_failures
    latency_note, latency_failures = check_latency(stack.proms["delay"])
    failures += latency_failures
    silence_note, silence_failures = check_silence(stack, range_s)
    failures += silence_failures
    rule_counts, rule_failures = check_rules(prom, prometheus_started, stack.rules_dir)
    failures += rule_failures
    if watch.error and not (watch.mail_after and watch.webhook_after and watch.latency_after):
        failures.append(f"watching for alerts failed: {watch.error}")
    for name, load in loads.items():
        if load.total() == 0 or load.transport_errors > load.total() // 100:
            failures.append(f"load ({name}): {load.summary()}: the service did not answer reliably")

    log("")
    print_table(dashboard_results + compat_results)
    log("")
    dashboards = len({r.source for r in dashboard_results})
    panels = {(r.source, r.panel_id) for r in dashboard_results}
    empty_panels = {(r.source, r.panel_id) for r in dashboard_results if r.problem()}
    ok = sum(1 for r in dashboard_results if not r.problem())
    compat_ok = sum(1 for r in compat_results if not r.problem())
    rules_total = sum(rule_counts.values())
    fired = {phase.name: sorted(alerts_in(stack.proms[phase.name], "firing")) for phase in PHASES}

    def after(t):
        return f"{t:.0f} s after load start" if t is not None else "NOT seen"

    log("summary:")
    log(f"  dashboards: {ok}/{len(dashboard_results)} queries non-empty; "
        f"{len(panels) - len(empty_panels)}/{len(panels)} panels non-empty ({dashboards} dashboards)")
    log(f"  compat: {compat_ok}/{len(compat_results)} queries non-empty; {sanic_note}")
    log(f"  rules: {rules_total - len(rule_failures)}/{rules_total} ok "
        f"({rule_counts['recording']} recording, {rule_counts['alerting']} alerting)")
    for phase in PHASES:
        log(f"  firing at the end, {phase.name}: {', '.join(fired[phase.name]) or 'none'}")
    log(f"  {ERROR_ALERT} delivered: mail {after(watch.mail_after)}, webhook {after(watch.webhook_after)}; "
        f"SMTP sink {len(smtp.received())} mails, webhook sink {len(http_json(stack.webhook + '/'))} notifications")
    for note in delivery_notes:
        log(f"    {note}")
    log(f"  delay: {latency_note or LATENCY_ALERT + ' NOT firing'} ({after(watch.latency_after)})")
    log(f"  {silence_note}")
    log(f"  check duration {time.monotonic() - run_started:.0f} s")
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
    smtp = SmtpSink()
    try:
        failures = run_checks(args, workdir, processes, smtp)
    except StackError as e:
        log(f"check_stack: could not run the stack: {e}")
        for process in processes:
            log(f"  last lines of {process.name}.log:\n{process.log_tail()}")
        return 2
    except KeyboardInterrupt:
        log("check_stack: interrupted")
        return 130
    finally:
        # Reverse order: each Prometheus stops scraping before its service goes away.
        for process in reversed(processes):
            process.stop()
        smtp.stop()
        if args.keep_tmp:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        log(f"\nFAILED: {len(failures)} problem(s)")
        for failure in failures:
            log(f"  - {failure}")
        return 1
    log("\nOK: the live stack matches the dashboards, rules, alerts and their delivery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
