"""A minimal OTLP receiver for benchmarks: it accepts and discards, over OTLP/HTTP and,
with --grpc-port, over OTLP/gRPC too.

POST /v1/traces, /v1/logs, /v1/metrics → 200, empty body, content-type
application/x-protobuf (an empty Export*ServiceResponse is zero bytes, so this is a
valid answer). The gRPC Export methods of the trace, logs and metrics services answer the
same empty message (grpcio, with the raw bytes passed through: no generated code). GET
/stats (on the HTTP port) → JSON counts per signal of requests, bytes and items (spans,
log records, metrics) received over either protocol, so a benchmark can prove the
telemetry actually arrived. Items are counted by walking only the three protobuf
envelope levels, which is cheap.

    python3 load/otlp_sink.py --port 4318
    python3 load/otlp_sink.py --port 4318 --grpc-port 4317   # needs grpcio
"""

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_stats = {}


ITEM_NAME = {"/v1/traces": "spans", "/v1/logs": "log_records", "/v1/metrics": "metrics"}

# The gRPC service of each signal; its counts land under the same key as OTLP/HTTP's path.
GRPC_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": "/v1/traces",
    "opentelemetry.proto.collector.logs.v1.LogsService": "/v1/logs",
    "opentelemetry.proto.collector.metrics.v1.MetricsService": "/v1/metrics",
}


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


def record(path, length, body, protocol):
    """Counts one export request (a decompressed protobuf body) under its signal."""
    try:
        items = count_items(memoryview(body))
        bad = 0
    except (ValueError, IndexError):
        items, bad = 0, 1
    with _lock:
        entry = _stats.setdefault(
            path, {"requests": 0, "bytes": 0, ITEM_NAME[path]: 0, "unparsed": 0}
        )
        entry["requests"] += 1
        entry["bytes"] += length
        entry[ITEM_NAME[path]] += items
        entry["unparsed"] += bad
        entry[protocol] = entry.get(protocol, 0) + 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real collector does

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path not in ITEM_NAME:
            self._answer(404, b"", "text/plain")
            return
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except OSError:
                body = b"\xff"  # counted as unparsed
        record(self.path, length, body, "http")
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


def grpc_server(host, port):
    """OTLP/gRPC on host:port: the three Export methods, raw bytes in (grpcio decompresses
    gzip itself), the empty response out."""
    from concurrent import futures

    import grpc  # only this mode needs grpcio

    def export(path):
        def handle(request, _context):
            record(path, len(request), request, "grpc")
            return b""

        return grpc.unary_unary_rpc_method_handler(handle)  # no (de)serializer: bytes

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for service, path in GRPC_SERVICES.items():
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"Export": export(path)}),)
        )
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"cannot listen on {host}:{port} for OTLP/gRPC")
    server.start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318, help="OTLP/HTTP and GET /stats")
    parser.add_argument("--grpc-port", type=int, help="also serve OTLP/gRPC here (needs grpcio)")
    args = parser.parse_args()
    grpc_srv = grpc_server(args.host, args.grpc_port) if args.grpc_port else None
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"otlp sink listening on http://{args.host}:{args.port}"
          + (f" and grpc://{args.host}:{args.grpc_port}" if grpc_srv else ""), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if grpc_srv:
            grpc_srv.stop(0)


if __name__ == "__main__":
    main()
