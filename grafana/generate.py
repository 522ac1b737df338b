#!/usr/bin/env python3
"""Generate the Grafana dashboards of items-api into grafana/dashboards/*.json.

The JSON files are generated: edit this file, not the JSON, then run

    python3 grafana/generate.py

Standard library only. The output is deterministic (fixed ids, layout and key
order), so a change here shows up as a readable diff of the JSON.

Every query uses the raw metrics of docs/DESIGN.md §6 (no recording rules), and is
written so that it returns data whenever the service has traffic: an error rate
is "errors or 0 * total", so it is 0, not empty, while there are no 5xx.
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"

TAG = "items-api"
JAEGER_URL = "http://localhost:16686"
PROM = {"type": "prometheus", "uid": "${datasource}"}

# --- metric names (docs/DESIGN.md §6) -------------------------------------------
HTTP_COUNT = "http_server_request_duration_seconds_count"
HTTP_BUCKET = "http_server_request_duration_seconds_bucket"
HTTP_ACTIVE = "http_server_active_requests"
REQ_SIZE = "http_server_request_body_size_bytes"
RESP_SIZE = "http_server_response_body_size_bytes"
DB_COUNT = "db_client_operation_duration_seconds_count"
DB_BUCKET = "db_client_operation_duration_seconds_bucket"

# --- label matchers ---------------------------------------------------------
JOB = 'job=~"$job"'
INST = 'job=~"$job", instance=~"$instance"'
ROUTE = INST + ', http_route=~"$route"'
S5XX = 'http_response_status_code=~"5.."'
S4XX = 'http_response_status_code=~"4.."'
RATE = "$__rate_interval"
# The SLOs leave out requests that matched no route (scanners, typos), as the
# SLO rules in prometheus/rules/slo.yml do, so the dashboard and the alerts agree.
SLO = JOB + ', http_route!="unmatched"'

# --- objectives (docs/DESIGN.md / alert rules) ----------------------------------------
AVAILABILITY_BUDGET = "0.001"  # 99.9 % of requests are not 5xx
LATENCY_BUDGET = "0.01"  # 99 % of requests answer within...
LATENCY_LE = "0.25"  # ...0.25 s, an exact bucket bound of the histogram
DB_SLOW_LE = "0.05"  # a DB operation over 50 ms is "slow"; a bucket bound too


def sel(metric, matchers):
    return f"{metric}{{{matchers}}}"


def rate(metric, matchers, window=RATE):
    return f"rate({sel(metric, matchers)}[{window}])"


def increase(metric, matchers, window):
    return f"increase({sel(metric, matchers)}[{window}])"


def agg(inner, by=""):
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def or_zero(errors, total):
    """`errors`, or 0 for every series of `total` that has no errors (never empty with traffic)."""
    return f"({errors} or 0 * {total})"


def http_error_ratio(matchers, window=RATE, by="", status=S5XX):
    total = agg(rate(HTTP_COUNT, matchers, window), by)
    errors = agg(rate(HTTP_COUNT, f"{matchers}, {status}", window), by)
    return f"{or_zero(errors, total)} / {total}"


def quantile(q, bucket, matchers, by="", window=RATE):
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(bucket, matchers, window)}))"


def mean(metric, matchers, by=""):
    return f"{agg(rate(metric + '_sum', matchers), by)} / {agg(rate(metric + '_count', matchers), by)}"


# --- targets and panels -------------------------------------------------------


def prom(expr, legend="", instant=False, fmt="time_series", interval=None):
    target = {
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "exemplar": False,  # the Rust SDK records no exemplars (docs/DESIGN.md §4)
    }
    if interval:
        target["interval"] = interval
    return target


def thresholds(*steps):
    """steps: a base colour, then (value, colour) pairs."""
    base, *rest = steps
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}] + [{"color": c, "value": v} for v, c in rest],
    }


GREEN, ORANGE, RED, BLUE, YELLOW = "green", "orange", "red", "blue", "yellow"
LATENCY_STEPS = thresholds(GREEN, (0.1, ORANGE), (0.25, RED))
ERROR_RATIO_STEPS = thresholds(GREEN, (0.001, RED))
UTILISATION_STEPS = thresholds(GREEN, (0.8, ORANGE), (0.95, RED))
# Error rate in percent, as the FastAPI brief's panel colours it: green < 1 %, yellow 1-5 %,
# red > 5 % (the ItemsApiHighErrorRatio threshold).
ERROR_PERCENT_STEPS = thresholds(GREEN, (1, YELLOW), (5, RED))
ACTIVE_STEPS = thresholds(GREEN, (50, ORANGE), (80, RED))
# Burn rates of prometheus/rules/slo.yml: 1x and 3x open tickets, 6x and 14.4x page.
BURN_STEPS = thresholds(GREEN, (1, "yellow"), (3, ORANGE), (6, RED), (14.4, "dark-red"))


def _panel(kind, title, targets, unit, description, defaults=None, options=None, **extra):
    refs = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PROM,
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": extra.pop("overrides", [])},
        "options": options or {},
        "targets": [{"refId": next(refs), **t} for t in targets],
    }
    panel.update(extra)
    return panel


def timeseries(title, targets, unit, description="", steps=None, threshold_style="dashed",
               stack=False, bars=False, fill=10, minimum=0, maximum=None, decimals=None, **extra):
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "bars" if bars else "line",
            "lineWidth": 1,
            "fillOpacity": 80 if bars else fill,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": threshold_style if steps else "off"},
        },
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    if steps:
        defaults["thresholds"] = steps
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, targets, unit, description, defaults, options, **extra)


def stat(title, targets, unit, description="", steps=None, decimals=None, graph=True, **extra):
    defaults = {"color": {"mode": "thresholds"}}
    if steps:
        defaults["thresholds"] = steps
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background" if steps else "none",
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
        "wideLayout": True,
        "showPercentChange": False,
    }
    return _panel("stat", title, targets, unit, description, defaults, options, **extra)


def gauge(title, targets, unit, description="", steps=None, minimum=0, maximum=1, **extra):
    defaults = {"color": {"mode": "thresholds"}, "min": minimum, "max": maximum, "thresholds": steps}
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "auto",
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
    }
    return _panel("gauge", title, targets, unit, description, defaults, options, **extra)


def piechart(title, targets, unit, description="", **extra):
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "pieType": "donut",
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True, "values": ["value", "percent"]},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    defaults = {"color": {"mode": "palette-classic"}, "decimals": 0}
    return _panel("piechart", title, targets, unit, description, defaults, options, **extra)


def heatmap(title, target, unit, description="", **extra):
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "scale": "exponential",
                  "exponent": 0.5, "steps": 64, "reverse": False},
        "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
        "rowsFrame": {"layout": "auto"},
        "cellValues": {"unit": "short"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
    }
    return _panel("heatmap", title, [target], unit, description, {}, options, **extra)


def table(title, targets, unit, description="", overrides=None, transformations=None, sort_by=None, **extra):
    defaults = {"custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}}
    options = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
    }
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return _panel("table", title, targets, unit, description, defaults, options,
                  overrides=overrides or [], transformations=transformations or [], **extra)


def by_name(name, **properties):
    """A field override for the field (column or series) called `name`."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties.items()],
    }


