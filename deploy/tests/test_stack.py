"""Offline checks of the container stack (`just check-compose`; no Docker needed).

They read compose.yaml, the Dockerfile, the configs compose mounts (prometheus/,
grafana/provisioning/, otel/, deploy/gateway/) and deploy/kubernetes/, and check what
only a running stack would otherwise reveal: every host:port one component points at is
a compose service listening on that port, every service has a health check, every
bind-mounted file exists, no image floats on `latest`, the collector wires every
component it defines, the PrometheusRule is the generated copy of prometheus/rules/,
and the Kubernetes manifests are valid.

Needs: pytest, PyYAML, kubernetes-validate (deploy/requirements-test.txt); `just`
and `promtool` for the tests that use them (skipped with a reason when absent).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
STACK_JUST = ROOT / "stack.just"
K8S_DIR = ROOT / "deploy" / "kubernetes"

# Services that run once and exit (migrations, seeders) need no health check. None yet:
# a new one-shot job must be named here on purpose.
ONE_SHOT_JOBS: set[str] = set()

# Ports that third-party images listen on with their default configuration, for the
# services whose ports no config file in this repo states. Keyed by image repository.
KNOWN_IMAGE_PORTS = {
    "postgres": {5432},
    "prom/prometheus": {9090},
    "prom/alertmanager": {9093, 9094},
    "grafana/grafana": {3000},
    "locustio/locust": {8089, 5557},
    "axllent/mailpit": {1025, 8025},  # SMTP, web UI
}

# Recipes stack.just must offer (`just --list`).
STACK_RECIPES = ["up", "up-collector", "down", "logs", "ps", "open", "check-compose"]

LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", ""}


# --------------------------------------------------------------------------- helpers


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


_VAR = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value, env: dict[str, str]):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:+alt}, $$ on a parsed document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match) -> str:
        if m["dollar"]:
            return "$"
        name = m["name"] or m["bare"]
        op, arg = m["op"], m["arg"] or ""
        is_set = name in env
        val = env.get(name, "")
        if op == ":-":
            return val if val else arg
        if op == "-":
            return val if is_set else arg
        if op == ":+":
            return arg if val else ""
        if op == "+":
            return arg if is_set else ""
        if op in (":?", "?") and (not is_set or (op == ":?" and not val)):
            raise AssertionError(f"required variable {name} is unset: {arg}")
        return val

    return _VAR.sub(repl, value)


def recipe_body(name: str) -> list[str]:
    """The lines of a recipe in stack.just (without its header)."""
    lines = STACK_JUST.read_text(encoding="utf-8").splitlines()
    header = re.compile(rf"^{re.escape(name)}(\s[^:]*)?:(\s|$)")
    for i, line in enumerate(lines):
        if header.match(line):
            body = []
            for line in lines[i + 1 :]:
                if line and not line[0].isspace():
                    break
                body.append(line)
            return body
    raise AssertionError(f"no recipe {name!r} in stack.just")


@cache
def collector_overrides() -> dict[str, str]:
    """The variables `just up-collector` exports to compose (KEY=value before `docker compose`)."""
    text = " ".join(line.strip().rstrip("\\") for line in recipe_body("up-collector"))
    return dict(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=(\S+)", text))


@cache
def compose_raw() -> dict:
    return load_yaml(COMPOSE_FILE)


def compose(env: dict[str, str] | None = None) -> dict:
    """compose.yaml with variables resolved from `env` (default: none set, so the defaults)."""
    return interpolate(compose_raw(), env or {})


def services(env: dict[str, str] | None = None) -> dict[str, dict]:
    return compose(env)["services"]


def environment(svc: dict) -> dict[str, str | None]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (item.partition("=") for item in env)}
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def image_repo(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: name.rfind(":")]
    return name


def image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """('host', port) from a URL or a bare host:port."""
    if "://" not in target:
        target = "tcp://" + target
    parts = urlsplit(target)
    port = parts.port or default_port or {"http": 80, "https": 443}.get(parts.scheme)
    assert port, f"no port in {target!r}"
    return parts.hostname or "", port


def parse_port(spec) -> int:
    return int(str(spec).split("/", 1)[0])


def walk_endpoints(node, path=()):
    """Every (path, value) whose key is `endpoint` in a parsed collector-style config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "endpoint" and isinstance(v, str):
                yield path + (k,), v
            else:
                yield from walk_endpoints(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_endpoints(v, path + (i,))


def listen_ports_in_config(config: dict) -> set[int]:
    """Ports an OTel-collector-style config (collector, Jaeger v2) listens on."""
    ports = set()
    for _, value in walk_endpoints(config):
        host, port = host_port(value)
        if host in LOCAL_HOSTS:
            ports.add(port)
    return ports


def outgoing_endpoints(config: dict) -> list[tuple[tuple, str]]:
    return [(p, v) for p, v in walk_endpoints(config) if host_port(v)[0] not in LOCAL_HOSTS]


# ------------------------------------------------------------------ parsed sources


@cache
def collector_config() -> dict:
    return load_yaml(ROOT / "otel" / "collector.yaml")


@cache
def jaeger_config() -> dict:
    return load_yaml(ROOT / "otel" / "jaeger.yaml")


@cache
def loki_config() -> dict:
    return load_yaml(ROOT / "otel" / "loki.yaml")


@cache
def prometheus_config() -> dict:
    return load_yaml(ROOT / "prometheus" / "prometheus.yml")


@cache
def gateway_conf() -> str:
    text = (ROOT / "deploy" / "gateway" / "nginx.conf").read_text(encoding="utf-8")
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, ARGs expanded."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "ARG" and "=" in rest:
            k, _, v = rest.strip().partition("=")
            args[k] = v
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), rest)
        out.append((instr, rest.strip()))
    return out


