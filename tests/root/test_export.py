"""Export off the host through the real daemon: an OTLP/HTTP receiver in the test (decoding
with opentelemetry-proto) and a JSON-lines file get what an exporting session saw, redacted;
a session the policy does not allow to export sends nothing; a dead receiver costs the
session and the store nothing but a counter."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.root.conftest import TEST_GROUP, Daemon, TraceStream, wait_for
from tests.unit.export.receiver import Receiver, any_value, attrs

# What the client sends; none of it may leave the host.
SECRETS = ("sk_live_51HxDemoKeyDoNotUse00000000", "hunter2-correct-horse",
           "4111 1111 1111 1111", "7f3a9c2e41b84d6fa0c1",
           "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.ZGVtby1zaWduYXR1cmUtbm90LXJlYWw")

SERVER = r"""
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(0.3)
        code = {"/missing": 404, "/boom": 500}.get(path, 200)
        self._reply(code)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0))); self._reply(200)
    def _reply(self, code):
        body = b'{"status":"ok","marker":"%s"}' % sys.argv[1].encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "sid=7f3a9c2e41b84d6fa0c1; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""
JWT = SECRETS[4]
# (method, path, status): the requests the client sends, in order
REQUESTS = [("GET", f"/orders?id={i}&api_key={SECRETS[0]}", 200) for i in range(4)] + [
    ("POST", "/login", 200), ("POST", "/login", 200), ("GET", "/missing", 404),
    ("GET", "/boom", 500), ("GET", "/slow", 200)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    marker: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, requests: list[tuple[str, str, int]] = REQUESTS) -> None:
        """One connection per request, each carrying the secrets; checks every status."""
        import http.client

        for method, path, status in requests:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            body = None
            headers = {"Authorization": f"Bearer {JWT}", "Cookie": f"sid={SECRETS[3]}"}
            if method == "POST":
                body = json.dumps({"user": "jane", "password": SECRETS[1], "card": SECRETS[2]})
                headers["Content-Type"] = "application/json"
            c.request(method, path, body, headers)
            r = c.getresponse()
            r.read()
            c.close()
            assert r.status == status


@pytest.fixture
def servers() -> Iterator[Any]:
    made: list[Server] = []

    def make(marker: str) -> Server:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, marker], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        made.append(Server(proc, int(proc.stdout.readline()), marker))
        return made[-1]

    yield make
    for s in made:
        s.proc.terminate()
        s.proc.wait(10)


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


POLICY = """
[roles.exporter]
ops = ["trace", "status"]
max_level = "payload"
targets = ["*"]
export = "payload"

[roles.local]
ops = ["trace"]
max_level = "payload"
targets = ["*"]

[users]
root = ["exporter"]
psnoexport = ["local"]
"""


def exporting_daemon(daemon_factory: Any, endpoint: str, tmp: Path, metrics_port: int,
                     spans: bool = False) -> Daemon:
    d: Daemon = daemon_factory(config_text=f"""
[metrics]
listen = "127.0.0.1:{metrics_port}"
[export.otlp]
enabled = true
endpoint = "{endpoint}"
flush_interval_s = 0.1
timeout_s = 2
metrics = {"true" if spans else "false"}
metrics_interval_s = 1
[export.jsonlog]
path = "{tmp}/events.jsonl"
""", policy_text=POLICY)
    return d


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric(port: int, name: str, **labels: str) -> float:
    return scrape(port).get((name, tuple(sorted(labels.items()))), 0.0)


def audit(d: Daemon) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (d.state / "audit.log").read_text().splitlines()]


def exported_bytes(rx: Receiver, jsonl: Path) -> bytes:
    return b"".join(rx.bodies) + (jsonl.read_bytes() if jsonl.exists() else b"")


