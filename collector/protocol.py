"""The client wire protocol: JSON lines (orjson), op names, numeric fault codes, frame cap.

One request per line: {"op": NAME, "args": {...}}. Replies are lines too:
  {"ok": true, "result": ...}                  a single reply, or
  {"event": {...}} ... {"end": {...}}          a stream (trace), ended by "end", or
  {"ok": false, "error": {"code", "name", "message"}}
Never pickle, never a traceback on the wire.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import orjson

MAX_FRAME = 65536
MAX_DEPTH = 8  # nesting of request JSON; deeper is rejected before dispatch

# Operation names, shared by server dispatch, policy and the client.
OPS = (
    "hello", "status", "trace", "events", "conns", "top", "errors", "http", "snapshot",
    "grant.add", "grant.list", "grant.revoke", "audit.show", "audit.verify",
)


class Fault(IntEnum):
    BAD_FRAME = 1        # not JSON, not UTF-8, too deep, too large
    BAD_REQUEST = 2      # JSON, but wrong shape or argument values
    UNKNOWN_OP = 3
    DENIED = 4           # policy said no
    NOT_FOUND = 5        # no such pid/grant/session
    UNAVAILABLE = 6      # probes cannot load, daemon shutting down
    AUDIT_FAILED = 7     # audit record not durable: fail closed, nothing disclosed
    LIMIT = 8            # connection/session caps
    TIMEOUT = 9
    INTERNAL = 10


class ProtocolError(Exception):
    """A request-level failure that becomes {"code","name","message"} on the wire."""

    def __init__(self, fault: Fault, message: str) -> None:
        super().__init__(message)
        self.fault = fault
        self.message = message

    def to_wire(self) -> dict[str, Any]:
        return {"code": int(self.fault), "name": self.fault.name, "message": self.message}


def _depth(obj: Any, limit: int) -> int:
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        cur, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(cur, dict):
            stack.extend((v, d + 1) for v in cur.values())
        elif isinstance(cur, list):
            stack.extend((v, d + 1) for v in cur)
    return deepest


def encode(msg: dict[str, Any]) -> bytes:
    return orjson.dumps(msg) + b"\n"


def decode_request(line: bytes, max_frame: int = MAX_FRAME) -> tuple[str, dict[str, Any]]:
    """Parse one request line into (op, args). Raises ProtocolError."""
    if len(line) > max_frame:
        raise ProtocolError(Fault.BAD_FRAME, f"frame of {len(line)} bytes exceeds {max_frame}")
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(Fault.BAD_FRAME, f"request is not valid UTF-8 JSON: {err.msg}") from err
    if _depth(msg, MAX_DEPTH) > MAX_DEPTH:
        raise ProtocolError(Fault.BAD_FRAME, f"request nests deeper than {MAX_DEPTH} levels")
    if not isinstance(msg, dict):
        raise ProtocolError(Fault.BAD_REQUEST, "request must be a JSON object")
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError(Fault.BAD_REQUEST, 'request needs a string "op"')
    if op not in OPS:
        raise ProtocolError(Fault.UNKNOWN_OP, f"unknown op {op[:40]!r}")
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(Fault.BAD_REQUEST, '"args" must be an object')
    extra = set(msg) - {"op", "args"}
    if extra:
        # Identity comes from SO_PEERCRED only: fields like "uid" are refused, not ignored.
        raise ProtocolError(Fault.BAD_REQUEST, f"unexpected request fields: {sorted(extra)[:5]}")
    return op, args


def ok(result: Any) -> bytes:
    return encode({"ok": True, "result": result})


def error(err: ProtocolError) -> bytes:
    return encode({"ok": False, "error": err.to_wire()})


def event(ev: dict[str, Any]) -> bytes:
    return event_line(orjson.dumps(ev))


def event_line(body: bytes) -> bytes:
    """The stream frame for an event already serialized (once, for the store too)."""
    return b'{"event":' + body + b"}\n"


def end(info: dict[str, Any]) -> bytes:
    return encode({"end": info})


def request(op: str, args: dict[str, Any] | None = None) -> bytes:
    return encode({"op": op, "args": args or {}})