def by_regexp(pattern, **properties):
    override = by_name(pattern, **properties)
    override["matcher"]["id"] = "byRegexp"
    return override


STATUS_COLOURS = [
    by_regexp("^2..$", color={"mode": "fixed", "fixedColor": GREEN}),
    by_regexp("^3..$", color={"mode": "fixed", "fixedColor": BLUE}),
    by_regexp("^4..$", color={"mode": "fixed", "fixedColor": ORANGE}),
    by_regexp("^5..$", color={"mode": "fixed", "fixedColor": RED}),
]


# --- variables ----------------------------------------------------------------


def datasource_var():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Prometheus", "value": "prometheus"},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_var(name, label, query, multi=False, current=None):
    variable = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": query,
        "current": current or {"selected": False, "text": "", "value": ""},
        "hide": 0,
        "includeAll": multi,
        "multi": multi,
        "options": [],
        "refresh": 2,  # on time range change
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    if multi:
        variable["allValue"] = ".*"  # "All" also matches series without the label
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def job_var():
    return query_var("job", "Job", "label_values(target_info, job)",
                     current={"selected": False, "text": "items-api", "value": "items-api"})


def instance_var():
    # target_info, not up: on the Collector path (honor_labels) `up` carries the
    # Collector's job, while target_info carries the service's job and instance.
    return query_var("instance", "Instance", 'label_values(target_info{job=~"$job"}, instance)', multi=True)


def route_var():
    return query_var("route", "Route", f"label_values({sel(HTTP_COUNT, INST)}, http_route)", multi=True)


def interval_var():
    steps = ["1m", "5m", "15m", "1h"]
    auto = {"selected": True, "text": "auto", "value": "$__auto_interval_interval"}
    return {
        "name": "interval",
        "label": "Interval",
        "type": "interval",
        "query": ",".join(steps),
        "auto": True,
        "auto_count": 30,
        "auto_min": "1m",
        "current": {"selected": False, "text": "auto", "value": "$__auto_interval_interval"},
        "options": [auto] + [{"selected": False, "text": s, "value": s} for s in steps],
        "hide": 0,
        "refresh": 2,
        "skipUrlSync": False,
    }


# --- dashboards -----------------------------------------------------------------