def test_an_exporting_session_exports_what_it_saw_redacted_and_nothing_else(
        daemon_factory: Any, rx: Receiver, servers: Any, make_user: Any,
        tmp_path: Path) -> None:
    port = free_port()
    d = exporting_daemon(daemon_factory, rx.endpoint, tmp_path, port)
    user = make_user("noexport", groups=(TEST_GROUP,))
    exported, private = servers("EXPORTED-0001"), servers("PRIVATE-0002")
    # The policy does not let psnoexport export: asking is refused, and audited.
    r = d.cli("trace", "-p", str(private.pid), "--export", "-d", "2s", user=user.name)
    assert r.returncode != 0 and "export is not allowed for psnoexport" in r.stderr, r.stderr
    denied = audit(d)[-1]
    assert denied["decision"] == "deny" and denied["user"] == user.name
    # It may still trace without export: its events stay on the host.
    local = TraceStream(d, "-p", str(private.pid), "--level", "payload", "-d", "6s",
                        user=user.name)
    local.wait_started()
    t = TraceStream(d, "-p", str(exported.pid), "--level", "payload", "--export", "-d", "6s",
                    "--reason", "INC-7")
    head = t.wait_started()
    exported.send()
    private.send()
    _rc, events, err = t.finish()
    _rc2, private_events, _ = local.finish()
    assert f"exported at payload to otlp {rx.endpoint}" in err
    assert any("GET /orders?id=0&api_key=" in e.get("payload", "") for e in events), head
    assert any(private.marker in e.get("payload", "") for e in private_events)

    jsonl = tmp_path / "events.jsonl"
    session_logs = sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events
                          if e.get("kind") != "l7")

    def arrived() -> bool:
        return len(rx.logs()) >= len(session_logs)

    assert rx.wait_for(arrived, 30), (len(rx.logs()), len(session_logs), d.log_text()[-2000:])
    time.sleep(0.5)  # nothing more may come
    # Logs: exactly the session's events (the JSON body of each is the event), with the
    # resource of the traced process and the exporting session.
    logs = rx.logs()
    assert sorted(orjson.dumps(orjson.loads(any_value(lr.body)), option=orjson.OPT_SORT_KEYS)
                  for _res, lr in logs) == session_logs
    # the session's end is audited once its probes are released, after the client's end
    ends = wait_for(lambda: [rec for rec in audit(d) if rec["kind"] == "session_end"
                             and rec.get("export")], 20, what="the session_end record")
    sid = ends[0]["session"]
    for res, lr in logs:
        assert res["process.pid"] == exported.pid and res["periscope.session"] == sid
        assert attrs(lr.attributes)["periscope.kind"] == orjson.loads(any_value(lr.body))["kind"]
    # The JSON-lines file got the same events, and the session's L7 records (the request
    # each client sent, its path redacted) beside them.
    session_all = sorted(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) for e in events)
    assert any(e.get("kind") == "l7" and e.get("path", "").startswith("/orders?id=0&api_key=")
               for e in events), [e for e in events if e.get("kind") == "l7"]
    assert sorted(orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)
                  for line in jsonl.read_bytes().splitlines()) == session_all
    # No secret in any exported byte, and nothing of the session that may not export.
    everything = exported_bytes(rx, jsonl)
    assert b"GET /orders?id=0&api_key=" in everything  # payload went out, redacted
    for secret in SECRETS:
        assert secret.encode() not in everything, secret
        assert secret not in d.log_text()
    assert private.marker.encode() not in everything
    assert str(private.pid).encode() not in b"".join(
        orjson.dumps(attrs(lr.attributes)) + orjson.dumps(res) for res, lr in logs)
    # The audit says which session was exported, at which level and where; the other not.
    recs = audit(d)
    exp = [rec for rec in recs if rec.get("export")]
    assert [(rec["op"], rec["export"]["level"]) for rec in exp] == [("trace", "payload"),
                                                                   ("trace.end", "payload")]
    assert exp[0]["export"]["to"] == [f"otlp {rx.endpoint}", f"jsonlog {jsonl}"]
    assert not any(rec.get("export") for rec in recs if rec["user"] == user.name)
    # Metrics count what was offered and sent.
    assert metric(port, "periscope_export_offered_total", kind="event") == len(session_logs)
    assert metric(port, "periscope_export_sent_total", exporter="otlp",
                  signal="logs") == len(session_logs)
    assert metric(port, "periscope_export_offered_total", kind="l7") == \
        len(session_all) - len(session_logs) > 0
    assert metric(port, "periscope_export_sent_total", exporter="jsonlog",
                  signal="logs") == len(session_all)  # the events and the L7 records
    assert metric(port, "periscope_export_failed_total", exporter="otlp") == 0
    assert metric(port, "periscope_sessions_started_total", level="payload",
                  export="payload") == 1


