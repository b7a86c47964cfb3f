"""snapshot and profile through the gate and the dispatch table: the snapshot of the fake
process 5150 with what the store holds about it, and profiles streamed over a real Unix
socket by the real server (a sampler without BPF stands in for the kernel)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from collector import config
from collector.access.auth import Principal
from collector.access.policy import Policy
from collector.errors import BadRequest, Denied, NotFound
from collector.protocol import Op
from collector.selectors import ALL, Level, Selector, View, Visibility
from collector.serve.dispatch import HANDLERS, Unary
from collector.serve.profiles import Profiles
from collector.serve.server import Server
from collector.store.l7query import L7Query
from probes.layout import F_DATA_OUT, F_PAYLOAD, Sc
from tests.unit.pipeline_corpus import _inet, sys_rec
from tests.unit.serve.conftest import (
    POLICY,
    ROOT,
    SAM,
    VERA,
    FakeSampler,
    Host,
    capture,
    proc_exited,
)

SNAP = 5150      # the fake procfs's fully described process (tests/data/proc/5150)
ENV_SECRETS = ("hunter2env", "c2lnbmF0dXJlc2VjcmV0", "4111 1111 1111 1111")


def call(h: Host, caller: Principal, op: Op, args: dict[str, Any] | None = None) -> Any:
    scope = h.svc.gate.check(caller, op, args or {})
    route = HANDLERS[op]
    assert isinstance(route, Unary)
    return route.fn(h.svc, caller, scope)


def audit(h: Host) -> list[dict[str, Any]]:
    with open(h.svc.audit_path, "rb") as f:
        return [orjson.loads(line) for line in f]


# -- snapshot -------------------------------------------------------------------------------
def test_snapshot_has_the_process_and_its_stored_errors_redacted(host: Host) -> None:
    events = capture(host, [sys_rec(Sc.READ, 5, -11, pid=SNAP, arg=64),
                            sys_rec(Sc.OPENAT, -100, -2, pid=SNAP),
                            sys_rec(Sc.WRITE, 5, 10, pid=SNAP),  # not an error
                            sys_rec(Sc.READ, 5, -11, pid=4242, arg=64)])  # another process
    # A row of an earlier process that had the same pid: before 5150 started, left out.
    earlier = dict(events[0], ts=1_700_001_000.0)
    host.svc.store.add_many([earlier])
    snap = call(host, VERA, Op.SNAPSHOT, {"targets": [f"pid:{SNAP}"]})
    assert (snap["schema"], snap["pid"], snap["partial"]) == (1, SNAP, False)
    assert snap["identity"]["comm"] == "snapsrv" and snap["cgroup"]["unit"] == "snap.service"
    errors = snap["store"]["recent_errors"]
    assert [(e["pid"], e["syscall"], e["errno"]) for e in errors] == [
        (SNAP, "read", "EAGAIN"), (SNAP, "openat", "ENOENT")]
    assert all(e["ts"] > 1_700_001_234 for e in errors)
    env = {v["name"]: v["value"] for v in snap["environ"]["vars"]}
    assert env["DB_PASSWORD"] == "[REDACTED:secret]" and env["PATH"] == "/usr/bin:/bin"
    text = orjson.dumps(snap).decode()
    assert not [s for s in ENV_SECRETS if s in text]
    assert host.svc.counters["snapshots"] == 1
    rec = audit(host)[-1]
    assert (rec["op"], rec["user"], rec["decision"]) == ("snapshot", "vera", "allow")


def test_snapshot_has_the_process_stored_connections_at_its_level(host: Host) -> None:
    """The conn table's rows of the process: its connection to 10.0.0.5:80, closed after
    one HTTP exchange; at meta (the viewer) without the protocol read from its bytes."""
    req = b"GET /orders HTTP/1.1\r\nHost: shop\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    capture(host, [sys_rec(Sc.CONNECT, 6, 0, _inet(80, "10.0.0.5"), 0, pid=SNAP, aux=1),
                   sys_rec(Sc.WRITE, 6, len(req), req, F_PAYLOAD | F_DATA_OUT, pid=SNAP,
                           arg=len(req)),
                   sys_rec(Sc.READ, 6, len(resp), resp, F_PAYLOAD, pid=SNAP, arg=4096),
                   sys_rec(Sc.CLOSE, 6, 0, pid=SNAP),
                   sys_rec(Sc.CONNECT, 7, 0, _inet(80, "10.0.0.9"), 0, pid=4242, aux=1)])
    snap = call(host, VERA, Op.SNAPSHOT, {"targets": [f"pid:{SNAP}"]})
    conns = snap["store"]["recent_connections"]
    assert [(c["pid"], c["peer"], c["state"], c["bytes_out"], c["bytes_in"]) for c in conns] \
        == [(SNAP, "10.0.0.5:80", "closed", len(req), len(resp))]
    assert "proto" not in conns[0]  # meta: the protocol is read from the bytes
    assert host.svc.l7store is not None
    assert [c["proto"] for c in host.svc.l7store.page(L7Query(
        Visibility((View(Level.PAYLOAD, (ALL,)),)), "conns", filters=(
            Selector("pid", str(SNAP)),))).rows] == ["http"]  # stored, and shown at payload


def test_snapshot_refusals(host: Host) -> None:
    with pytest.raises(Denied, match="snapshot needs at least one target"):
        call(host, VERA, Op.SNAPSHOT)
    with pytest.raises(BadRequest, match="one process, as pid:N"):
        call(host, VERA, Op.SNAPSHOT, {"targets": ["comm:snapsrv"]})
    with pytest.raises(BadRequest, match="one process, as pid:N"):
        call(host, VERA, Op.SNAPSHOT, {"targets": [f"pid:{SNAP}", "pid:4242"]})
    with pytest.raises(NotFound, match="no process with pid 4194000"):
        call(host, VERA, Op.SNAPSHOT, {"targets": ["pid:4194000"]})
    with pytest.raises(Denied, match="not allowed"):
        call(host, SAM, Op.SNAPSHOT, {"targets": ["pid:4242"], "reason": "x"})
    assert [r["decision"] for r in audit(host)] == ["deny", "allow", "allow", "allow", "deny"]


def test_snapshot_reply_is_cut_to_the_cap_and_says_so(host: Host) -> None:
    whole = call(host, ROOT, Op.SNAPSHOT, {"targets": [f"pid:{SNAP}"]})
    size = len(orjson.dumps(whole))
    host.svc.max_reply_bytes = size - 600
    cut = call(host, ROOT, Op.SNAPSHOT, {"targets": [f"pid:{SNAP}"]})
    assert len(orjson.dumps(cut)) <= size - 600
    assert cut["partial"] is True and cut["truncated"]
    for path, n in cut["truncated"].items():
        section, _, key = path.partition(".")
        kept = cut[section][key] if key else cut[section]
        full = whole[section][key] if key else whole[section]
        assert len(kept) + n == len(full) and kept == full[:len(kept)], path
    assert host.svc.counters["snapshots_truncated"] == 1


# -- profile over the real server -----------------------------------------------------------
Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def me() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def bound(role: str, policy: str = POLICY) -> Policy:
    """The policy with this process's user (the socket peer) bound to `role` only."""
    lines = [ln for ln in policy.splitlines() if not ln.startswith(f"{me()} = ")]
    return Policy.from_toml("\n".join(lines).replace("[users]", f'[users]\n{me()} = ["{role}"]'))


