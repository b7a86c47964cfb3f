"""A real OTLP/HTTP receiver for tests: decodes what arrives with opentelemetry-proto.

Also a black hole: a TCP listener that accepts connections and never answers.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_KINDS: dict[str, tuple[type, type]] = {
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}


def any_value(v: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it encodes."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class Receiver:
    """OTLP/HTTP on 127.0.0.1: every request decoded and kept, by signal path."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        self.status = status
        self.requests: dict[str, list[Any]] = {p: [] for p in _KINDS}
        self.bodies: list[bytes] = []  # every request body as sent (after decompression)
        self.hits = 0
        self._lock = threading.Lock()
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(n)
                if self.headers.get("Content-Encoding") == "gzip":
                    data = gzip.decompress(data)
                with rx._lock:
                    rx.hits += 1
                kinds = _KINDS.get(self.path)
                if kinds is None or rx.status != 200:
                    self.send_response(404 if kinds is None else rx.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                req = kinds[0]()
                req.ParseFromString(data)
                with rx._lock:
                    rx.requests[self.path].append(req)
                    rx.bodies.append(data)
                body = kinds[1]().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what arrived --------------------------------------------------------------------
    def logs(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, LogRecord) for every log received."""
        with self._lock:
            reqs = list(self.requests["/v1/logs"])
        return [(attrs(rl.resource.attributes), lr) for req in reqs for rl in req.resource_logs
                for sl in rl.scope_logs for lr in sl.log_records]

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        with self._lock:
            reqs = list(self.requests["/v1/traces"])
        return [(attrs(rs.resource.attributes), sp) for req in reqs for rs in req.resource_spans
                for ss in rs.scope_spans for sp in ss.spans]

    def metrics(self) -> list[dict[str, Any]]:
        with self._lock:
            reqs = list(self.requests["/v1/metrics"])
        return [MessageToDict(m) for req in reqs for rm in req.resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics]

    def wait_for(self, done: Callable[[], bool], timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.02)
        return done()


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never reads or answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()
