#!/usr/bin/env python3
"""A small Alertmanager webhook receiver: keeps what it is sent and shows it.

    python3 prometheus/webhook_receiver.py [--host 0.0.0.0] [--port 5001] [--keep 200]

POST /<anything>   an Alertmanager webhook notification (JSON, version 4); the path
                   names the route (alertmanager.yml sends /page, /ticket, /default)
GET  /             the notifications received, newest first, as JSON:
                   [{"path": "/page", "received_at": ..., "payload": {...}}, ...]
GET  /health       200 "ok" (the compose health check)

Each notification is also printed as one line on stdout (`docker compose logs
alert-webhook`). Standard library only, so the compose service runs it on a plain
Python image and scripts/check_stack.py runs the very same file as its webhook sink.
"""

import argparse
import collections
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # Alertmanager batches; a megabyte is far above any real group


class Store:
    def __init__(self, keep):
        self.lock = threading.Lock()
        self.items = collections.deque(maxlen=keep)

    def add(self, path, payload):
        entry = {"path": path, "received_at": time.time(), "payload": payload}
        with self.lock:
            self.items.appendleft(entry)
        return entry

    def snapshot(self):
        with self.lock:
            return list(self.items)


def summary_line(path, payload):
    alerts = payload.get("alerts") or []
    names = sorted({a.get("labels", {}).get("alertname", "?") for a in alerts})
    summaries = sorted({a.get("annotations", {}).get("summary", "") for a in alerts} - {""})
    return (f"webhook {path} receiver={payload.get('receiver', '?')} status={payload.get('status', '?')} "
            f"alerts={','.join(names)} summary={' | '.join(summaries)}")


def make_handler(store):
    class Handler(BaseHTTPRequestHandler):
        server_version = "items-api-alert-webhook"

        def _send(self, status, body, content_type="application/json"):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._send(200, "ok\n", "text/plain")
            elif self.path == "/":
                self._send(200, json.dumps(store.snapshot(), indent=2) + "\n")
            else:
                self._send(404, '{"error": "not found"}\n')

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._send(400, '{"error": "a JSON body of at most 1 MiB is required"}\n')
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self._send(400, '{"error": "the body is not JSON"}\n')
                return
            if not isinstance(payload, dict):
                self._send(400, '{"error": "the body is not a JSON object"}\n')
                return
            store.add(self.path, payload)
            print(summary_line(self.path, payload), flush=True)
            self._send(200, '{"status": "received"}\n')

        def log_message(self, format, *args):  # one line per notification is enough
            pass

    return Handler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--keep", type=int, default=200, help="notifications kept in memory (default %(default)s)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(Store(args.keep)))
    print(f"alert webhook receiver listening on {args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