def serve(host: Host, body: Callable[[Server, Callable[[], Awaitable[Client]]], Awaitable[None]],
          policy: Policy | None = None) -> None:
    """The real server on a socket in tmp_path; this process's user is admin by default."""
    host.svc.gate.policy = policy or bound("admin")
    cfg = dataclasses.replace(config.load(text="").server, idle_timeout_s=10.0)
    path = str(host.root / "s.sock")

    async def main() -> None:
        server = Server(host.svc, cfg)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen()
        await server.start(sock)

        clients: list[Client] = []

        async def connect() -> Client:
            clients.append(await asyncio.open_unix_connection(path))
            return clients[-1]

        try:
            await asyncio.wait_for(body(server, connect), 30)
        finally:
            for _, writer in clients:
                writer.close()
            await server.close()

    asyncio.run(main())


async def send(c: Client, args: dict[str, Any]) -> None:
    c[1].write(orjson.dumps({"op": "profile", "args": args}) + b"\n")
    await c[1].drain()


async def read(c: Client) -> dict[str, Any]:
    return dict(orjson.loads(await c[0].readline()))


async def until_end(c: Client) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    progress = []
    while True:
        msg = await read(c)
        if "end" in msg:
            return progress, msg["end"]
        assert "event" in msg, msg
        progress.append(msg["event"]["progress"])