class Dashboard:
    """Collects panels and lays them out left to right on the 24-column grid."""

    def __init__(self, uid, title, description, variables, tags=(), time_from="now-1h", refresh="30s"):
        self.uid, self.title, self.description, self.refresh = uid, title, description, refresh
        self.variables, self.tags, self.time_from = variables, [TAG, *tags], time_from
        self.panels = []
        self.x = self.y = self.line_height = 0

    def _next_id(self):
        return len(self.panels) + 1

    def _new_line(self):
        self.y += self.line_height
        self.x = self.line_height = 0

    def row(self, title):
        self._new_line()
        self.panels.append({
            "type": "row",
            "id": self._next_id(),
            "title": title,
            "collapsed": False,
            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
            "panels": [],
        })
        self.y += 1

    def add(self, w, h, panel):
        if self.x + w > 24:
            self._new_line()
        panel = {"id": self._next_id(), "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h}, **panel}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)
        return self

    def to_json(self):
        job_in_url = "${job}" if any(v["name"] == "job" for v in self.variables) else "items-api"
        return {
            "annotations": {"list": [{
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            }]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "title": "items-api dashboards",
                    "type": "dashboards",
                    "tags": [TAG],
                    "asDropdown": False,
                    "includeVars": True,
                    "keepTime": True,
                    "targetBlank": False,
                    "icon": "external link",
                    "tooltip": "",
                    "url": "",
                },
                {
                    "title": "Jaeger traces",
                    "type": "link",
                    "url": f"{JAEGER_URL}/search?service={job_in_url}",
                    "tags": [],
                    "asDropdown": False,
                    "includeVars": False,
                    "keepTime": False,
                    "targetBlank": True,
                    "icon": "external link",
                    "tooltip": "Search this service's traces in Jaeger",
                },
            ],
            "panels": self.panels,
            "refresh": self.refresh,
            "schemaVersion": 39,
            "tags": self.tags,
            "templating": {"list": self.variables},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


def api_overview():
    d = Dashboard(
        "items-api-overview", "API Production Overview",
        "Is items-api healthy right now? Traffic, errors, latency and the process that serves them.",
        [datasource_var(), job_var(), instance_var(), route_var()], tags=["overview"], refresh="10s")

    total = agg(rate(HTTP_COUNT, ROUTE))
    total_by_route = agg(rate(HTTP_COUNT, ROUTE), "http_route")

    # The production overview's layout: each row opens with its stat panels (the
    # number to read at a glance, with a sparkline), then the breakdown over time.
    d.row("Traffic")
    d.add(5, 8, stat("Requests per Second", [prom(total, "requests/s")], "reqps",
                     "All measured requests (not /metrics, /health, /docs), per second.", decimals=1))
    d.add(5, 8, stat("In-Progress Requests", [prom(agg(sel(HTTP_ACTIVE, INST)), "in progress")], "short",
                     "Requests being served right now, summed over every instance and method.", decimals=0))
    d.add(14, 8, timeseries("Requests per Endpoint", [prom(total_by_route, "{{http_route}}")], "reqps",
                            "Requests per second by route. `unmatched` collects every request that matched no route."))

    d.row("Errors")
    d.add(4, 8, stat("Error Rate (%)", [
        prom(f"100 * {or_zero(agg(rate(HTTP_COUNT, f'{ROUTE}, {S5XX}')), total)} / {total}", "5xx %")], "percent",
        "5xx / all x 100. Green under 1 %, yellow 1-5 %, red over 5 % (ItemsApiHighErrorRatio).",
        steps=ERROR_PERCENT_STEPS, decimals=2))
    d.add(4, 8, stat("4xx Rate", [
        prom(or_zero(agg(rate(HTTP_COUNT, f"{ROUTE}, {S4XX}")), total), "4xx/s")], "reqps",
        "Client errors per second: bad input, not found, too large. They do not burn the error budget.",
        decimals=2))
    d.add(4, 8, stat("5xx Rate", [
        prom(or_zero(agg(rate(HTTP_COUNT, f"{ROUTE}, {S5XX}")), total), "5xx/s")], "reqps",
        "Server errors per second. They burn the availability error budget; ItemsApiErrorSpike fires over 5/s.",
        steps=thresholds(GREEN, (0.1, ORANGE), (5, RED)), decimals=2))
    d.add(12, 8, timeseries("Errors per Endpoint", [
        prom(or_zero(agg(rate(HTTP_COUNT, f"{ROUTE}, {S5XX}"), "http_route"), total_by_route),
             "{{http_route}} 5xx"),
        prom(or_zero(agg(rate(HTTP_COUNT, f"{ROUTE}, {S4XX}"), "http_route"), total_by_route),
             "{{http_route}} 4xx"),
    ], "reqps", "5xx and 4xx per second by route. Open Jaeger to see the failing spans (status Error)."))

    d.row("Latency")
    for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
        d.add(8, 8, timeseries(f"Latency {name}", [
            prom(quantile(q, HTTP_BUCKET, ROUTE), f"{name} all routes"),
            prom(quantile(q, HTTP_BUCKET, ROUTE, by="http_route"), f"{name} {{{{http_route}}}}"),
        ], "s", f"{name} of request duration. Red dashed line: the 250 ms latency objective.",
            steps=LATENCY_STEPS))

    d.row("System")
    d.add(12, 8, timeseries("CPU", [
        prom(agg(rate("process_cpu_time_seconds_total", INST), "instance, cpu_mode"),
             "{{instance}} {{cpu_mode}}")], "percentunit",
        "CPU seconds per second; 100 % is one core.", stack=True))
    d.add(12, 8, timeseries("Memory", [
        prom(agg(sel("process_memory_usage_bytes", INST), "instance"), "{{instance}} resident"),
        prom(agg(sel("process_memory_virtual_bytes", INST), "instance"), "{{instance}} virtual"),
    ], "bytes", "Resident set size, and virtual memory."))
    d.add(6, 8, timeseries("Threads and open files", [
        prom(agg(sel("process_thread_count", INST), "instance"), "{{instance}} threads"),
        prom(agg(sel("process_unix_file_descriptor_count", INST), "instance"), "{{instance}} open fds"),
    ], "short", "OS threads and open file descriptors (sockets included).", decimals=0))
    d.add(6, 8, timeseries("Tokio runtime", [
        prom(agg(sel("tokio_runtime_alive_tasks", INST), "instance"), "{{instance}} alive tasks"),
        prom(agg(sel("tokio_runtime_global_queue_depth", INST), "instance"), "{{instance}} global queue"),
        prom(agg(sel("tokio_runtime_workers", INST), "instance"), "{{instance}} workers"),
    ], "short", "Tasks alive, tasks waiting in the global queue, and worker threads.", decimals=0))
    d.add(12, 7, timeseries("Tokio worker busy ratio", [
        prom(f'{agg(rate("tokio_runtime_busy_time_seconds_total", INST), "instance")}'
             f' / {agg(sel("tokio_runtime_workers", INST), "instance")}', "{{instance}}")],
        "percentunit", "Share of time the worker threads spend running tasks. Near 100 %: the runtime is saturated.",
        steps=UTILISATION_STEPS, maximum=1))
    d.add(6, 7, stat("Uptime", [
        prom(agg(sel("process_uptime_seconds", INST), "instance"), "{{instance}}")], "s",
        "Time since the process started. A reset means a restart.", graph=False))
    d.add(18, 7, table("Instances", [
        prom(sel("target_info", INST), instant=True, fmt="table")], "none",
        "The OpenTelemetry resource of each instance (target_info).",
        transformations=[{"id": "organize", "options": {
            "excludeByName": {k: True for k in (
                "Time", "Value", "__name__", "job", "telemetry_sdk_language", "telemetry_sdk_name",
                "telemetry_sdk_version", "otel_scope_name", "otel_scope_version")},
            "indexByName": {"instance": 0, "service_name": 1, "service_version": 2,
                            "deployment_environment_name": 3, "service_instance_id": 4},
            "renameByName": {}}}]))
    return d


def http_overview():
    d = Dashboard(
        "items-api-http", "HTTP Overview",
        "What the HTTP traffic is made of: methods, status codes, payload sizes, latency distribution.",
        [datasource_var(), job_var(), instance_var(), route_var(), interval_var()], tags=["http"])

    # The FastAPI brief's four guided panels come first, as its users know them.
    total = agg(rate(HTTP_COUNT, ROUTE))
    d.add(6, 8, timeseries("Total requests per second", [prom(total, "requests/s")], "reqps",
                           "All measured requests per second."))
    d.add(6, 8, timeseries("Response time p95", [prom(quantile("0.95", HTTP_BUCKET, ROUTE), "p95")], "s",
                           "95th percentile of request duration. ItemsApiHighLatencyP95 fires over 1 s.",
                           steps=thresholds(GREEN, (1, RED))))
    d.add(6, 8, stat("Error rate", [
        prom(f"100 * {or_zero(agg(rate(HTTP_COUNT, f'{ROUTE}, {S5XX}')), total)} / {total}", "5xx %")], "percent",
        "Share of requests answered 5xx, in percent: green under 1 %, yellow 1-5 %, red over 5 %.",
        steps=ERROR_PERCENT_STEPS, decimals=2))
    d.add(6, 8, gauge("Active requests", [prom(agg(sel(HTTP_ACTIVE, INST)), "active")], "short",
                      "Requests being served right now, all instances and methods.", steps=ACTIVE_STEPS,
                      maximum=100))

    d.row("Requests")
    d.add(12, 8, timeseries("Requests per second by method", [
        prom(agg(rate(HTTP_COUNT, ROUTE), "http_request_method"), "{{http_request_method}}")], "reqps",
        "`_OTHER` is any method outside the known set."))
    d.add(12, 8, timeseries("Requests per second by status code", [
        prom(agg(rate(HTTP_COUNT, ROUTE), "http_response_status_code"), "{{http_response_status_code}}")],
        "reqps", "2xx green, 3xx blue, 4xx orange, 5xx red.", overrides=STATUS_COLOURS))
    d.add(8, 9, piechart("Status codes over the time range", [
        prom(agg(increase(HTTP_COUNT, ROUTE, "$__range"), "http_response_status_code"),
             "{{http_response_status_code}}", instant=True)], "short",
        "Requests per status code over the dashboard's time range.", overrides=STATUS_COLOURS))
    d.add(16, 9, timeseries("Requests per $interval by status code", [
        prom(agg(increase(HTTP_COUNT, ROUTE, "$interval"), "http_response_status_code"),
             "{{http_response_status_code}}", interval="$interval")], "short",
        "Request counts per interval, stacked by status code.", stack=True, bars=True,
        overrides=STATUS_COLOURS, decimals=0))
    d.add(24, 9, table("Status codes by route and method", [
        prom(agg(increase(HTTP_COUNT, ROUTE, "$__range"),
                 "http_route, http_request_method, http_response_status_code"), instant=True, fmt="table")],
        "short", "Request count per route, method and status code over the dashboard's time range.",
        sort_by="Requests",
        overrides=[by_name("http_route", displayName="Route"),
                   by_name("http_request_method", displayName="Method"),
                   by_name("http_response_status_code", displayName="Status"),
                   by_name("Value", displayName="Requests", decimals=0)],
        transformations=[{"id": "organize", "options": {
            "excludeByName": {"Time": True},
            "indexByName": {"http_route": 0, "http_request_method": 1, "http_response_status_code": 2, "Value": 3},
            "renameByName": {}}}]))

    d.row("Payload sizes")
    for title, metric in (("Request body size", REQ_SIZE), ("Response body size", RESP_SIZE)):
        d.add(12, 8, timeseries(title, [
            prom(quantile("0.5", metric + "_bucket", ROUTE), "p50"),
            prom(quantile("0.95", metric + "_bucket", ROUTE), "p95"),
            prom(mean(metric, ROUTE), "mean"),
        ], "bytes", "Body size quantiles (from the histogram buckets) and mean."))
    d.add(12, 8, timeseries("Body throughput", [
        prom(agg(rate(REQ_SIZE + "_sum", ROUTE)), "received (request bodies)"),
        prom(agg(rate(RESP_SIZE + "_sum", ROUTE)), "sent (response bodies)"),
    ], "Bps", "Bytes per second of HTTP bodies (headers not included)."))
    d.add(12, 8, timeseries("Mean response body size by route", [
        prom(mean(RESP_SIZE, ROUTE, by="http_route"), "{{http_route}}")], "bytes",
        "Mean response body size per route: a list page grows with `limit`."))

    d.row("Latency and concurrency")
    d.add(12, 9, heatmap("Request duration heatmap", prom(
        agg(increase(HTTP_BUCKET, ROUTE, RATE), "le"), "{{le}}", fmt="heatmap"), "s",
        "Requests per duration bucket over time."))
    d.add(12, 9, timeseries("In-progress requests by method", [
        prom(agg(sel(HTTP_ACTIVE, INST), "http_request_method"), "{{http_request_method}}")], "short",
        "Concurrent requests being served.", decimals=0))
    d.add(12, 8, timeseries("Requests per second by protocol and scheme", [
        prom(agg(rate(HTTP_COUNT, ROUTE), "url_scheme, network_protocol_version"),
             "{{url_scheme}} HTTP/{{network_protocol_version}}")], "reqps",
        "HTTP version and scheme as seen by the server."))
    d.add(12, 8, timeseries("Mean latency by method", [
        prom(mean("http_server_request_duration_seconds", ROUTE, by="http_request_method"),
             "{{http_request_method}}")], "s",
        "Mean request duration per method.", steps=LATENCY_STEPS))
    return d


def red_by_route():
    d = Dashboard(
        "items-api-red", "RED by route",
        "Rate, errors and duration per route. Click a route in the table to drill down.",
        [datasource_var(), job_var(), instance_var(), route_var()], tags=["red"])

    route = "${__data.fields.http_route:percentencode}"
    common = "${job:queryparam}&${instance:queryparam}&${datasource:queryparam}&${__url_time_range}"
    route_links = [
        {"title": "Drill down to ${__data.fields.http_route}",
         "url": f"/d/items-api-red/red-by-route?var-route={route}&{common}"},
        {"title": "API overview for ${__data.fields.http_route}",
         "url": f"/d/items-api-overview/api-production-overview?var-route={route}&{common}"},
        {"title": "Traces of ${__data.fields.http_route} in Jaeger",
         "url": f"{JAEGER_URL}/search?service=${{job:percentencode}}&tags=%7B%22http.route%22%3A%22{route}%22%7D",
         "targetBlank": True},
    ]
    # The table lists every route (no $route filter); the panels below follow $route.
    d.add(24, 10, table("Routes over the time range", [
        prom(agg(rate(HTTP_COUNT, INST, "$__range"), "http_route"), instant=True, fmt="table"),
        prom(http_error_ratio(INST, "$__range", by="http_route"), instant=True, fmt="table"),
        prom(http_error_ratio(INST, "$__range", by="http_route", status=S4XX), instant=True, fmt="table"),
        prom(quantile("0.99", HTTP_BUCKET, INST, by="http_route", window="$__range"), instant=True, fmt="table"),
    ], "reqps", "Per route over the dashboard's time range. Click a route for its detail below, "
                "the API overview, or its traces.",
        sort_by="Requests/s",
        overrides=[
            by_name("http_route", displayName="Route", links=route_links),
            by_name("Value #A", displayName="Requests/s", unit="reqps"),
            by_name("Value #B", displayName="5xx ratio", unit="percentunit", decimals=2,
                    thresholds=ERROR_RATIO_STEPS, **{"custom.cellOptions": {"type": "color-background"}}),
            by_name("Value #C", displayName="4xx ratio", unit="percentunit", decimals=1),
            by_name("Value #D", displayName="p99", unit="s", thresholds=LATENCY_STEPS,
                    **{"custom.cellOptions": {"type": "color-text"}}),
        ],
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "indexByName": {"http_route": 0, "Value #A": 1, "Value #B": 2, "Value #C": 3, "Value #D": 4},
                "renameByName": {}}},
        ]))

    d.row("Route detail: $route")
    d.add(8, 8, timeseries("Rate by status code: $route", [
        prom(agg(rate(HTTP_COUNT, ROUTE), "http_route, http_response_status_code"),
             "{{http_route}} {{http_response_status_code}}")], "reqps",
        "Requests per second of the selected routes, by status code."))
    d.add(8, 8, timeseries("Errors (5xx ratio): $route", [
        prom(http_error_ratio(ROUTE, by="http_route"), "{{http_route}}")], "percentunit",
        "Share of requests answered 5xx. Dashed line: the 0.1 % error budget.", steps=ERROR_RATIO_STEPS))
    d.add(8, 8, timeseries("Duration p50 / p95 / p99: $route", [
        prom(quantile(q, HTTP_BUCKET, ROUTE, by="http_route"), f"{{{{http_route}}}} {name}")
        for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
    ], "s", "Request duration quantiles of the selected routes.", steps=LATENCY_STEPS))
    d.add(12, 8, timeseries("Rate by method: $route", [
        prom(agg(rate(HTTP_COUNT, ROUTE), "http_route, http_request_method"),
             "{{http_request_method}} {{http_route}}")], "reqps",
        "Requests per second of the selected routes, by method."))
    d.add(12, 8, timeseries("Client errors (4xx ratio): $route", [
        prom(http_error_ratio(ROUTE, by="http_route", status=S4XX), "{{http_route}}")], "percentunit",
        "Share of requests answered 4xx: validation failures, not found, too large."))
    return d


