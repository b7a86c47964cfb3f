"""Access requests: a time-boxed slice of access a person asks for with a reason, reviewed
by others; the pure state machine, and the store (requests.json, written like grants)."""

from __future__ import annotations

import builtins
import dataclasses
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from collector.access.auth import Principal
from collector.access.grants import write_atomic
from collector.errors import BadRequest, Denied, NotFound, RequestsError
from collector.selectors import Level, SelectorError, parse_selector

FORMAT_VERSION = 1
PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, REVOKED = (
    "pending", "approved", "denied", "expired", "cancelled", "revoked")
STATES = (PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, REVOKED)
KEEP_DONE_S = 7 * 86400        # finished requests stay listable this long, then are pruned
MAX_PENDING_PER_USER = 20      # a user cannot flood reviewers (or the file)
_ID = re.compile(r"[0-9a-f]{8}\Z")


@dataclass(frozen=True)
class Review:
    """One reviewer's word on a request: approve (with what they could grant) or deny."""

    user: str
    uid: int
    decision: str  # "approve" | "deny"
    comment: str
    time: float
    level: str = ""       # approvals: the highest level this reviewer could grant
    duration: float = 0   # approvals: the longest grant this reviewer could give


@dataclass(frozen=True)
class AccessRequest:
    """A request and its history. `level`/`duration` are what was asked; `granted_*` what
    the approvers' own rights allowed (the grant's level and length)."""

    id: str
    requester: str
    uid: int
    role: str
    target: str
    level: Level
    duration: float          # seconds the grant lasts once approved (its clock starts then)
    reason: str
    created: float
    expires: float           # while pending: it expires unreviewed at this time
    approvals: int           # approvals needed (the role's threshold when it was filed)
    state: str = PENDING
    reviews: tuple[Review, ...] = ()
    grant: str | None = None
    granted_level: str | None = None
    grant_expires: float | None = None
    break_glass: bool = False
    closed: float | None = None     # when it left pending/approved for good
    closed_by: str | None = None
    used: int = 0                   # trace sessions started with --request

    def approvers(self) -> list[str]:
        return [r.user for r in self.reviews if r.decision == "approve"]

    def live(self, now: float) -> bool:
        """Approved and its grant not yet over."""
        return self.state == APPROVED and (self.grant_expires or 0) > now

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["level"] = str(self.level)
        return d

    @classmethod
    def from_json(cls, d: Any) -> AccessRequest:
        """Validate and build; raises ValueError/TypeError/KeyError on bad input."""
        if not isinstance(d, dict) or set(d) != {f.name for f in dataclasses.fields(cls)}:
            raise ValueError("request record has missing or unknown keys")
        if not _ID.match(str(d["id"])) or d["state"] not in STATES:
            raise ValueError(f"bad request id or state in {str(d['id'])[:16]!r}")
        reviews = tuple(Review(**r) for r in d["reviews"])
        return cls(**{**d, "target": str(parse_selector(d["target"])),
                      "level": Level.parse(d["level"]), "reviews": reviews})


# -- the state machine (pure: a request and an event in, the next request out) -----------
def _same_person(req: AccessRequest, who: Principal) -> bool:
    return who.uid == req.uid or who.user == req.requester


def check_pending(req: AccessRequest, now: float) -> None:
    if req.state != PENDING:
        raise BadRequest(f"request {req.id} is {req.state}, not pending")
    if now >= req.expires:
        raise BadRequest(f"request {req.id} has expired")


def review(req: AccessRequest, who: Principal, approve: bool, comment: str, now: float,
           level: Level | None = None, duration: float = 0) -> AccessRequest:
    """Add one review. A deny ends the request; enough approvals make it approved (the
    caller then creates the grant). The requester can never review their own request."""
    check_pending(req, now)
    if _same_person(req, who):
        raise Denied(f"{who.describe()} filed request {req.id} and cannot review it "
                     "(a second person must)")
    if any(r.uid == who.uid or r.user == who.user for r in req.reviews):
        raise BadRequest(f"{who.describe()} already reviewed request {req.id}")
    r = Review(who.user, who.uid, "approve" if approve else "deny", comment, now,
               str(level) if level is not None else "", duration)
    out = dataclasses.replace(req, reviews=(*req.reviews, r))
    if not approve:
        return dataclasses.replace(out, state=DENIED, closed=now, closed_by=who.user)
    if len(out.approvers()) >= req.approvals:
        return dataclasses.replace(out, state=APPROVED)
    return out


def granted(req: AccessRequest) -> tuple[Level, float]:
    """What an approved request grants: the least any approver could give (never more
    than was asked)."""
    mine = [r for r in req.reviews if r.decision == "approve"]
    level = min([req.level, *(Level.parse(r.level) for r in mine if r.level)])
    duration = min([req.duration, *(r.duration for r in mine if r.duration)])
    return level, duration


