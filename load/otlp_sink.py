"""A minimal OTLP/HTTP receiver for benchmarks: it accepts and discards.

POST /v1/traces, /v1/logs, /v1/metrics → 200, empty body, content-type
application/x-protobuf (an empty Export*ServiceResponse is zero bytes, so this is a
valid answer). GET /stats → JSON counts per path of requests, bytes and items (spans,
log records, metrics), so a benchmark can prove the telemetry actually arrived. Items
are counted by walking only the three protobuf envelope levels, which is cheap.

    python3 load/otlp_sink.py --port 4318
"""

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_stats = {}


ITEM_NAME = {"/v1/traces": "spans", "/v1/logs": "log_records", "/v1/metrics": "metrics"}


def _varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf):
    """(field number, bytes or None) of one protobuf message, length-delimited ones as slices."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
            yield field, None
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _varint(buf, i)
            yield field, buf[i : i + length]
            i += length
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")


def count_items(body):
    """Export{Trace,Logs,Metrics}ServiceRequest all nest the same way:
    request.1 (resource_*) → .2 (scope_*) → .2 (span / log_record / metric)."""
    count = 0
    for f1, resource in _fields(body):
        if f1 != 1 or resource is None:
            continue
        for f2, scope in _fields(resource):
            if f2 != 2 or scope is None:
                continue
            count += sum(1 for f3, _ in _fields(scope) if f3 == 2)
    return count


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real collector does

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path not in ITEM_NAME:
            self._answer(404, b"", "text/plain")
            return
        try:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            items = count_items(memoryview(body))
            bad = 0
        except (ValueError, IndexError, OSError):
            items, bad = 0, 1
        with _lock:
            entry = _stats.setdefault(
                self.path, {"requests": 0, "bytes": 0, ITEM_NAME[self.path]: 0, "unparsed": 0}
            )
            entry["requests"] += 1
            entry["bytes"] += length
            entry[ITEM_NAME[self.path]] += items
            entry["unparsed"] += bad
        self._answer(200, b"", "application/x-protobuf")

    def do_GET(self):
        if self.path == "/stats":
            with _lock:
                body = json.dumps(_stats).encode()
            self._answer(200, body, "application/json")
        else:
            self._answer(404, b"", "text/plain")

    def _answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"otlp sink listening on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