def business():
    d = Dashboard(
        "items-api-business", "Business",
        "What users do with items: creates, reads, updates, deletes, and how many items exist.",
        [datasource_var(), job_var(), instance_var(), interval_var()], tags=["business"])
    ops = ("created", "read", "updated", "deleted")

    def counter(op):
        return f"items_{op}_total"

    def total(op, window):
        # A counter exists only once it has counted; `or vector(0)` keeps "no deletes yet" a 0.
        return f"(sum(increase({sel(counter(op), INST)}[{window}])) or vector(0))"

    def per_second(op):
        return f"(sum({rate(counter(op), INST)}) or vector(0))"

    d.add(4, 4, stat("Items stored", [prom(f'max({sel("items_stored", INST)})', "items")], "short",
                     "Items in the database, as last counted (every instance sees the same database).",
                     decimals=0))
    for op in ops:
        d.add(4, 4, stat(f"Items {op}", [prom(total(op, "$__range"), op, instant=True)], "short",
                         f"Items {op} over the dashboard's time range.", decimals=0, graph=False))
    d.add(4, 4, stat("Read/write ratio", [
        prom(f"{total('read', '$__range')} / ({' + '.join(total(op, '$__range') for op in ops if op != 'read')})",
             "reads per write", instant=True)], "short",
        "Items read per item written (created + updated + deleted) over the time range.",
        decimals=1, graph=False))

    d.add(12, 8, timeseries("Items per second by operation", [prom(per_second(op), op) for op in ops], "short",
                            "Items created, read, updated and deleted per second. "
                            "A list counts every item it returns."))
    d.add(12, 8, timeseries("Items per $interval by operation", [
        prom(total(op, "$interval"), op, interval="$interval") for op in ops], "short",
        "Items created, read, updated and deleted per interval.", stack=True, bars=True, decimals=0))
    d.add(12, 8, timeseries("Items stored", [prom(f'max({sel("items_stored", INST)})', "items stored")],
                            "short", "Items in the database.", decimals=0, minimum=None))
    d.add(12, 8, timeseries("Net items per $interval (created - deleted)", [
        prom(f"{total('created', '$interval')} - {total('deleted', '$interval')}", "net change",
             interval="$interval")], "short",
        "Growth of the catalogue per interval.", bars=True, decimals=0, minimum=None))
    d.add(12, 8, timeseries("Read/write ratio", [
        prom(f"{per_second('read')} / ({' + '.join(per_second(op) for op in ops if op != 'read')})",
             "reads per write")], "short", "Items read per item written, over time.", decimals=1))
    d.add(12, 8, piechart("Items by operation over the time range", [
        prom(total(op, "$__range"), op, instant=True) for op in ops], "short",
        "Share of items created, read, updated and deleted over the dashboard's time range."))
    return d