def ends(host: Host) -> list[dict[str, Any]]:
    return [r for r in audit(host) if r["op"] == "profile.end"]


def test_profile_streams_progress_then_the_profile_redacted_and_audited(host: Host) -> None:
    got: dict[str, Any] = {}

    async def body(server: Server, connect: Callable[[], Awaitable[Client]]) -> None:
        c = await connect()
        await send(c, {"targets": [f"pid:{SNAP}"], "duration": 1.6, "freq": 50})
        got["head"] = await read(c)
        got["progress"], got["end"] = await until_end(c)
        raw = orjson.dumps(got["end"]).decode()
        got["leak"] = "s3cr3tv4lue" in raw

    serve(host, body)
    head = got["head"]["result"]
    assert (head["pids"], head["duration_s"], head["freq"]) == ([SNAP], 1.6, 50)
    assert got["progress"] and got["progress"][-1]["phase"] == "sampling"
    end = got["end"]
    assert (end["profile"], end["reason"]) == (head["profile"], "done")
    result = end["result"]
    assert result["pids"] == [SNAP] and result["samples"] >= 70 and result["truncated"] is None
    (stack, n), = result["stacks"]
    assert stack[:2] == [f"proc{SNAP}", "main"] and n == result["samples"]
    assert stack[2].startswith("handle_request token=[REDACTED") and not got["leak"]
    req, fin = [r for r in audit(host) if r["op"] in ("profile", "profile.end")]
    assert (req["decision"], fin["reason"], fin["events"]) == ("allow", "done", n)
    assert fin["session"] == head["profile"] and fin["bytes"] > 0
    assert 1.5 <= fin["args"]["sampled_s"] < 5
    assert host.svc.counters["profiles"] == 1 and host.svc.counters["profile_samples"] == n
    assert host.svc.profiles.running() == []


def test_profile_ends_when_its_targets_exit_with_what_was_sampled(host: Host) -> None:
    got: dict[str, Any] = {}

    async def body(server: Server, connect: Callable[[], Awaitable[Client]]) -> None:
        c = await connect()
        await send(c, {"targets": [f"pid:{SNAP}"], "duration": 25, "freq": 50})
        assert (await read(c))["ok"]
        await read(c)  # a first progress message: sampling runs
        proc_exited(host, SNAP)
        got["t"] = asyncio.get_running_loop().time()
        _, got["end"] = await until_end(c)
        got["t"] = asyncio.get_running_loop().time() - got["t"]

    serve(host, body)
    assert got["end"]["reason"] == "target_exited" and got["t"] < 5
    assert got["end"]["result"]["samples"] > 0
    assert ends(host)[0]["reason"] == "target_exited"