def dockerfile_froms(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.strip().upper().startswith("FROM ")]


def listen_ports(name: str) -> set[int]:
    """The ports a compose service really listens on, from its config or image."""
    svc = services()[name]
    if name == "api":
        ports = {parse_port(rest) for instr, rest in dockerfile() if instr == "EXPOSE"}
        listen = environment(svc).get("LISTEN_ADDR")
        if listen:
            ports.add(host_port(listen)[1])
        return ports
    if name == "gateway":
        return {int(p) for p in re.findall(r"\blisten\s+(\d+)", gateway_conf())}
    if name == "otel-collector":
        return listen_ports_in_config(collector_config())
    if name == "jaeger":
        return listen_ports_in_config(jaeger_config())
    if name == "loki":
        server = loki_config()["server"]
        return {server["http_listen_port"], server["grpc_listen_port"]}
    if name == "alert-webhook":
        command = svc["command"]
        return {int(command[command.index("--port") + 1])}
    repo = image_repo(svc["image"])
    assert repo in KNOWN_IMAGE_PORTS, f"{name}: add the ports of image {repo} to KNOWN_IMAGE_PORTS"
    return KNOWN_IMAGE_PORTS[repo]


def declared_ports(svc: dict) -> set[int]:
    """Container ports a service declares (expose + the container side of ports)."""
    ports = {parse_port(p) for p in svc.get("expose", [])}
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            ports.add(parse_port(p["target"]))
        else:
            ports.add(parse_port(str(p).rsplit(":", 1)[-1]))
    return ports


def assert_resolves(target: str, where: str, default_port: int | None = None) -> tuple[str, int]:
    """`target` (URL or host:port) names a compose service and a port it listens on and declares."""
    host, port = host_port(target, default_port)
    svcs = services()
    assert host in svcs, f"{where}: {target!r}: host {host!r} is not a compose service ({sorted(svcs)})"
    assert port in listen_ports(host), (
        f"{where}: {target!r}: {host} does not listen on {port} (it listens on {sorted(listen_ports(host))})"
    )
    assert port in declared_ports(svcs[host]), f"{where}: {target!r}: port {port} not in {host}'s expose/ports"
    return host, port


def bind_mounts() -> list[tuple[str, str, str]]:
    """(service, host path, container path) of every bind mount."""
    out = []
    for name, svc in services().items():
        for vol in svc.get("volumes", []):
            if isinstance(vol, dict):
                if vol.get("type") == "bind":
                    out.append((name, vol["source"], vol["target"]))
                continue
            source, _, rest = vol.partition(":")
            if source.startswith((".", "/", "~")):
                out.append((name, source, rest.split(":", 1)[0]))
    return out


# ------------------------------------------------------------------------ compose


def test_compose_has_the_stack_services():
    expected = {
        "api",
        "postgres",
        "prometheus",
        "alertmanager",
        "grafana",
        "jaeger",
        "loki",
        "otel-collector",
        "locust",
        "mailpit",
        "alert-webhook",
    }
    assert expected <= set(services())
    assert services()["otel-collector"].get("profiles") == ["collector"]
    assert services()["locust"].get("profiles") == ["load"]


@pytest.mark.parametrize("name", sorted(compose_raw()["services"]))
def test_every_long_running_service_has_a_healthcheck(name):
    if name in ONE_SHOT_JOBS:
        pytest.skip("one-shot job")
    hc = services()[name].get("healthcheck")
    assert hc, f"{name} has no healthcheck"
    assert not hc.get("disable"), f"{name}: healthcheck disabled"
    test = hc.get("test")
    assert test and test != ["NONE"], f"{name}: healthcheck has no test"


@pytest.mark.parametrize("name", sorted(compose_raw()["services"]))
def test_healthchecks_probe_a_port_the_service_listens_on(name):
    test = services()[name].get("healthcheck", {}).get("test", [])
    text = " ".join(test) if isinstance(test, list) else test
    for url in re.findall(r"https?://[^\s'\"]+", text):
        host, port = host_port(url)
        assert host in LOCAL_HOSTS, f"{name}: health check should probe itself, not {url}"
        assert port in listen_ports(name), (
            f"{name}: health check probes {port}, service listens on {listen_ports(name)}"
        )


