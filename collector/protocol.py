"""The client wire protocol: JSON lines (orjson), the ops, fault codes, frame cap, loss names.

One request per line: {"op": NAME, "args": {...}}. Replies are lines too:
  {"ok": true, "result": ...}                  a single reply, or
  {"event": {...}} ... {"end": {...}}          a stream (trace), ended by "end", or
  {"n": N, "events": [{...}, ...]} ... {"end"}  the same stream in batches, for a trace
                                               request with "frames": "batch", or
  {"ok": false, "error": {"code", "name", "message"}}
Never pickle, never a traceback on the wire.
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Any

import orjson

from collector.errors import (
    AuditFailed,
    BadFrame,
    BadRequest,
    CaptureError,
    Denied,
    FrameTimeout,
    LimitExceeded,
    NotFound,
    SelectorError,
    Unavailable,
    UnknownOp,
)

MAX_FRAME = 65536
MAX_DEPTH = 8  # nesting of request JSON; deeper is rejected before dispatch


class OpKind(enum.Enum):
    """How an op is scoped: what the policy decides for it and against which facts."""

    IDENTITY = "identity"  # hello: no policy decision (anyone may ask who they are), audited
    ADMIN = "admin"        # allowed by a role's ops alone; no targets
    LIVE = "live"          # targets resolved against the processes running now (trace,
                           # snapshot, profile)
    STORED = "stored"      # stored rows, matched on the facts stored with each row


class Op(str, enum.Enum):
    """Every operation on the wire (the value is the wire name), with its metadata.

    The server dispatches through one handler per Op, the policy reads `kind`, and the
    client sends `Op.X.value`: this enum is the only list of operations.
    """

    kind: OpKind
    streaming: bool  # the handler owns the connection and streams until an "end" message

    def __new__(cls, wire: str, kind: OpKind, streaming: bool = False) -> Op:
        op = str.__new__(cls, wire)
        op._value_ = wire
        op.kind = kind
        op.streaming = streaming
        return op

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @property
    def targeted(self) -> bool:
        """Scoped by target selectors (roles' targets apply, grants can allow it)."""
        return self.kind in (OpKind.LIVE, OpKind.STORED)

    HELLO = ("hello", OpKind.IDENTITY)
    STATUS = ("status", OpKind.ADMIN)
    TRACE = ("trace", OpKind.LIVE, True)
    SNAPSHOT = ("snapshot", OpKind.LIVE)
    PROFILE = ("profile", OpKind.LIVE, True)
    EVENTS = ("events", OpKind.STORED)
    CONNS = ("conns", OpKind.STORED)
    TOP = ("top", OpKind.STORED)
    ERRORS = ("errors", OpKind.STORED)
    HTTP = ("http", OpKind.STORED)
    SQL = ("sql", OpKind.STORED)
    REDIS = ("redis", OpKind.STORED)
    DNS = ("dns", OpKind.STORED)
    GRANT_ADD = ("grant.add", OpKind.ADMIN)
    GRANT_LIST = ("grant.list", OpKind.ADMIN)
    GRANT_REVOKE = ("grant.revoke", OpKind.ADMIN)
    AUDIT_SHOW = ("audit.show", OpKind.ADMIN)
    AUDIT_VERIFY = ("audit.verify", OpKind.ADMIN)
    # Identity-provider step-up: present an OIDC ID token for this connection (anyone may).
    AUTH = ("auth", OpKind.IDENTITY)
    # Access requests (collector/access/requests.py): allowed by a role's ops, then checked
    # by their handlers against the role's request rules and the reviewer lists.
    REQUEST_CREATE = ("request.create", OpKind.ADMIN)
    REQUEST_LIST = ("request.list", OpKind.ADMIN)
    REQUEST_SHOW = ("request.show", OpKind.ADMIN)
    REQUEST_WAIT = ("request.wait", OpKind.ADMIN, True)
    REQUEST_CANCEL = ("request.cancel", OpKind.ADMIN)
    REQUEST_APPROVE = ("request.approve", OpKind.ADMIN)
    REQUEST_DENY = ("request.deny", OpKind.ADMIN)
    REQUEST_BREAK_GLASS = ("request.break_glass", OpKind.ADMIN)


OPS: tuple[str, ...] = tuple(op.value for op in Op)  # wire names, in declaration order
_BY_NAME: dict[str, Op] = {op.value: op for op in Op}


class Fault(enum.IntEnum):
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


# The one mapping from errors to wire faults; the most specific class listed wins. Errors
# not listed (bugs, or state errors that should never reach a client) are INTERNAL, and
# their message stays in the daemon log.
FAULTS: MappingProxyType[type[BaseException], Fault] = MappingProxyType({
    BadFrame: Fault.BAD_FRAME,
    BadRequest: Fault.BAD_REQUEST,
    SelectorError: Fault.BAD_REQUEST,
    UnknownOp: Fault.UNKNOWN_OP,
    Denied: Fault.DENIED,
    NotFound: Fault.NOT_FOUND,
    Unavailable: Fault.UNAVAILABLE,
    CaptureError: Fault.UNAVAILABLE,
    AuditFailed: Fault.AUDIT_FAILED,
    LimitExceeded: Fault.LIMIT,
    FrameTimeout: Fault.TIMEOUT,
})
INTERNAL_MESSAGE = "internal error; the daemon log has details"


def fault_of(err: BaseException) -> Fault:
    """The wire fault of an error: its nearest class in FAULTS, else INTERNAL."""
    for cls in type(err).__mro__:
        fault = FAULTS.get(cls)
        if fault is not None:
            return fault
    return Fault.INTERNAL


def to_wire(err: BaseException) -> dict[str, Any]:
    """{code, name, message}; an unmapped error's own text never reaches the client."""
    fault = fault_of(err)
    message = INTERNAL_MESSAGE if fault is Fault.INTERNAL else str(err)
    return {"code": int(fault), "name": fault.name, "message": message}


# Every counter that means "something was not delivered": (name, where it is counted, what
# it means). A trace's "end" message carries how much each kernel and pipeline counter
# grew during the session; `status` reports them all. The server reads the names here,
# the client the text.
LOSSES: tuple[tuple[str, str, str], ...] = (
    ("skipped_rate", "kernel", "syscalls skipped by the rate limit (capture.rate_limit)"),
    ("skipped_sample", "kernel", "syscalls skipped by sampling (capture.sample_every)"),
    ("drop_ringbuf", "kernel", "records lost to a full ring buffer"),
    ("drop_inflight", "kernel", "syscalls not tracked (in-flight slot taken by another thread)"),
    ("shed_overload", "kernel",
     "I/O syscalls not recorded while the daemon was overloaded (shed at the source)"),
    ("target_full", "kernel", "processes not traced (target table full)"),
    ("payload_shed", "pipeline", "payloads shed under load (metadata kept)"),
    ("dropped_overload", "pipeline", "records dropped under load"),
    ("pipeline_errors", "pipeline", "record batches that failed in the pipeline"),
    ("sink_errors", "pipeline", "batches the store or a session failed to take"),
    ("slow_reader_dropped", "router", "sessions ended because their client read too slowly"),
    ("tls_attach_failed", "tracer",
     "TLS libraries that could not be probed (no TLS payload from them)"),
)
LOSS_TEXT: MappingProxyType[str, str] = MappingProxyType(
    {name: text for name, _where, text in LOSSES})


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


def decode_request(line: bytes, max_frame: int = MAX_FRAME) -> tuple[Op, dict[str, Any]]:
    """Parse one request line into (op, args). Raises BadFrame, BadRequest or UnknownOp."""
    if len(line) > max_frame:
        raise BadFrame(f"frame of {len(line)} bytes exceeds {max_frame}")
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError as err:
        raise BadFrame(f"request is not valid UTF-8 JSON: {err.msg}") from err
    if _depth(msg, MAX_DEPTH) > MAX_DEPTH:
        raise BadFrame(f"request nests deeper than {MAX_DEPTH} levels")
    if not isinstance(msg, dict):
        raise BadRequest("request must be a JSON object")
    name = msg.get("op")
    if not isinstance(name, str):
        raise BadRequest('request needs a string "op"')
    op = _BY_NAME.get(name)
    if op is None:
        raise UnknownOp(f"unknown op {name[:40]!r}")
    args = msg.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest('"args" must be an object')
    extra = set(msg) - {"op", "args"}
    if extra:
        # Identity comes from SO_PEERCRED only: fields like "uid" are refused, not ignored.
        raise BadRequest(f"unexpected request fields: {sorted(extra)[:5]}")
    return op, args


def ok(result: Any) -> bytes:
    return encode({"ok": True, "result": result})


def error(err: BaseException) -> bytes:
    return encode({"ok": False, "error": to_wire(err)})


def internal_error() -> bytes:
    """The reply to a request that failed on a bug: INTERNAL, details only in our log."""
    return encode({"ok": False, "error": {"code": int(Fault.INTERNAL), "name": "INTERNAL",
                                          "message": INTERNAL_MESSAGE}})


def event(ev: dict[str, Any]) -> bytes:
    """One stream frame for a message built on the spot (a profile's progress)."""
    return event_line(orjson.dumps(ev))


def event_line(body: bytes) -> bytes:
    """The stream frame for an event already serialized (once, for the store too)."""
    return b'{"event":' + body + b"}\n"


def events_frame(body: bytes, n: int) -> bytes:
    """The batch stream frame: `body` is a JSON array of n events already serialized."""
    return b'{"n":%d,"events":%b}\n' % (n, body)


def events_frame_of(events: list[dict[str, Any]]) -> tuple[bytes, memoryview]:
    """events_frame(orjson.dumps(events), n) in one serialization, and the JSON array in it
    (a view): a session sends the frame and the store keeps the array, neither copying it."""
    frame = orjson.dumps({"n": len(events), "events": events}, option=orjson.OPT_APPEND_NEWLINE)
    return frame, memoryview(frame)[len(b'{"n":%d,"events":' % len(events)):-2]


# A trace request's "frames": one {"event"} line per event (the default, what clients
# before batches read) or {"events"} batches (one line per pipeline batch and session).
FRAMES = ("event", "batch")


def end(info: dict[str, Any]) -> bytes:
    return encode({"end": info})


def request(op: str, args: dict[str, Any] | None = None) -> bytes:
    return encode({"op": str(op), "args": args or {}})