def database():
    d = Dashboard(
        "items-api-database", "Database",
        "How the store's database behaves: operation rate, errors, latency by operation, connection pool.",
        [datasource_var(), job_var(), instance_var()], tags=["database"])
    errors = DB_COUNT, f'{INST}, error_type!=""'
    total_by_op = agg(rate(DB_COUNT, INST), "db_operation_name")
    used = f'{INST}, db_client_connection_state="used"'

    def slow_share(by=""):
        fast = agg(rate(DB_BUCKET, f'{INST}, le="{DB_SLOW_LE}"'), by)
        return f"1 - {fast} / {agg(rate(DB_COUNT, INST), by)}"

    def utilisation(by=""):
        return (f'{agg(sel("db_client_connection_count", used), by)}'
                f' / {agg(sel("db_client_connection_max", INST), by)}')

    d.add(4, 5, stat("Operations per second", [prom(agg(rate(DB_COUNT, INST)), "ops")], "ops",
                     "Database operations per second, all operations."))
    d.add(4, 5, stat("Mean operation latency", [prom(mean("db_client_operation_duration_seconds", INST), "mean")],
                     "s", "Mean duration of a database operation.",
                     steps=thresholds(GREEN, (0.01, ORANGE), (0.05, RED))))
    d.add(4, 5, stat("Slow share (> 50 ms)", [prom(slow_share(), "slow")],
                     "percentunit", "Share of operations that took longer than 50 ms.", decimals=2,
                     steps=thresholds(GREEN, (0.01, ORANGE), (0.05, RED))))
    d.add(4, 5, stat("Errors per second", [
        prom(or_zero(agg(rate(*errors)), agg(rate(DB_COUNT, INST))), "errors/s")], "ops",
        "Database operations that failed (error_type set).", steps=thresholds(GREEN, (0.001, RED))))
    d.add(4, 5, stat("DB operations per HTTP request", [
        prom(f"{agg(rate(DB_COUNT, INST))} / {agg(rate(HTTP_COUNT, INST))}", "ops/request")], "short",
        "Database operations per HTTP request: a jump means an N+1 query crept in.", decimals=2))
    d.add(4, 5, gauge("Pool utilisation", [prom(utilisation(), "used / max")], "percentunit",
        "Connections in use over the pool's maximum.", steps=UTILISATION_STEPS))

    d.row("Operations")
    d.add(12, 8, timeseries("Operations per second by operation", [
        prom(agg(rate(DB_COUNT, INST), "db_system_name, db_operation_name, db_collection_name"),
             "{{db_operation_name}} {{db_collection_name}} ({{db_system_name}})")], "ops",
        "Database operations per second, by operation and table."))
    d.add(12, 8, timeseries("Errors per second by operation", [
        prom(or_zero(agg(rate(*errors), "db_operation_name"), total_by_op), "{{db_operation_name}}")], "ops",
        "Failed database operations per second, by operation.", steps=thresholds(GREEN, (0.001, RED))))

    d.row("Latency")
    for q, name in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
        d.add(8, 8, timeseries(f"Operation latency {name} by operation", [
            prom(quantile(q, DB_BUCKET, INST, by="db_operation_name, db_collection_name"),
                 "{{db_operation_name}} {{db_collection_name}}")], "s",
            f"{name} of database operation duration. Dashed line: the 50 ms slow threshold.",
            steps=thresholds(GREEN, (0.05, RED))))
    d.add(12, 8, timeseries("Slow share (> 50 ms) by operation", [
        prom(slow_share("db_operation_name"), "{{db_operation_name}}")], "percentunit",
        "Share of operations slower than 50 ms, from the 0.05 s bucket.", decimals=2,
        steps=thresholds(GREEN, (0.01, ORANGE), (0.05, RED)), maximum=1))
    d.add(12, 8, heatmap("Operation duration heatmap", prom(
        agg(increase(DB_BUCKET, INST, RATE), "le"), "{{le}}", fmt="heatmap"), "s",
        "Database operations per duration bucket over time."))

    d.row("Connection pool")
    d.add(12, 8, timeseries("Connections: used, idle, max", [
        prom(agg(sel("db_client_connection_count", INST),
                 "db_client_connection_pool_name, db_client_connection_state"),
             "{{db_client_connection_pool_name}} {{db_client_connection_state}}"),
        prom(agg(sel("db_client_connection_max", INST), "db_client_connection_pool_name"),
             "{{db_client_connection_pool_name}} max"),
    ], "short", "Pool connections by state, and the pool's maximum (dashed).", decimals=0,
        overrides=[by_regexp(".* max", **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                                          "custom.fillOpacity": 0,
                                          "color": {"mode": "fixed", "fixedColor": RED}})]))
    d.add(12, 8, timeseries("Pool utilisation", [
        prom(utilisation("db_client_connection_pool_name"), "{{db_client_connection_pool_name}}")], "percentunit",
        "Used connections over the maximum. Near 100 %: requests queue for a connection.",
        steps=UTILISATION_STEPS, maximum=1))
    return d