def test_declared_ports_are_real_listeners():
    for name, svc in services().items():
        declared, real = declared_ports(svc), listen_ports(name)
        assert declared, f"{name}: declare its ports with expose"
        assert declared <= real, f"{name}: declares {sorted(declared - real)}, which nothing listens on"


def test_host_ports_are_unique_and_match_the_published_urls():
    published: dict[int, str] = {}
    for name, svc in services().items():
        for p in svc.get("ports", []):
            host_side = int(str(p).split(":")[-2])
            assert host_side not in published, f"host port {host_side}: {published[host_side]} and {name}"
            published[host_side] = name
    assert published == {
        8000: "gateway",
        3000: "grafana",
        9090: "prometheus",
        9093: "alertmanager",
        16686: "jaeger",
        3100: "loki",
        8089: "locust",
        8025: "mailpit",
        5001: "alert-webhook",
    }


@pytest.mark.parametrize("name,source,target", bind_mounts(), ids=[f"{n}:{s}" for n, s, _ in bind_mounts()])
def test_bind_mounts_exist(name, source, target):
    path = (ROOT / source).resolve()
    if source.rstrip("/") == "./load" and not (path / "locustfile.py").exists():
        pytest.skip("load/locustfile.py is not in the repository yet")
    assert path.exists(), f"{name} mounts {source}, which does not exist"
    assert ROOT in path.parents or path == ROOT, f"{name} mounts {source} from outside the repository"


def test_commands_name_mounted_config_files():
    """A --config path in a service's command is one of its bind-mount targets."""
    for name, svc in services().items():
        targets = [t for n, _, t in bind_mounts() if n == name]
        for arg in svc.get("command") or []:
            for path in re.findall(r"(/etc/[\w./-]+)", str(arg)):
                assert any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets), (
                    f"{name}: command uses {path}, which is not mounted ({targets})"
                )


def test_build_contexts_exist():
    for name, svc in services().items():
        build = svc.get("build")
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir(), f"{name}: build context {context} missing"
        if isinstance(build, dict) and "dockerfile_inline" not in build:
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_no_latest_or_untagged_images():
    for name, svc in services().items():
        if "image" in svc:
            tag = image_tag(svc["image"])
            assert tag and tag != "latest", f"{name}: image {svc['image']} must have a pinned tag"
        inline = (svc.get("build") or {}).get("dockerfile_inline") if isinstance(svc.get("build"), dict) else None
        if inline:
            for ref in dockerfile_froms(inline):
                assert image_tag(ref) not in (None, "latest"), f"{name}: FROM {ref} in dockerfile_inline"
        elif "build" in svc:
            assert "image" in svc, f"{name}: name the built image with a tag (else it is tagged latest)"
    for instr, rest in dockerfile():
        if instr == "FROM":
            ref = rest.split()[0]
            assert image_tag(ref) not in (None, "latest"), f"Dockerfile: FROM {ref}"
    for text in (COMPOSE_FILE.read_text(), (ROOT / "Dockerfile").read_text()):
        assert not re.search(r":latest\b", text)


def test_depends_on_waits_for_health_where_it_matters():
    svcs = services()

    def healthy_deps(name):
        deps = svcs[name].get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: use the long depends_on syntax with a condition"
        return {d for d, spec in deps.items() if spec.get("condition") == "service_healthy"}

    for name, svc in svcs.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            assert "healthcheck" in svcs[dep], f"{name} waits for {dep}, which has no health check"
            dep_profiles = set(svcs[dep].get("profiles", []))
            assert not dep_profiles or dep_profiles & set(svc.get("profiles", [])), (
                f"{name} depends on {dep}, which only runs in profiles {dep_profiles}"
            )
    assert {"postgres"} <= healthy_deps("api")
    assert {"prometheus", "loki", "jaeger"} <= healthy_deps("grafana")
    assert {"jaeger", "loki"} <= healthy_deps("otel-collector")
    assert {"api"} <= healthy_deps("gateway")


def test_api_can_scale_out():
    api = services()["api"]
    assert api["image"] and "build" in api
    for key in ("container_name", "ports", "hostname"):
        assert key not in api, f"api: {key} prevents `--scale api=N`"
    # Prometheus finds every replica by the service name, the gateway spreads over them.
    dns = [sd for job in prometheus_config()["scrape_configs"] for sd in job.get("dns_sd_configs", [])]
    assert any("api" in sd["names"] and sd["port"] in listen_ports("api") for sd in dns)
    assert "resolver 127.0.0.11" in gateway_conf(), "gateway must resolve api per request to see every replica"


# ------------------------------------------------------------- cross-references


