"""The server's dispatch: one table entry per Op, and a real Unix socket served end to end
(framing errors, unknown ops, denials, unary replies and a streamed trace session)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from collector import config, protocol
from collector.access.policy import Policy
from collector.capture.events import Batch
from collector.export.route import ExportRoute
from collector.protocol import Fault, Op
from collector.serve.dispatch import HANDLERS, Rebind, Streaming, Unary
from collector.serve.server import Server
from tests.unit.serve.conftest import POLICY, Host


def test_every_op_has_exactly_one_handler_of_its_kind() -> None:
    assert set(HANDLERS) == set(Op)
    assert len(HANDLERS) == len(Op)
    for op, route in HANDLERS.items():
        kind = Streaming if op.streaming else Rebind if op is Op.AUTH else Unary
        assert isinstance(route, kind), op
    assert len({id(r.fn) for r in HANDLERS.values()}) == len(Op)  # no handler serves two ops


Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(host: Host, body: Callable[[Client], Awaitable[None]], policy: str = POLICY) -> None:
    """Serve on a socket in tmp_path as the real server does; the peer is this process, so
    its user is bound to the admin role."""
    me = pwd.getpwuid(os.getuid()).pw_name
    if me != "root":
        policy = policy.replace("[users]\n", f'[users]\n{me} = ["admin"]\n')
    if me != "root" or policy is not POLICY:
        host.svc.gate.policy = Policy.from_toml(policy)
    cfg = dataclasses.replace(config.load(text="").server, idle_timeout_s=10.0)
    path = str(host.root / "s.sock")

    async def main() -> None:
        server = Server(host.svc, cfg)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen()
        await server.start(sock)
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            await asyncio.wait_for(body((reader, writer)), 30)
        finally:
            writer.close()
            await server.close()

    asyncio.run(main())


def audit_records(host: Host) -> list[dict[str, Any]]:
    with open(host.svc.audit_path, "rb") as f:
        return [orjson.loads(line) for line in f]


async def ask(c: Client, line: bytes) -> dict[str, Any]:
    c[1].write(line)
    await c[1].drain()
    return dict(orjson.loads(await c[0].readline()))


def test_requests_over_a_real_socket(host: Host) -> None:
    got: dict[str, Any] = {}

    async def body(c: Client) -> None:
        got["bad"] = await ask(c, b"{not json\n")
        got["unknown"] = await ask(c, b'{"op":"rm -rf","args":{}}\n')
        got["claim"] = await ask(c, b'{"op":"hello","args":{},"uid":0}\n')
        got["hello"] = await ask(c, protocol.request(Op.HELLO))
        got["events"] = await ask(c, protocol.request(Op.EVENTS, {"limit": 5}))
        got["grant"] = await ask(c, protocol.request(Op.GRANT_ADD, {"principal": "x"}))
        got["revoke"] = await ask(c, protocol.request(Op.GRANT_REVOKE, {"id": "00000000"}))

    run(host, body)
    assert got["bad"]["error"]["name"] == "BAD_FRAME"
    assert got["unknown"]["error"] == {"code": int(Fault.UNKNOWN_OP), "name": "UNKNOWN_OP",
                                       "message": "unknown op 'rm -rf'"}
    assert got["claim"]["error"]["name"] == "BAD_REQUEST"  # identity can't be claimed
    assert got["hello"] == {"ok": True, "result": {
        "uid": os.getuid(), "user": pwd.getpwuid(os.getuid()).pw_name,
        "groups": got["hello"]["result"]["groups"]}}
    assert got["events"] == {"ok": True, "result": []}
    assert got["grant"]["error"]["name"] == "BAD_REQUEST"
    assert got["revoke"]["error"]["name"] == "NOT_FOUND"
    counters = host.svc.counters
    assert counters["bad_frame"] == 3 and counters["op_hello"] == 1
    assert counters["fault_bad_request"] == 1 and counters["fault_not_found"] == 1
    # every request is audited, the malformed ones as "invalid" denials
    ops = [r["op"] for r in audit_records(host)]
    assert ops == ["invalid", "invalid", "invalid", "hello", "events", "grant.add",
                   "grant.revoke"]


def test_trace_streams_through_the_same_table(host: Host) -> None:
    got: dict[str, Any] = {}

    def feed() -> None:  # the pipeline's sink thread, once the session is live
        deadline = time.monotonic() + 10
        while not host.svc.router.sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        host.svc.router(Batch([{"kind": "syscall", "target": 1, "pid": 4242, "payload": "hi",
                                "captured": 2},
                               {"kind": "exit", "target": 99, "pid": 1}]))  # not this session's

    async def body(c: Client) -> None:
        c[1].write(protocol.request(Op.TRACE, {"targets": ["pid:4242"], "level": "payload",
                                               "duration": 1.5}))
        await c[1].drain()
        threading.Thread(target=feed, daemon=True).start()
        got["lines"] = [orjson.loads(line) async for line in c[0]]

    run(host, body)
    head, event, end = got["lines"]
    assert head["ok"] and head["result"]["targets"] == ["pid:4242"]
    assert head["result"]["level"] == "payload"
    assert event == {"event": {"kind": "syscall", "target": 1, "pid": 4242, "payload": "hi",
                               "captured": 2}}
    assert end["end"]["reason"] == "deadline" and end["end"]["events"] == 1
    assert end["end"]["bytes"] == 2
    probe = host.probes[0]
    assert probe.loaded and probe.closed  # attached for the session, detached after it
    assert probe.pid_map == {}  # released
    ops = [(r["op"], r["kind"]) for r in audit_records(host)]
    assert ops == [("trace", "request"), ("trace.end", "session_end")]


class Lines:
    """A JSON-lines exporter stand-in: keeps what the export route hands it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, events: list[dict[str, Any]]) -> None:
        self.events += events


