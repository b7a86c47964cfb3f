"""Redactor and Stream: RE2 prefilter, Python regex on candidates, validators on hits only."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re2

from redact.protocols import resp_redact
from redact.rules import BUILTIN, PROTOCOLS, Rule, load_rules, secret_name_pattern
from redact.segment import CAP, EMIT, JOINED, LINES, MASK, RESP, TRIGGER_SRC, Piece
from redact.stream import Stream

_PLACEHOLDER = re.compile(rb"\[REDACTED:[a-z0-9_]+(?::[0-9a-f]{12})?\]")
_LINE = re.compile(rb"[^\n\x00]*[\n\x00]|[^\n\x00]+")
_SET_MEM = 64 << 20  # RE2 set memory: a DFA that runs out of memory is rebuilt, slowly
_UNANCHORED = re2._Anchor.UNANCHORED
# Counter ids for what the engine masks itself (not regex rules).
ENGINE_COUNTERS = ("redis_resp_credential", "gap", "oversize", "engine_error", "secret_name")
_SECRET_NAME = secret_name_pattern()
FIELD_MAX = 4096  # characters of one field value kept by redact_field (the rest is cut)
_FIELD_DEPTH = 8  # nesting redact_fields follows; deeper values are masked whole

Span = tuple[int, int, int, str, str]  # start, end, priority, rule id, placeholder type


@dataclass(frozen=True)
class _Table:
    """The rules enabled for one protocol, behind one RE2 set (last index: the TRIGGER)."""

    rules: tuple[Rule, ...]
    match: Callable[[bytes], list[int]]  # the raw RE2 Set call: indices of hints that hit
    trigger: int


class Redactor:
    """Compiled rule set. Thread-safe for concurrent readers; counters assume one writer."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        pseudonymize_key: bytes | str | None = None,
        redact_ips: bool = False,
        sql_string_literals: bool = False,
    ) -> None:
        self._rules = tuple(rules)
        self._options = frozenset(
            name for name, on in (("ips", redact_ips), ("sql_literals", sql_string_literals)) if on
        )
        key = pseudonymize_key.encode() if isinstance(pseudonymize_key, str) else pseudonymize_key
        self._key = key or None
        self._counts: dict[str, int] = {r.id: 0 for r in self._rules}
        self._counts.update({name: 0 for name in ENGINE_COUNTERS})
        self._tables = {p: self._compile(p) for p in (None, *sorted(PROTOCOLS))}

    @classmethod
    def default(
        cls,
        pseudonymize_key: bytes | str | None = None,
        *,
        redact_ips: bool = False,
        sql_string_literals: bool = False,
    ) -> Redactor:
        """The built-in rule set (redact/rules.toml)."""
        return cls.from_file(
            BUILTIN,
            pseudonymize_key=pseudonymize_key,
            redact_ips=redact_ips,
            sql_string_literals=sql_string_literals,
        )

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        pseudonymize_key: bytes | str | None = None,
        redact_ips: bool = False,
        sql_string_literals: bool = False,
    ) -> Redactor:
        """Rules from a TOML file; raises RuleError naming the first bad rule."""
        return cls(
            load_rules(path),
            pseudonymize_key=pseudonymize_key,
            redact_ips=redact_ips,
            sql_string_literals=sql_string_literals,
        )

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def counters(self) -> dict[str, int]:
        """Hits per rule id (plus engine counters). A copy; safe to read from another thread."""
        return dict(self._counts)

    def _compile(self, protocol: str | None) -> _Table:
        rules = tuple(r for r in self._rules if r.enabled(protocol, self._options))
        opts = re2.Options()
        opts.max_mem = _SET_MEM
        hints = re2.Set.SearchSet(opts)
        for r in rules:
            hints.Add(r.hint.encode("latin-1"))
        hints.Add(TRIGGER_SRC)
        hints.Compile()
        return _Table(rules=rules, match=hints._set.Match, trigger=len(rules))

    def _table(self, protocol: str | None) -> _Table:
        # An unknown protocol name is treated as unknown traffic: every rule runs.
        return self._tables.get(protocol, self._tables[None])

    # ------------------------------------------------------------------ public API
    def redact(self, data: bytes, protocol: str | None = None) -> bytes:
        """Redact one complete payload. Never raises; on an internal error it masks everything."""
        try:
            if type(data) is not bytes:
                data = bytes(data)
            table = self._tables.get(protocol) or self._tables[None]
            if len(data) <= CAP:
                hits = table.match(data)
                if not hits:
                    return data
                if table.trigger not in hits:
                    return self._lines(data, table, hits)
            stream = Stream(self, protocol)
            stream._segmenter()  # the stream's line fast path would only scan again and hand over
            return stream.feed(data) + stream.close()
        except Exception:  # the engine must never raise or leak; fail closed and count it
            self._counts["engine_error"] += 1
            return b"[REDACTED:error]"

    def redact_text(self, text: str, protocol: str | None = None) -> str:
        """redact() for text (a path, an argv line, a query): UTF-8 in and out, bytes that
        are not UTF-8 kept as surrogate escapes."""
        raw = text.encode("utf-8", "surrogateescape")
        return self.redact(raw, protocol).decode("utf-8", "surrogateescape")

    def redact_field(self, name: str, value: str) -> str:
        """One named value (an environment variable, an audit argument, a header): masked
        whole when the name marks a secret (the payload rules' `secret_key`, so DB_PASSWORD
        and clientSecret are), else redacted like payload text. Cut at FIELD_MAX chars."""
        if _SECRET_NAME.search(name) and value:
            self._counts["secret_name"] += 1
            return self.placeholder("secret", value.encode("utf-8", "surrogateescape")).decode()
        return self.redact_text(value[:FIELD_MAX])

    def redact_fields(self, value: Any, _name: str = "", _depth: int = 0) -> Any:
        """A JSON-like value (dicts, lists, strings, numbers) with every string redacted by
        redact_field under the name of the key that holds it. Never raises."""
        if _depth > _FIELD_DEPTH:
            return self.placeholder("oversize", b"").decode()
        if isinstance(value, Mapping):
            return {str(k): self.redact_fields(v, str(k), _depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_fields(v, _name, _depth + 1) for v in value]
        if isinstance(value, str):
            return self.redact_field(_name, value)
        if isinstance(value, (bytes, bytearray)):
            return f"[{len(value)} bytes]"
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.redact_field(_name, str(value))

    def stream(self, protocol: str | None = None) -> Stream:
        """One direction of one connection."""
        return Stream(self, protocol)

    # ------------------------------------------------------------------ internals
    def placeholder(self, kind: str, value: bytes) -> bytes:
        if self._key is None or kind in ("gap", "oversize", "error"):
            return b"[REDACTED:%s]" % kind.encode()
        digest = hmac.new(self._key, kind.encode() + b"\x00" + value, hashlib.sha256)
        return b"[REDACTED:%s:%s]" % (kind.encode(), digest.hexdigest()[:12].encode())

    def _scan(
        self, text: bytes, table: _Table, hits: list[int] | tuple[int, ...] | None, local: bool
    ) -> list[Span] | None:
        """Validated spans in text, or None if `local` and a match crossed a line end."""
        if hits is None:
            hits = table.match(text)
        spans: list[Span] = []
        for i in hits:
            if i == table.trigger:
                continue
            rule = table.rules[i]
            if local and rule.anchor is not None:
                # Try the pattern only where the RE2 anchor says a match may start, never
                # past the end of that line: cost scales with hits, not with payload size.
                n = len(text)
                at = 0
                find = rule.anchor._regexp.Match  # the raw RE2 call: no generator, no objects
                while at < n:
                    found = find(_UNANCHORED, text, at, n)
                    s0, e0 = found[0]
                    if s0 < 0:
                        break
                    pos = found[rule.anchor_group][0]
                    nl, nul = text.find(b"\n", pos), text.find(b"\0", pos)
                    end = min(nl if nl >= 0 else n, nul if nul >= 0 else n)
                    m = rule.pattern.match(text, pos, end + 1)
                    at = e0 if e0 > s0 else s0 + 1
                    if m is not None:
                        _collect(text, rule, m, spans)
                        # Anchors inside a match are not new starts (but the line end still
                        # is: some anchors begin with the terminator before a line).
                        at = max(at, min(m.end(), end))
                continue
            for m in rule.pattern.finditer(text):
                if local and _crosses(text, m.start(), m.end()):
                    return None
                _collect(text, rule, m, spans)
        return spans

    def _lines(self, text: bytes, table: _Table, hits: list[int] | tuple[int, ...] | None) -> bytes:
        """Redact a run of whole lines, each one an independent segment."""
        if hits is not None and len(hits) == (table.trigger in hits):
            return text
        spans = self._scan(text, table, hits, local=True)
        if spans is not None:
            return self._apply(text, spans)
        return b"".join(self._apply(ln, self._scan(ln, table, None, False) or [])
                        for ln in _LINE.findall(text))

    def _apply(self, text: bytes, spans: list[Span]) -> bytes:
        if not spans:
            return text
        if b"[REDACTED:" in text:
            spans = _minus_placeholders(text, spans)
        spans.sort(key=lambda s: (s[0], s[2], -s[1]))
        out = bytearray()
        last = 0
        cur: list[int | str] | None = None
        counts = self._counts
        for start, end, _prio, rid, kind in spans:
            if cur is not None and start < int(cur[1]):
                cur[1] = max(int(cur[1]), end)
                continue
            counts[rid] = counts.get(rid, 0) + 1  # one hit per emitted placeholder
            if cur is not None:
                out += self.placeholder(str(cur[2]), text[int(cur[0]) : int(cur[1])])
                last = int(cur[1])
            out += text[last:start]
            cur = [start, end, kind]
        if cur is not None:
            out += self.placeholder(str(cur[2]), text[int(cur[0]) : int(cur[1])])
            last = int(cur[1])
        out += text[last:]
        return bytes(out)

    def piece(self, piece: Piece, protocol: str | None) -> bytes:
        """Redact one segmenter piece."""
        kind, data = piece
        if kind == EMIT:
            return data
        if kind == MASK:
            name = data.decode()
            self._counts[name] += 1
            return self.placeholder(name, b"")
        table = self._table(protocol)
        if kind == LINES:
            return self._lines(data, table, None)
        if kind == RESP:
            data, n = resp_redact(data, self.placeholder)
            self._counts["redis_resp_credential"] += n
        assert kind in (JOINED, RESP)
        return self._apply(data, self._scan(data, table, None, False) or [])


def _collect(text: bytes, rule: Rule, m: re.Match[bytes], spans: list[Span]) -> None:
    """Validated spans of one pattern match (the first capture group that took part)."""
    gs, ge = m.span()
    if rule.groups:
        for g in rule.groups:
            if m.start(g) >= 0:
                gs, ge = m.span(g)
                break
        else:
            return
    if ge <= gs:
        return
    found = rule.validator(text[gs:ge]) if rule.validator else [(0, ge - gs)]
    for a, b in found:
        if b > a:
            spans.append((gs + a, gs + b, rule.priority, rule.id, rule.kind))


def _crosses(text: bytes, start: int, end: int) -> bool:
    """A match that contains a line end before its last byte spans two segments."""
    return text.find(b"\n", start, end - 1) >= 0 or text.find(b"\0", start, end - 1) >= 0


def _minus_placeholders(text: bytes, spans: list[Span]) -> list[Span]:
    """Keep placeholders already in the text as they are (idempotence): cut them out of spans."""
    holes = [m.span() for m in _PLACEHOLDER.finditer(text)]
    if not holes:
        return spans
    out: list[Span] = []
    for s, e, prio, rid, kind in spans:
        pieces = [(s, e)]
        for hs, he in holes:
            if he <= s or hs >= e:
                continue
            nxt = []
            for a, b in pieces:
                if a < hs:
                    nxt.append((a, min(b, hs)))
                if b > he:
                    nxt.append((max(a, he), b))
            pieces = nxt
        out += [(a, b, prio, rid, kind) for a, b in pieces if b > a]
    return out