def test_prometheus_targets_are_compose_services():
    prom = prometheus_config()
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                if host_port(target)[0] in LOCAL_HOSTS:
                    assert host_port(target)[1] in listen_ports("prometheus"), f"job {job['job_name']}: {target}"
                else:
                    assert_resolves(target, f"prometheus.yml job {job['job_name']}")
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                assert_resolves(f"{name}:{sd['port']}", f"prometheus.yml job {job['job_name']} dns_sd")
    for am in prom["alerting"]["alertmanagers"]:
        for sc in am["static_configs"]:
            for target in sc["targets"]:
                assert_resolves(target, "prometheus.yml alerting")


@cache
def alertmanager_config() -> dict:
    return load_yaml(ROOT / "prometheus" / "alertmanager.yml")


def rendered_alertmanager_config(tmp_path: Path, env: dict[str, str]) -> dict:
    """alertmanager.yml as the compose entrypoint renders it with `env`."""
    out = tmp_path / "alertmanager.rendered.yml"
    subprocess.run(
        ["sh", str(ROOT / "prometheus" / "render_alertmanager.sh"), str(ROOT / "prometheus" / "alertmanager.yml"), str(out)],
        check=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ALERT_")}, **env},
    )
    return load_yaml(out)


def alertmanager_env() -> dict[str, str]:
    return {k: v for k, v in environment(services()["alertmanager"]).items() if v is not None}


def test_alertmanager_renders_its_delivery_settings_from_the_environment(tmp_path):
    svc = services()["alertmanager"]
    command = " ".join(svc["command"])
    assert "sh /etc/alertmanager/render_alertmanager.sh /etc/alertmanager/alertmanager.yml" in command
    rendered = command.split()[3]
    assert f"--config.file={rendered}" in command, "Alertmanager must read the rendered copy"
    assert rendered.startswith("/alertmanager/"), "the rendered copy goes to the writable data volume"
    assert ("alertmanager", "./prometheus/render_alertmanager.sh", "/etc/alertmanager/render_alertmanager.sh") in bind_mounts()
    raw = environment(compose_raw()["services"]["alertmanager"])
    for key in ("ALERT_SMTP_SMARTHOST", "ALERT_EMAIL_FROM", "ALERT_EMAIL_TO", "ALERT_WEBHOOK_URL"):
        assert raw[key].startswith("${" + key + ":-"), f"compose alertmanager {key} must default from ${{{key}:-…}}"
    # Overridden from the shell, every delivery setting changes.
    config = rendered_alertmanager_config(tmp_path, {
        "ALERT_SMTP_SMARTHOST": "smtp.example.org:587", "ALERT_EMAIL_FROM": "am@example.org",
        "ALERT_EMAIL_TO": "team@example.org", "ALERT_WEBHOOK_URL": "https://hooks.example.org/am"})
    assert config["global"]["smtp_smarthost"] == "smtp.example.org:587"
    assert config["global"]["smtp_from"] == "am@example.org"
    for receiver in config["receivers"]:
        assert [e["to"] for e in receiver["email_configs"]] == ["team@example.org"]
        assert [w["url"] for w in receiver["webhook_configs"]] == [f"https://hooks.example.org/am/{receiver['name']}"]


def test_alertmanager_delivers_to_services_of_the_stack(tmp_path):
    """With compose's defaults, mail goes to Mailpit and webhooks to alert-webhook."""
    config = rendered_alertmanager_config(tmp_path, alertmanager_env())
    assert config == alertmanager_config(), "compose's defaults must be the ones written in alertmanager.yml"
    assert assert_resolves(config["global"]["smtp_smarthost"], "alertmanager smtp_smarthost") == ("mailpit", 1025)
    names = set()
    for receiver in config["receivers"]:
        names.add(receiver["name"])
        assert receiver["email_configs"], f"receiver {receiver['name']} sends no mail"
        for hook in receiver["webhook_configs"]:
            assert assert_resolves(hook["url"], f"alertmanager receiver {receiver['name']}")[0] == "alert-webhook"
            assert urlsplit(hook["url"]).path == f"/{receiver['name']}"
    assert names == {"default", "page", "ticket"}
    assert ("alert-webhook", "./prometheus/webhook_receiver.py", "/opt/webhook_receiver.py") in bind_mounts()
    assert {"mailpit", "alert-webhook"} <= set(services()["alertmanager"]["depends_on"])


def test_prometheus_loads_the_mounted_rules():
    mounts = {t: s for n, s, t in bind_mounts() if n == "prometheus"}
    assert mounts.get("/etc/prometheus/prometheus.yml") == "./prometheus/prometheus.yml"
    assert mounts.get("/etc/prometheus/rules") == "./prometheus/rules"
    assert "/etc/prometheus/rules/*.yml" in prometheus_config()["rule_files"]
    command = services()["prometheus"]["command"]
    for flag in ("--storage.tsdb.retention.time=30d", "--enable-feature=exemplar-storage", "--web.enable-lifecycle"):
        assert flag in command


