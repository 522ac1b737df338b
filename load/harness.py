"""Shared pieces of the stress and benchmark scripts: find the release binary, start the
service pinned to a core on a throw-away SQLite file, talk to it, stop it."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

LOAD_DIR = Path(__file__).resolve().parent
REPO = LOAD_DIR.parent
REPORTS = REPO / "reports"

# Core layout on the 2-core box: the service alone on core 0, everything that makes or
# receives load (Locust, wrk, Prometheus, the OTLP sink, these scripts) on core 1.
SERVICE_CORE = 0
LOADGEN_CORE = 1


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cores_available():
    return len(os.sched_getaffinity(0))


def pin(core):
    """The command prefix that pins a child to one core (nothing on a 1-core box)."""
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > core:
        return ["taskset", "-c", str(core)]
    return []


def pin_self(core=LOADGEN_CORE):
    try:
        os.sched_setaffinity(0, {core})
    except (OSError, ValueError):
        pass


def find_binary(explicit=None):
    """--binary, $ITEMS_API_BIN, $CARGO_TARGET_DIR/release, target/release, then the
    shared target dir used on the dev box."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("ITEMS_API_BIN"):
        candidates.append(Path(os.environ["ITEMS_API_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "items-api")
    candidates.append(REPO / "target" / "release" / "items-api")
    candidates.append(Path("/var/tmp/items-api-target/release/items-api"))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    sys.exit(
        "items-api release binary not found (tried: "
        + ", ".join(str(c) for c in candidates)
        + "); build it with `cargo build --release` or pass --binary / ITEMS_API_BIN"
    )


def config_list(text, known):
    """A --configs value ("off,full") as a list, `off` first (every ratio is against it);
    exits on a name not in `known`."""
    configs = [c.strip() for c in text.split(",") if c.strip()]
    if "off" not in configs:
        configs.insert(0, "off")
    for c in configs:
        if c not in known:
            sys.exit(f"unknown config {c!r} (known: {', '.join(known)})")
    return configs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url_host, port, path, timeout=30.0, proc=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {path} answered")
        try:
            conn = http.client.HTTPConnection(url_host, port, timeout=2)
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return
            last = f"status {resp.status}"
        except OSError as err:
            last = err
        time.sleep(0.1)
    raise RuntimeError(f"http://{url_host}:{port}{path} not ready after {timeout}s: {last}")


class Service:
    """items-api on 127.0.0.1:<free port>, SQLite in `workdir`, pinned to SERVICE_CORE.
    `wrapper` is a command the binary runs under (valgrind for icount.py); it must exec the
    binary in the same process, so `proc.pid` is the service's pid either way."""

    def __init__(self, binary, workdir, env=None, stdout_path=None, core=SERVICE_CORE, wrapper=()):
        self.binary = Path(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        # Nothing inherited may switch on exporters by accident.
        for key in list(self.env):
            if key.startswith("OTEL_") or key in (
                "FAULT_ERROR_RATIO",
                "FAULT_DELAY",
                "METRICS_LISTEN_ADDR",
                "METRICS_EXCLUDE",
            ):
                del self.env[key]
        self.env.update(
            {
                "LISTEN_ADDR": f"127.0.0.1:{self.port}",
                "DATABASE_URL": f"sqlite://{self.workdir / 'items.db'}?mode=rwc",
                "LOG_FORMAT": "json",
                "RUST_LOG": "info",
            }
        )
        self.env.update(env or {})
        self.stdout_path = stdout_path
        self.core = core
        self.wrapper = list(wrapper)
        self.proc = None
        self._out = None

    def start(self, timeout=30.0):
        self._out = open(self.stdout_path, "wb") if self.stdout_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            pin(self.core) + self.wrapper + [str(self.binary)],
            cwd=self.workdir,
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT if self.stdout_path else subprocess.DEVNULL,
        )
        wait_http("127.0.0.1", self.port, "/health/ready", timeout=timeout, proc=self.proc)
        return self

    def cpu_seconds(self):
        """utime + stime of the service process (all threads), from /proc."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout=15.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out not in (None, subprocess.DEVNULL):
            self._out.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class OtlpSink:
    """load/otlp_sink.py on core LOADGEN_CORE: OTLP/HTTP on a free port, and OTLP/gRPC on
    another when `grpc` (needs grpcio). `stats()` is what it has received so far."""

    SCRIPT = LOAD_DIR / "otlp_sink.py"

    def __init__(self, grpc=False):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None
        self.proc = None

    def url(self, protocol="http/protobuf"):
        """The OTEL_EXPORTER_OTLP_ENDPOINT that reaches this sink over `protocol`."""
        if protocol == "grpc":
            if self.grpc_port is None:
                raise ValueError("this sink was started without OTLP/gRPC")
            return f"http://127.0.0.1:{self.grpc_port}"
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        cmd = [sys.executable, str(self.SCRIPT), "--port", str(self.port)]
        if self.grpc_port is not None:
            cmd += ["--grpc-port", str(self.grpc_port)]
        self.proc = subprocess.Popen(
            pin(LOADGEN_CORE) + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_http("127.0.0.1", self.port, "/stats", proc=self.proc)
        except RuntimeError as err:
            self.stop()
            raise RuntimeError(f"OTLP sink did not start: {err}: {self.stderr_tail()}") from err
        return self

    def stderr_tail(self):
        if self.proc and self.proc.poll() is not None and self.proc.stderr:
            return self.proc.stderr.read().decode(errors="replace")[-2000:]
        return ""

    def stats(self):
        client = Client(self.port)
        try:
            status, _, data = client.request("GET", "/stats")
            return json.loads(data) if status == 200 else {}
        finally:
            client.close()

    @staticmethod
    def delta(before, after):
        out = {}
        for path, entry in after.items():
            prev = before.get(path, {})
            out[path] = {k: v - prev.get(k, 0) for k, v in entry.items()}
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Client:
    """A keep-alive HTTP/1.1 client for setup calls and timing."""

    def __init__(self, port, host="127.0.0.1"):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=30)

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, dict(resp.getheaders()), data
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise

    def create_item(self, name="bench", price=9.99, quantity=1, attempts=1):
        """POST /items; retries a 5xx up to `attempts` times (for services with faults on)."""
        for _ in range(attempts):
            status, headers, data = self.request(
                "POST", "/items", {"name": name, "price": price, "quantity": quantity}
            )
            if status == 201:
                return json.loads(data)["id"]
            if status < 500:
                break
        raise RuntimeError(f"POST /items → {status}: {data[:200]!r}")

    def close(self):
        self.conn.close()


def median(values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return float("nan")
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def quantile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    idx = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[idx]


class CpuAudit:
    """How much CPU the rest of the box used while we ran: system-wide busy time from
    /proc/stat minus what this process and its waited-for children used (getrusage).
    Call stop() after every child has been waited for."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.busy0 = self._busy()
        self.ours0 = self._ours()

    @staticmethod
    def _busy():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _ours():
        import resource

        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            r = resource.getrusage(who)
            total += r.ru_utime + r.ru_stime
        return total

    def stop(self):
        elapsed = time.monotonic() - self.t0
        busy = self._busy() - self.busy0
        ours = self._ours() - self.ours0
        others = max(0.0, busy - ours)
        cores = os.cpu_count() or 1
        return {
            "elapsed_s": round(elapsed, 1),
            "box_busy_cpu_s": round(busy, 1),
            "ours_cpu_s": round(ours, 1),
            "others_cpu_s": round(others, 1),
            "others_pct_of_box": round(100.0 * others / (elapsed * cores), 1) if elapsed else 0.0,
        }
