"""What every handler may touch, built once by the daemon; and handler argument checks."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from collector.access.desk import Desk
from collector.access.gate import Gate
from collector.access.grants import GrantStore
from collector.access.idp import Verifier
from collector.capture.l7stage import L7Stage
from collector.capture.pipeline import Pipeline
from collector.capture.tracer import Tracer
from collector.errors import BadRequest, Unavailable
from collector.export.route import ExportRoute
from collector.serve.instruments import Instruments
from collector.serve.profiles import Profiles
from collector.serve.red import TargetRed
from collector.serve.sessions import Router
from collector.snapshot.context import TextRedactor
from collector.store.l7store import L7Store
from collector.store.store import EventStore


@dataclass
class Services:
    """The daemon's parts a handler uses; counters are the server's (read by metrics)."""

    gate: Gate
    tracer: Tracer
    pipeline: Pipeline
    router: Router
    store: EventStore
    grants: GrantStore
    audit_path: str
    anchors_path: str
    max_payload: int
    redactor: TextRedactor     # the daemon's Redactor: snapshots and profile frame names
    profiles: Profiles
    session_queue: int = 4096  # frames a trace session may have queued (server config)
    l7store: L7Store | None = None  # connection and L7 records (conns, http, sql, redis, dns)
    stage: L7Stage | None = None    # seeds a session's connections open at its start
    max_reply_bytes: int = 8 << 20  # a snapshot's or profile's reply (server config)
    started: float = field(default_factory=time.time)
    counters: Counter[str] = field(default_factory=Counter)
    desk: Desk | None = None        # access requests and break-glass (access/desk.py)
    idp: Verifier | None = None     # OIDC step-up; None when [idp] is off
    exporters: ExportRoute | None = None  # the export sinks, when [export.*] enables one
    red: TargetRed | None = None          # per-target figures, when /metrics is served
    metrics: Instruments = field(default_factory=Instruments)


def int_arg(args: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    """args[key] as an integer in [lo, hi] (default if absent). Raises BadRequest."""
    v = args.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f'"{key}" must be an integer in [{lo}, {hi}]')
    return v


def str_arg(args: dict[str, Any], key: str, what: str) -> str:
    """args[key] as a string. Raises BadRequest naming the op (`what`)."""
    v = args.get(key)
    if not isinstance(v, str):
        raise BadRequest(f'{what} needs a string "{key}"')
    return v


def desk_of(svc: Services) -> Desk:
    if svc.desk is None:
        raise Unavailable("access requests are not set up in this daemon")
    return svc.desk