def slo():
    d = Dashboard(
        "items-api-slo", "SLO",
        "Service level objectives: 99.9 % of requests are not 5xx; 99 % of requests answer within 250 ms. "
        "Budgets are computed over the dashboard's time range (30 days by default). "
        "Requests that matched no route are left out, as in the SLO alert rules.",
        [datasource_var(), job_var()], tags=["slo"], time_from="now-30d")
    windows = ("5m", "1h", "6h")

    # fn is rate (burn rates) or increase (totals over the time range); the ratios are the same.
    def count_all(w, fn=rate):
        return agg(fn(HTTP_COUNT, SLO, w))

    def count_5xx(w, fn=rate):
        return agg(fn(HTTP_COUNT, f"{SLO}, {S5XX}", w))

    def count_fast(w, fn=rate):
        return agg(fn(HTTP_BUCKET, f'{SLO}, le="{LATENCY_LE}"', w))

    # The share of bad requests, as one parenthesised expression.
    def bad_ratio_5xx(w, fn=rate):
        return f"({or_zero(count_5xx(w, fn), count_all(w, fn))} / {count_all(w, fn)})"

    def bad_ratio_slow(w, fn=rate):
        return f"(1 - {count_fast(w, fn)} / {count_all(w, fn)})"

    def burn_targets(bad_ratio, budget):
        return [prom(f"{bad_ratio(w)} / {budget}", f"{w} window") for w in windows]

    budget_steps = thresholds(RED, (0, ORANGE), (0.25, GREEN))
    burn_help = ("Burn rate = bad-request ratio / error budget; 1 spends the budget exactly in 30 days. "
                 "The alerts page at 14.4 over 1 h (and 5 m) or 6 over 6 h (and 30 m), "
                 "and open a ticket at 3 over 1 d (and 2 h) or 1 over 3 d (and 6 h).")

    d.row("Availability: 99.9 % of requests are not 5xx")
    d.add(6, 5, stat("Availability", [
        prom(f"1 - {bad_ratio_5xx('$__range', increase)}", "availability", instant=True)], "percentunit",
        "Share of requests not answered 5xx over the time range.", decimals=3, graph=False,
        steps=thresholds(RED, (0.999, GREEN))))
    d.add(6, 5, stat("Error budget remaining", [
        prom(f"1 - {bad_ratio_5xx('$__range', increase)} / {AVAILABILITY_BUDGET}", "remaining", instant=True)],
        "percentunit", "Share of the 0.1 % error budget left over the time range. Below 0: the SLO is missed.",
        decimals=1, graph=False, steps=budget_steps))
    for w in windows:
        d.add(4, 5, stat(f"Burn rate {w}", [
            prom(f"{bad_ratio_5xx(w)} / {AVAILABILITY_BUDGET}", f"{w} window")], "short",
            burn_help, decimals=2, steps=BURN_STEPS))
    d.add(24, 8, timeseries("Availability burn rate", burn_targets(bad_ratio_5xx, AVAILABILITY_BUDGET), "short",
                           burn_help + " Shown over the last 24 h.", steps=BURN_STEPS, timeFrom="24h"))

    d.row("Latency: 99 % of requests answer within 250 ms")
    d.add(6, 5, stat("Requests within 250 ms", [
        prom(f"{count_fast('$__range', increase)} / {count_all('$__range', increase)}", "within 250 ms",
             instant=True)], "percentunit",
        "Share of requests that answered within 250 ms over the time range.", decimals=3, graph=False,
        steps=thresholds(RED, (0.99, GREEN))))
    d.add(6, 5, stat("Latency budget remaining", [
        prom(f"1 - {bad_ratio_slow('$__range', increase)} / {LATENCY_BUDGET}", "remaining", instant=True)],
        "percentunit", "Share of the 1 % slow-request budget left over the time range. Below 0: the SLO is missed.",
        decimals=1, graph=False, steps=budget_steps))
    for w in windows:
        d.add(4, 5, stat(f"Burn rate {w}", [
            prom(f"{bad_ratio_slow(w)} / {LATENCY_BUDGET}", f"{w} window")], "short",
            burn_help, decimals=2, steps=BURN_STEPS))
    d.add(24, 8, timeseries("Latency burn rate", burn_targets(bad_ratio_slow, LATENCY_BUDGET), "short",
                           burn_help + " Shown over the last 24 h.", steps=BURN_STEPS, timeFrom="24h"))

    d.row("Alerts")
    d.add(24, 8, table("ItemsApi alerts pending or firing", [
        prom('ALERTS{alertname=~"ItemsApi.*"}'
             ' or on() label_replace(vector(0), "alertname", "(none pending or firing)", "", "")',
             instant=True, fmt="table")], "none",
        "Prometheus alert rules of this service that are pending or firing now (the ALERTS series).",
        sort_by="alertname",
        links=[{"title": "Alert rules in Grafana", "url": "/alerting/list?search=ItemsApi"}],
        overrides=[
            by_name("alertstate", displayName="State", mappings=[{"type": "value", "options": {
                "firing": {"color": RED, "index": 0},
                "pending": {"color": ORANGE, "index": 1}}}],
                **{"custom.cellOptions": {"type": "color-background"}}),
            by_name("alertname", displayName="Alert"),
        ],
        transformations=[{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True},
            "indexByName": {"alertname": 0, "alertstate": 1, "severity": 2},
            "renameByName": {}}}]))
    return d


def main():
    OUT.mkdir(exist_ok=True)
    for name, build in (("api-overview", api_overview), ("http-overview", http_overview),
                        ("red-by-route", red_by_route), ("business", business),
                        ("database", database), ("slo", slo)):
        text = json.dumps(build().to_json(), indent=2, ensure_ascii=False) + "\n"
        (OUT / f"{name}.json").write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}.json")


if __name__ == "__main__":
    main()