def test_closing_the_write_side_stops_early_and_still_gets_the_profile(host: Host) -> None:
    got: dict[str, Any] = {}

    async def body(server: Server, connect: Callable[[], Awaitable[Client]]) -> None:
        c = await connect()
        await send(c, {"targets": [f"pid:{SNAP}"], "duration": 25})
        assert (await read(c))["ok"]
        c[1].write_eof()  # what `periscope profile` does on Ctrl-C
        _, got["end"] = await until_end(c)

    serve(host, body)
    assert got["end"]["reason"] == "client_closed" and got["end"]["result"]["samples"] >= 1
    assert ends(host)[0]["reason"] == "client_closed"


def test_profiles_are_bounded_and_the_daemon_stopping_ends_them(host: Host) -> None:
    host.svc.profiles = Profiles(1, sampler=FakeSampler(), symbolizer=object)
    got: dict[str, Any] = {}

    async def body(server: Server, connect: Callable[[], Awaitable[Client]]) -> None:
        first, second = await connect(), await connect()
        await send(first, {"targets": [f"pid:{SNAP}"], "duration": 25})
        assert (await read(first))["ok"]
        await send(second, {"targets": [f"pid:{SNAP}"], "duration": 1})
        got["refused"] = await read(second)
        second[1].close()
        await server.close()  # what SIGTERM does: every profile ends with what it has
        _, got["end"] = await until_end(first)

    serve(host, body)
    assert got["refused"]["error"]["name"] == "LIMIT"
    assert "1 profiles are running (server.max_profiles)" in got["refused"]["error"]["message"]
    assert got["end"]["reason"] == "shutdown" and got["end"]["result"]["samples"] >= 1
    assert sorted(r["reason"] for r in ends(host)) == ["failed: LIMIT", "shutdown"]
    assert host.svc.counters["fault_limit"] == 1


def test_duration_is_bounded_by_the_role_and_one_symbolizer_serves_all(host: Host) -> None:
    sampler = FakeSampler()
    host.svc.profiles = Profiles(2, sampler=sampler, symbolizer=object)
    got: list[dict[str, Any]] = []

    async def body(server: Server, connect: Callable[[], Awaitable[Client]]) -> None:
        for args in ({"targets": [f"pid:{SNAP}"], "duration": 40, "freq": 10},
                     {"targets": [f"pid:{SNAP}", "pid:4242"], "duration": 0.5}):
            c = await connect()
            await send(c, args)
            got.append((await read(c))["result"])
            await until_end(c)

    quick = '[roles.quick]\nops = ["profile"]\nmax_level = "meta"\ntargets = ["*"]\n' \
            'max_duration = "2s"\n'
    serve(host, body, bound("quick", POLICY.replace("[users]", quick + "\n[users]")))
    assert got[0]["duration_s"] == 2 and any("duration cut" in n for n in got[0]["narrowed"])
    assert got[1]["pids"] == [4242, SNAP] and got[1]["freq"] == 99
    assert [c["duration_s"] for c in sampler.calls] == [2, 0.5]
    assert sampler.calls[0]["symbolizer"] is sampler.calls[1]["symbolizer"] is not None


@pytest.mark.parametrize(("args", "name", "message"), [
    ({"targets": [f"pid:{SNAP}"], "freq": 5000}, "BAD_REQUEST", '"freq" must be an integer'),
    ({"targets": ["pid:4194000"]}, "NOT_FOUND", "no running process for pid:4194000"),
    ({"targets": []}, "DENIED", "profile needs at least one target"),
])
def test_profile_refusals_are_clear_and_audited(host: Host, args: dict[str, Any], name: str,
                                                message: str) -> None:
    got: dict[str, Any] = {}

    async def body(server: Server, connect: Callable[[], Awaitable[Client]]) -> None:
        c = await connect()
        await send(c, args)
        got["reply"] = await read(c)

    serve(host, body)
    err = got["reply"]["error"]
    assert err["name"] == name and message in err["message"], err
    if name == "DENIED":
        assert ends(host) == []  # denied by the gate: no profile, so no end
    else:
        assert [r["reason"] for r in ends(host)] == [f"failed: {name}"]
    assert host.svc.profiles.running() == []