def test_an_exported_trace_is_routed_audited_and_said(host: Host) -> None:
    lines = Lines()
    route = ExportRoute(host.svc.router, None, lines,  # type: ignore[arg-type]
                        ("jsonlog /var/lib/periscope/events.jsonl",))
    host.svc.exporters = route
    host.svc.gate.export_to = route.destinations
    got: dict[str, Any] = {}
    batch = Batch([{"kind": "syscall", "target": 1, "pid": 4242, "payload": "hi", "captured": 2},
                   {"kind": "exit", "target": 99, "pid": 1}])  # not this session's target

    def feed() -> None:  # the pipeline's sink thread: the router, then the export route
        deadline = time.monotonic() + 10
        while not host.svc.router.exports and time.monotonic() < deadline:
            time.sleep(0.01)
        host.svc.router(batch)
        route(batch)

    async def body(c: Client) -> None:
        c[1].write(protocol.request(Op.TRACE, {"targets": ["pid:4242"], "level": "payload",
                                               "duration": 1.5, "export": True}))
        await c[1].drain()
        threading.Thread(target=feed, daemon=True).start()
        got["lines"] = [orjson.loads(line) async for line in c[0]]

    run(host, body, POLICY.replace("[roles.admin]\n", '[roles.admin]\nexport = "meta"\n'))
    head, event, end = got["lines"]
    want = {"level": "meta", "to": ["jsonlog /var/lib/periscope/events.jsonl"]}
    assert head["result"]["export"] == want
    assert any("exported at meta only" in n for n in head["result"]["narrowed"])
    assert event["event"]["payload"] == "hi"  # the session sees payload ...
    assert lines.events == [{"kind": "syscall", "target": 1, "pid": 4242}]  # ... export meta
    assert end["end"]["reason"] == "deadline"
    recs = [(r["op"], r.get("export")) for r in audit_records(host)]
    assert recs == [("trace", want), ("trace.end", want)]
    assert host.svc.router.exports == {}  # the session ended: nothing leaves any more


def test_auth_rebinds_the_connection_to_a_verified_idp_login(host: Host) -> None:
    """A valid ID token gives the rest of this connection an IdP identity (in hello and in
    every audit record); a bad one is refused and audited; the Unix identity never changes."""
    from collector.access.idp import Jwks, Verifier
    from tests.unit.access.fakeidp import AUDIENCE, FakeIdp

    me = pwd.getpwuid(os.getuid()).pw_name
    idp = FakeIdp()
    cfg = dataclasses.replace(config.load(text="").idp, issuer=idp.issuer, audience=AUDIENCE,
                              jwks=str(idp.write_jwks(host.root / "jwks.json")))
    host.svc.idp = Verifier(cfg, Jwks(cfg.jwks))
    got: dict[str, Any] = {}

    async def body(c: Client) -> None:
        got["other"] = await ask(c, protocol.request(Op.AUTH, {"id_token": idp.token("zed")}))
        got["plain"] = await ask(c, protocol.request(Op.HELLO))
        got["auth"] = await ask(c, protocol.request(Op.AUTH, {"id_token": idp.token(me)}))
        got["hello"] = await ask(c, protocol.request(Op.HELLO))
        got["events"] = await ask(c, protocol.request(Op.EVENTS, {"limit": 1}))

    run(host, body)
    assert got["other"]["error"]["name"] == "DENIED" and "not for the connecting" in \
        got["other"]["error"]["message"]
    assert "idp_login" not in got["plain"]["result"]
    assert got["plain"]["result"]["idp"] == {"issuer": idp.issuer, "client_id": AUDIENCE}
    assert got["auth"]["result"]["sub"] == f"00u-{me}"
    hello = got["hello"]["result"]
    assert hello["uid"] == os.getuid() and hello["idp_login"]["sub"] == f"00u-{me}"
    recs = audit_records(host)
    auth = [r for r in recs if r["kind"] == "idp_auth"]
    assert [r["decision"] for r in auth] == ["deny", "allow"]
    assert "token_sha256" in auth[0] and "idp" not in auth[0]
    (events,) = [r for r in recs if r["op"] == "events"]
    assert events["idp"]["sub"] == f"00u-{me}" and events["uid"] == os.getuid()