def test_a_dead_receiver_costs_the_session_nothing_but_a_counter(
        daemon_factory: Any, rx: Receiver, servers: Any, tmp_path: Path) -> None:
    port = free_port()
    d = exporting_daemon(daemon_factory, rx.endpoint, tmp_path, port)
    srv = servers("ALIVE-0003")
    t = TraceStream(d, "-p", str(srv.pid), "--level", "payload", "--export", "-d", "12s")
    t.wait_started()
    srv.send(REQUESTS[:3])
    assert rx.wait_for(lambda: len(rx.logs()) > 0, 20), d.log_text()[-2000:]
    written = metric(port, "periscope_store_events_written_total")
    rx.stop()  # the receiver is gone: connections are refused from now on
    srv.send(REQUESTS[:3])
    wait_for(lambda: metric(port, "periscope_export_failed_total", exporter="otlp") > 0, 30,
             what="the export failure counter to move")
    srv.send(REQUESTS[:3])  # capture, the store and the session carry on meanwhile
    wait_for(lambda: metric(port, "periscope_store_events_written_total") > written + 20, 20,
             what="the store to keep writing")
    assert d.request("hello")["ok"]
    _rc, events, err = t.finish()
    gets = [e for e in events if "GET /orders?id=" in e.get("payload", "")]
    assert len(gets) >= 3 * 3, err  # every request the session should have seen
    assert "deadline" in err  # it ended at its deadline, not on an error
    sent = metric(port, "periscope_export_sent_total", exporter="otlp", signal="logs")
    offered = metric(port, "periscope_export_offered_total", kind="event")
    assert sent > 0 and offered > sent
    # The L7 records of the session (one per request: spans, on by default) go the same
    # way as the events: into the OTLP exporter's queue, then sent or dropped.
    offered += metric(port, "periscope_export_offered_total", kind="l7")

    def accounted() -> bool:  # every item offered is sent, dropped, or still queued
        got = scrape(port)
        total = sum(v for (name, labels), v in got.items()
                    if (name == "periscope_export_dropped_total" and ("exporter", "otlp") in labels)
                    or (name == "periscope_export_sent_total" and ("exporter", "otlp") in labels)
                    or (name == "periscope_export_backlog" and labels == (("exporter", "otlp"),)))
        return total == offered

    wait_for(accounted, 20, what="sent + dropped + queued to equal offered")


@pytest.mark.skipif(importlib.util.find_spec("collector.capture.l7stage") is None,
                    reason="needs the L7 integration (collector/capture/l7stage.py): "
                    "L7 records are what become spans")
def test_http_requests_arrive_as_spans(daemon_factory: Any, rx: Receiver, servers: Any,
                                       tmp_path: Path) -> None:
    port = free_port()
    d = exporting_daemon(daemon_factory, rx.endpoint, tmp_path, port, spans=True)
    srv = servers("SPANS-0004")
    t = TraceStream(d, "-p", str(srv.pid), "--level", "payload", "--export", "-d", "6s")
    t.wait_started()
    srv.send()
    _rc, events, err = t.finish()
    records = [e for e in events if e.get("kind") == "l7"]
    assert len(records) == len(REQUESTS), err
    assert rx.wait_for(lambda: len(rx.spans()) >= len(REQUESTS), 30), d.log_text()[-2000:]
    spans = sorted(rx.spans(), key=lambda rs: rs[1].start_time_unix_nano)
    assert len(spans) == len(REQUESTS)
    for (method, path, status), (res, sp) in zip(REQUESTS, spans, strict=True):
        a = attrs(sp.attributes)
        assert a["http.request.method"] == method and sp.name == method
        assert a["url.path"] == path.split("?")[0]
        assert a["http.response.status_code"] == status
        assert (sp.status.code == 2) == (status >= 400)  # STATUS_CODE_ERROR
        assert res["process.pid"] == srv.pid
        duration_ms = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e6
        if path == "/slow":
            assert duration_ms >= 300
        else:
            assert 0 <= duration_ms < 300
    everything = exported_bytes(rx, tmp_path / "events.jsonl")
    for secret in SECRETS:
        assert secret.encode() not in everything, secret
    # The same requests in /metrics, per protocol.
    target = records[0].get("unit") or records[0]["comm"]
    labels = {"target": target, "protocol": "http"}
    assert metric(port, "periscope_l7_requests_total", **labels) == len(REQUESTS)
    assert metric(port, "periscope_l7_request_errors_total", **labels) == 2
    assert metric(port, "periscope_l7_request_duration_seconds_count", **labels) == len(REQUESTS)