def expire(req: AccessRequest, now: float) -> AccessRequest | None:
    """The request expired unreviewed, or None if it has not (or is not pending)."""
    if req.state != PENDING or now < req.expires:
        return None
    return dataclasses.replace(req, state=EXPIRED, closed=now, closed_by="periscoped")


def cancel(req: AccessRequest, who: Principal, now: float) -> AccessRequest:
    """Only the requester cancels: a pending request, or an approved one (its grant ends)."""
    if not _same_person(req, who):
        raise Denied(f"only {req.requester} may cancel request {req.id}")
    if req.state not in (PENDING, APPROVED):
        raise BadRequest(f"request {req.id} is {req.state}: nothing to cancel")
    return dataclasses.replace(req, state=CANCELLED, closed=now, closed_by=who.user)


def revoke(req: AccessRequest, by: str, now: float) -> AccessRequest:
    """Its grant was revoked: the request ends as revoked."""
    return dataclasses.replace(req, state=REVOKED, closed=now, closed_by=by)


# -- the store ------------------------------------------------------------------------------
class RequestStore:
    """Every request, in memory and written through to `path` on each change (the daemon is
    the only writer). Finished requests are pruned KEEP_DONE_S after they closed."""

    def __init__(self, path: str, ttl: float = 86400) -> None:
        self.path, self.ttl = path, ttl
        self._lock = threading.RLock()
        self._reqs: dict[str, AccessRequest] = self._read()
        self._listeners: list[Callable[[AccessRequest], None]] = []

    def _read(self) -> dict[str, AccessRequest]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise RequestsError(f"requests {self.path}: cannot read: {err.strerror}") from err
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"expected an object with version {FORMAT_VERSION}")
            if not isinstance(doc.get("requests"), list):
                raise ValueError("'requests' must be a list")
            reqs = [AccessRequest.from_json(r) for r in doc["requests"]]
        except (ValueError, TypeError, KeyError, SelectorError) as err:
            raise RequestsError(f"requests {self.path}: corrupt file: {err}") from err
        return {r.id: r for r in reqs}

    def _write(self, reqs: dict[str, AccessRequest], now: float) -> None:
        kept = {k: r for k, r in reqs.items()
                if r.closed is None or now - r.closed < KEEP_DONE_S}
        doc = {"version": FORMAT_VERSION,
               "requests": [r.to_json() for r in sorted(kept.values(), key=lambda r: r.created)]}
        try:
            write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        except OSError as err:
            raise RequestsError(f"requests {self.path}: cannot write: {err.strerror}") from err
        self._reqs = kept

    def subscribe(self, fn: Callable[[AccessRequest], None]) -> Callable[[], None]:
        """Call fn(request) after each change (any thread); returns the unsubscriber."""
        with self._lock:
            self._listeners.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)
        return unsubscribe

    def _changed(self, req: AccessRequest) -> None:
        for fn in list(self._listeners):
            fn(req)

    def new(self, who: Principal, role: str, target: str, level: Level, duration: float,
            reason: str, approvals: int, now: float | None = None, *,
            state: str = PENDING) -> AccessRequest:
        """File a request (validated) and persist it."""
        now = time.time() if now is None else now
        if not reason.strip():
            raise BadRequest("a request needs a reason (a ticket id): --reason TEXT")
        if not duration > 0:
            raise BadRequest("the requested duration must be positive")
        with self._lock:
            mine = [r for r in self._reqs.values() if r.uid == who.uid and r.state == PENDING
                    and r.expires > now]
            if len(mine) >= MAX_PENDING_PER_USER:
                raise BadRequest(f"{who.describe()} already has {len(mine)} pending requests "
                                 "(cancel some first)")
            rid = secrets.token_hex(4)
            while rid in self._reqs:
                rid = secrets.token_hex(4)
            req = AccessRequest(rid, who.user, who.uid, role, str(parse_selector(target)),
                                level, float(duration), reason.strip(), now, now + self.ttl,
                                approvals, state)
            self._write({**self._reqs, rid: req}, now)
        self._changed(req)
        return req

    def get(self, rid: str) -> AccessRequest:
        with self._lock:
            req = self._reqs.get(rid)
        if req is None:
            raise NotFound(f"no request {rid[:16]!r}")
        return req

    def list(self) -> builtins.list[AccessRequest]:
        with self._lock:
            return sorted(self._reqs.values(), key=lambda r: r.created)

    def update(self, rid: str, fn: Callable[[AccessRequest], AccessRequest],
               now: float | None = None) -> AccessRequest:
        """Apply fn to the request under the store lock and persist the result. fn may raise
        (nothing is written then) and may do other work that must not race (make a grant)."""
        now = time.time() if now is None else now
        with self._lock:
            new = fn(self.get(rid))
            self._write({**self._reqs, rid: new}, now)
        self._changed(new)
        return new

    def by_grant(self, grant_id: str) -> AccessRequest | None:
        with self._lock:
            return next((r for r in self._reqs.values() if r.grant == grant_id), None)