def test_collector_scrape_target_is_the_collector_exporter():
    job = next(j for j in prometheus_config()["scrape_configs"] if j["job_name"] == "otel-collector")
    assert job.get("honor_labels") is True
    target = job["static_configs"][0]["targets"][0]
    assert host_port(target)[1] == host_port(collector_config()["exporters"]["prometheus"]["endpoint"])[1]


def test_grafana_datasources_point_at_compose_services():
    files = sorted((ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
    assert files
    for path in files:
        for ds in load_yaml(path).get("datasources", []):
            assert_resolves(ds["url"], f"{path.name} datasource {ds['name']}")
    mounts = {t: s for n, s, t in bind_mounts() if n == "grafana"}
    assert mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning"
    assert mounts.get("/var/lib/grafana/dashboards") == "./grafana/dashboards"
    providers = load_yaml(ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    assert {p["options"]["path"] for p in providers} == {"/var/lib/grafana/dashboards"}


def test_grafana_trace_to_logs_filters_on_the_structured_metadata_trace_id():
    """Loki keeps an OTLP log record's trace id as structured metadata `trace_id`, not in
    the line: the span -> logs link must filter on it as a label, never as a line filter."""
    files = sorted((ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
    sources = {ds["uid"]: ds for path in files for ds in load_yaml(path)["datasources"]}
    link = sources["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert link["datasourceUid"] == "loki" and sources["loki"]["type"] == "loki"
    assert link["customQuery"] is True and link["filterByTraceID"] is False, "filterByTraceID adds a line filter"
    # Grafana expands $VAR in provisioning files: $$ is a literal $.
    query = link["query"].replace("$$", "$")
    assert query == '{${__tags}} | trace_id="${__span.traceId}"'
    assert "|=" not in query and "|~" not in query
    assert [t["value"] for t in link["tags"]] == ["service_name"], "the stream selector is the service"
    # Loki must keep OTLP attributes as structured metadata for the filter to find them.
    assert loki_config()["limits_config"]["allow_structured_metadata"] is True


def test_grafana_credentials_come_from_the_environment():
    raw = environment(compose_raw()["services"]["grafana"])
    assert raw["GF_SECURITY_ADMIN_USER"] == "${GRAFANA_ADMIN_USER:-admin}"
    assert raw["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-admin}"
    assert raw["GF_AUTH_ANONYMOUS_ENABLED"] == "${GRAFANA_ANONYMOUS:-false}"


def _otlp_http_port(service: str) -> int:
    config = {"otel-collector": collector_config, "jaeger": jaeger_config}[service]()
    return host_port(config["receivers"]["otlp"]["protocols"]["http"]["endpoint"])[1]


def test_api_direct_path_endpoints():
    env = environment(services()["api"])
    assert env["OTEL_METRICS_EXPORTER"] == "prometheus"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    traces = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    assert assert_resolves(traces, "api traces") == ("jaeger", _otlp_http_port("jaeger"))
    assert urlsplit(traces).path == "/v1/traces"
    logs = env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
    assert assert_resolves(logs, "api logs") == ("loki", loki_config()["server"]["http_listen_port"])
    assert urlsplit(logs).path == "/otlp/v1/logs"
    # Only used with OTEL_METRICS_EXPORTER=otlp, but must still be a real place.
    assert_resolves(env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"], "api metrics")
    assert assert_resolves(env["DATABASE_URL"], "api DATABASE_URL") == ("postgres", 5432)
    for key, value in env.items():
        assert value is None or value != "", f"api: {key} is empty (the binary rejects empty values)"


def test_api_collector_path_endpoints():
    overrides = collector_overrides()
    raw = environment(compose_raw()["services"]["api"])
    for key in overrides:
        assert raw.get(key, "").startswith("${" + key + ":-"), f"compose api {key} must default from ${{{key}:-…}}"
    env = environment(services(overrides)["api"])
    assert env["OTEL_METRICS_EXPORTER"] == "otlp", "collector path must not also serve /metrics to the direct scrape"
    for signal in ("traces", "metrics", "logs"):
        url = env[f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"]
        assert overrides.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") == url
        assert assert_resolves(url, f"up-collector {signal}") == ("otel-collector", _otlp_http_port("otel-collector"))
        assert urlsplit(url).path == f"/v1/{signal}"


def test_api_does_not_set_a_service_namespace():
    env = environment(services()["api"])
    assert env["OTEL_SERVICE_NAME"] == "items-api"
    assert "service.namespace" not in (env.get("OTEL_RESOURCE_ATTRIBUTES") or ""), "job would become ns/items-api"


def test_gateway_and_locust_targets():
    for url in re.findall(r"https?://[\w.-]+:\d+", gateway_conf()):
        assert assert_resolves(url, "gateway nginx.conf")[0] == "api"
    command = services()["locust"]["command"]
    host = next(a.split("=", 1)[1] for a in command if a.startswith("--host="))
    assert_resolves(host, "locust --host")
    assert "--locustfile=/mnt/load/locustfile.py" in command
    assert ("locust", "./load", "/mnt/load") in bind_mounts()


# ---------------------------------------------------------------- collector


def _components_wiring(config: dict, label: str):
    kinds = ("receivers", "processors", "exporters", "connectors", "extensions")
    defined = {k: set(config.get(k) or {}) for k in kinds}
    service = config["service"]
    used = {k: set() for k in kinds}
    used["extensions"] = set(service.get("extensions", []))
    connectors_as_exporter, connectors_as_receiver = set(), set()
    for pname, pipeline in service["pipelines"].items():
        assert pname.split("/")[0] in ("traces", "metrics", "logs"), f"{label}: pipeline {pname}"
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"{label}: pipeline {pname} is incomplete"
        for r in pipeline["receivers"]:
            if r in defined["connectors"]:
                connectors_as_receiver.add(r)
            else:
                used["receivers"].add(r)
        for p in pipeline.get("processors", []):
            used["processors"].add(p)
        for e in pipeline["exporters"]:
            if e in defined["connectors"]:
                connectors_as_exporter.add(e)
            else:
                used["exporters"].add(e)
    used["connectors"] = connectors_as_exporter | connectors_as_receiver
    for kind in kinds:
        assert used[kind] <= defined[kind], (
            f"{label}: {kind} used but not defined: {sorted(used[kind] - defined[kind])}"
        )
        assert defined[kind] <= used[kind], f"{label}: {kind} defined but unused: {sorted(defined[kind] - used[kind])}"
    assert connectors_as_exporter == connectors_as_receiver, f"{label}: a connector must be both exporter and receiver"


def test_collector_every_component_defined_and_used():
    _components_wiring(collector_config(), "otel/collector.yaml")


def test_collector_pipelines():
    pipelines = collector_config()["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, p in pipelines.items():
        assert p["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert set(p["processors"]) == {"memory_limiter", "resource", "batch"}
        assert "otlp" in p["receivers"]
    assert set(pipelines["traces"]["exporters"]) == {"otlp/jaeger", "spanmetrics"}
    assert set(pipelines["metrics"]["receivers"]) == {"otlp", "spanmetrics"}
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    assert pipelines["logs"]["exporters"] == ["otlphttp/loki"]


def test_collector_endpoints():
    config = collector_config()
    protocols = config["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"])[1] == 4317
    assert host_port(protocols["http"]["endpoint"])[1] == 4318
    assert host_port(config["extensions"]["health_check"]["endpoint"])[1] == 13133
    assert listen_ports("otel-collector") == declared_ports(services()["otel-collector"])
    exporters = config["exporters"]
    assert assert_resolves(exporters["otlp/jaeger"]["endpoint"], "collector otlp/jaeger") == ("jaeger", 4317)
    assert host_port(jaeger_config()["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1] == 4317
    assert exporters["otlp/jaeger"]["tls"]["insecure"] is True
    loki = exporters["otlphttp/loki"]["endpoint"]
    assert assert_resolves(loki, "collector otlphttp/loki")[0] == "loki"
    assert urlsplit(loki).path == "/otlp"
    for path, value in outgoing_endpoints(config):
        assert_resolves(value, f"collector {'.'.join(map(str, path))}")


def test_collector_prometheus_exporter_keeps_job_and_instance():
    prom = collector_config()["exporters"]["prometheus"]
    # job/instance come from service.name/service.instance.id only while the other
    # resource attributes stay on target_info.
    assert not (prom.get("resource_to_telemetry_conversion") or {}).get("enabled", False)
    assert prom.get("enable_open_metrics") is True, "exemplars need OpenMetrics"


def _duration_ms(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|us|m)", str(text))
    assert m, f"not a duration: {text}"
    return float(m[1]) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m[2]]


def test_collector_spanmetrics_feed_jaeger_monitor():
    sm = collector_config()["connectors"]["spanmetrics"]
    assert sm["namespace"] == "traces.span.metrics"
    assert sm["exemplars"]["enabled"] is True
    assert sm["histogram"]["unit"] == "ms"
    buckets = [_duration_ms(b) for b in sm["histogram"]["explicit"]["buckets"]]
    assert buckets == sorted(set(buckets)) and len(buckets) >= 8
    backend = jaeger_config()["extensions"]["jaeger_storage"]["metric_backends"]
    prom = next(iter(backend.values()))["prometheus"]
    assert assert_resolves(prom["endpoint"], "jaeger metric backend")[0] == "prometheus"
    assert prom["normalize_calls"] and prom["normalize_duration"]


def test_jaeger_config():
    config = jaeger_config()
    _components_wiring(config, "otel/jaeger.yaml")
    ext = config["extensions"]
    storage = ext["jaeger_storage"]
    assert ext["jaeger_query"]["storage"]["traces"] in storage["backends"]
    assert ext["jaeger_query"]["storage"]["metrics"] in storage["metric_backends"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] in storage["backends"]
    assert {4317, 4318, 16686, 13133} <= listen_ports("jaeger")
    assert listen_ports("jaeger") == declared_ports(services()["jaeger"])
    for path, value in outgoing_endpoints(config):
        assert_resolves(value, f"jaeger {'.'.join(map(str, path))}")


def test_loki_accepts_otlp_with_structured_metadata():
    config = loki_config()
    assert config["limits_config"]["allow_structured_metadata"] is True
    # Structured metadata (trace_id, span_id of OTLP logs) needs tsdb and schema v13.
    latest = config["schema_config"]["configs"][-1]
    assert latest["store"] == "tsdb" and latest["schema"] == "v13"
    assert config["auth_enabled"] is False
    assert ("loki", "./otel/loki.yaml", "/etc/loki/config.yaml") in bind_mounts()


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_builds_in_two_layers_and_runs_non_root():
    steps = dockerfile()
    froms = [i for i, (instr, _) in enumerate(steps) if instr == "FROM"]
    builder = steps[froms[0] : froms[1]]
    runtime = steps[froms[-1] :]
    runs = [rest for instr, rest in builder if instr == "RUN"]
    copies = [rest for instr, rest in builder if instr == "COPY"]
    assert copies[0] == "Cargo.toml Cargo.lock ./", "dependencies first, from the manifest and lock only"
    assert copies[1].startswith("src ")
    assert all("cargo build --release --locked" in r for r in runs[:2]), runs
    assert steps.index(("COPY", copies[1])) > steps.index(("RUN", runs[0])), "deps layer must precede COPY src"
    user = next(rest for instr, rest in reversed(runtime) if instr == "USER")
    assert user.split(":")[0] not in ("0", "root"), "runtime must not run as root"
    assert ("EXPOSE", "8000") in runtime
    health = next(rest for instr, rest in runtime if instr == "HEALTHCHECK")
    # Distroless has no shell or wget: the binary probes its own /health/ready.
    assert health.endswith('CMD ["/usr/local/bin/items-api", "healthcheck"]'), health
    assert ("COPY", "--from=builder /out/items-api /usr/local/bin/items-api") in runtime
    assert not any("busybox" in rest or "wget" in rest for _, rest in steps), "no HTTP client in the image"
    entry = next(rest for instr, rest in runtime if instr == "ENTRYPOINT")
    assert entry == '["/usr/local/bin/items-api"]'


def test_api_healthcheck_is_the_binarys_own_probe():
    test = services()["api"]["healthcheck"]["test"]
    assert test == ["CMD", "/usr/local/bin/items-api", "healthcheck"]
    env = services()["api"]["environment"]
    # It probes LISTEN_ADDR (through 127.0.0.1 when it is 0.0.0.0): the port the api exposes.
    assert env["LISTEN_ADDR"] == "0.0.0.0:8000" and 8000 in listen_ports("api")


def _dockerignored(path: str) -> bool:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = False
    for pattern in lines:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(p, pat) or (pat.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], pat[3:]))
            for p in prefixes
        )
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_but_sufficient():
    for path in ("target/release/items-api", ".git/HEAD", "reports/x.html", "grafana/dashboards/slo.json"):
        assert _dockerignored(path), f"{path} should not be in the build context"
    for instr, rest in dockerfile():
        if instr == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
                probe = source + "/main.rs" if (ROOT / source).is_dir() else source
                assert not _dockerignored(probe), f".dockerignore hides {source}, which the Dockerfile copies"


# ------------------------------------------------------------------ Kubernetes


def _k8s_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path, doc))
    return docs


def _k8s(kind: str) -> dict:
    found = [doc for _, doc in _k8s_docs() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


CRDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1"}


@pytest.mark.parametrize("path,doc", _k8s_docs(), ids=[f"{p.name}:{d.get('kind')}" for p, d in _k8s_docs()])
def test_kubernetes_manifests_validate(path, doc):
    if doc["kind"] in CRDS:
        assert doc["apiVersion"] == CRDS[doc["kind"]]
        assert doc["metadata"]["name"] == "items-api"
        return
    import kubernetes_validate

    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    listed = kustomization["resources"]
    assert sorted(listed) == sorted({p.name for p, _ in _k8s_docs()})
    assert len(listed) == len(set(listed))


def test_deployment_probes_env_and_resources():
    deployment = _k8s("Deployment")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert image_tag(container["image"]) not in (None, "latest")
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert {"requests", "limits"} <= set(container["resources"])
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "items-api-db", "key": "database-url"}
    assert "value" not in env["DATABASE_URL"]
    assert env["OTEL_SERVICE_NAME"]["value"] == "items-api"
    assert env["OTEL_METRICS_EXPORTER"]["value"] == "prometheus", "the ServiceMonitor scrapes /metrics"
    assert "service.namespace" not in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_RESOURCE_ATTRIBUTES"):
        assert name in env
    # $(VAR) in a value only expands variables defined before it.
    order = [e["name"] for e in container["env"]]
    for e in container["env"]:
        for ref in re.findall(r"\$\((\w+)\)", e.get("value", "")):
            assert order.index(ref) < order.index(e["name"]), f"{e['name']} uses $({ref}) before it is defined"
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    # Migrations run in an init container of the same image, with the same database.
    (migrate,) = pod["spec"]["initContainers"]
    assert migrate["image"] == container["image"]
    assert migrate["args"] == ["migrate"]
    init_env = {e["name"]: e for e in migrate["env"]}
    assert init_env["DATABASE_URL"] == env["DATABASE_URL"]
    assert {"requests", "limits"} <= set(migrate["resources"])
    assert migrate["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_and_servicemonitor_select_the_pods():
    deployment, service, monitor = _k8s("Deployment"), _k8s("Service"), _k8s("ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["name"] == "items-api", "the Service name is the Prometheus job"
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == 8000 and port["targetPort"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    pdb = _k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def _rules_groups() -> list[dict]:
    groups = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        groups.extend(load_yaml(path)["groups"])
    return groups


def test_prometheusrule_is_generated_and_current():
    result = subprocess.run(
        [sys.executable, str(K8S_DIR / "gen_prometheusrule.py"), "--check"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheusrule_contains_every_rule_verbatim():
    rule = _k8s("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _rules_groups()
    source_alerts = {r["alert"] for g in _rules_groups() for r in g["rules"] if "alert" in r}
    generated_alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert source_alerts and source_alerts == generated_alerts


def test_prometheusrule_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed")
    rules = tmp_path / "prometheusrule-spec.yml"
    rules.write_text(yaml.safe_dump({"groups": _k8s("PrometheusRule")["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------ just


@pytest.fixture(scope="module")
def justfile_with_stack(tmp_path_factory) -> Path:
    """The top-level Justfile importing stack.just (as committed, or with the import added)."""
    if not shutil.which("just"):
        pytest.skip("just not installed")
    top = (ROOT / "Justfile").read_text(encoding="utf-8")
    if re.search(r"^import\s+['\"]stack\.just['\"]", top, re.MULTILINE):
        return ROOT / "Justfile"
    path = tmp_path_factory.mktemp("just") / "Justfile"
    path.write_text(top + f"\nimport '{STACK_JUST}'\n", encoding="utf-8")
    return path


def _just(justfile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["just", "--justfile", str(justfile), "--working-directory", str(ROOT), *args],
        check=False,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "BIND_ADDR"},
    )


def test_just_lists_the_stack_recipes_with_descriptions(justfile_with_stack):
    result = _just(justfile_with_stack, "--list")
    assert result.returncode == 0, result.stderr
    listed = {}
    # A recipe with a long signature gets its description on the line above it.
    pending_doc = ""
    for line in result.stdout.splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            pending_doc = text[1:].strip()
            continue
        name, _, doc = text.partition("#")
        if name.split():
            listed[name.split()[0]] = doc.strip() or pending_doc
        pending_doc = ""
    for recipe in STACK_RECIPES:
        assert recipe in listed, f"`just --list` lacks {recipe}"
        assert listed[recipe], f"{recipe} has no `# description` line"


def test_stack_just_defines_no_settings():
    for line in STACK_JUST.read_text().splitlines():
        assert not line.startswith("set "), "settings belong in the top-level Justfile"


def test_just_up_collector_exports_the_collector_endpoints(justfile_with_stack):
    result = _just(justfile_with_stack, "--dry-run", "up-collector")
    assert result.returncode == 0, result.stderr
    for key, value in collector_overrides().items():
        assert f"{key}={value}" in result.stderr
    assert "--profile collector up" in result.stderr


def test_just_open_prints_every_url(justfile_with_stack):
    result = _just(justfile_with_stack, "open")
    assert result.returncode == 0, result.stderr
    for url in (
        "http://localhost:8000",
        "http://localhost:8000/docs",
        "http://localhost:8000/metrics",
        "http://localhost:3000",
        "http://localhost:9090",
        "http://localhost:9093",
        "http://localhost:16686",
        "http://localhost:3100",
        "http://localhost:8025",
        "http://localhost:5001",
    ):
        assert url in result.stdout, f"`just open` does not print {url}"


# ------------------------------------------------------------------------ docs


def test_readme_names_the_pinned_versions():
    """deploy/README.md's service table stays in step with the tags in compose.yaml."""
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    for name, svc in services().items():
        if "build" in svc and "dockerfile_inline" not in svc["build"]:
            continue
        refs = dockerfile_froms(svc["build"]["dockerfile_inline"])[-1:] if "build" in svc else [svc["image"]]
        for ref in refs:
            assert f"`{ref}`" in readme, f"deploy/README.md does not name `{ref}` ({name})"
    builder = next(rest.split()[0] for instr, rest in dockerfile() if instr == "FROM")
    assert builder in readme, f"deploy/README.md does not name the builder image {builder}"
