"""Compiled rule tables: RE2 prefilter, Python regex at anchors, validators, placeholders, counters.

A RuleSet is built once from the rules and options; it owns the placeholders and the hit
counters. RuleSet.table(protocol) is the Table for one protocol: the rules enabled for it
behind one RE2 Set. One-shot redaction and every Stream go through the same Table methods:
`match` (the prefilter), `lines` (a run of single-line segments), `piece` (one Segmenter
piece) and `count` (an engine counter).
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Sequence

from redact import re2compat
from redact.lines import Memo, recall, remember, split_lines
from redact.protocols import resp_redact
from redact.rules import PROTOCOLS, Rule
from redact.segment import EMIT, JOINED, LINES, MASK, RESP, TRIGGER_SRC, Piece

_PLACEHOLDER = re.compile(rb"\[REDACTED:[a-z0-9_]+(?::[0-9a-f]{12})?\]")
# Counter ids for what the engine masks itself (not regex rules).
ENGINE_COUNTERS = ("redis_resp_credential", "gap", "oversize", "engine_error", "secret_name")

# Redacted lines a Table remembers, by hash: keep-alive traffic repeats its header lines
# (Host, Cookie, Authorization...) request after request. Cleared when either bound is hit.
# A run of lines longer than LINE_MEMO_RUN (a body, mostly unique) is scanned whole instead:
# cutting it into lines to look them up costs more than the memo saves there.
LINE_MEMO = 4096
LINE_MEMO_BYTES = 1 << 20
LINE_MEMO_RUN = 2048

Span = tuple[int, int, int, str, str]  # start, end, priority, rule id, placeholder type
Hits = list[int] | tuple[int, ...]  # indices into Table.rules (and Table.trigger) that hit


class RuleSet:
    """The rules compiled for every protocol, their placeholders and their hit counters.
    Thread-safe for concurrent readers; counters assume one writer."""

    def __init__(
        self, rules: Sequence[Rule], *, options: frozenset[str] = frozenset(),
        key: bytes | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self._key = key or None
        self._counts: dict[str, int] = {r.id: 0 for r in self.rules}
        self._counts.update({name: 0 for name in ENGINE_COUNTERS})
        # None: unknown traffic, every rule runs (each protocol's rules are anchored on
        # its own syntax, so this is how unknown traffic is sniffed).
        self.tables: dict[str | None, Table] = {
            p: Table(p, tuple(r for r in self.rules if r.enabled(p, options)),
                     counts=self._counts, placeholder=self.placeholder)
            for p in (None, *sorted(PROTOCOLS))
        }

    def table(self, protocol: str | None) -> Table:
        """The table for a protocol; an unknown name is unknown traffic (every rule)."""
        return self.tables.get(protocol) or self.tables[None]

    def placeholder(self, kind: str, value: bytes) -> bytes:
        """`[REDACTED:kind]`, or with a key `[REDACTED:kind:<first 12 hex of HMAC-SHA256>]`."""
        if self._key is None or kind in ("gap", "oversize", "error"):
            return b"[REDACTED:%s]" % kind.encode()
        digest = hmac.new(self._key, kind.encode() + b"\x00" + value, hashlib.sha256)
        return b"[REDACTED:%s:%s]" % (kind.encode(), digest.hexdigest()[:12].encode())

    def count(self, name: str, n: int = 1) -> None:
        """Add n to a counter (a rule id or one of ENGINE_COUNTERS)."""
        self._counts[name] = self._counts.get(name, 0) + n

    def counters(self) -> dict[str, int]:
        """Hits per rule id (plus engine counters). A copy; safe to read from another thread."""
        return dict(self._counts)


class Table:
    """The rules enabled for one protocol behind one RE2 Set (last index: the TRIGGER)."""

    __slots__ = ("_anchors", "_counts", "_lines", "_lines_bytes", "_placeholder", "match",
                 "protocol", "rules", "trigger")

    def __init__(
        self, protocol: str | None, rules: tuple[Rule, ...], *, counts: dict[str, int],
        placeholder: Callable[[str, bytes], bytes],
    ) -> None:
        self.protocol = protocol
        self.rules = rules
        # match(text) -> indices of the hints that hit; index `trigger` is the TRIGGER.
        self.match = re2compat.set_matcher(
            [*(r.hint.encode("latin-1") for r in rules), TRIGGER_SRC])
        self.trigger = len(rules)
        self._anchors = tuple(None if r.anchor is None else re2compat.searcher(r.anchor)
                              for r in rules)
        self._placeholder = placeholder
        self._counts = counts  # the RuleSet's: one dict for every table
        # hash(line) -> (the line redacted, the rule ids of its placeholders). Keyed by hash,
        # so no raw line is kept: a value holds only what redaction already let out.
        self._lines: Memo = {}
        self._lines_bytes = 0

    def count(self, name: str, n: int = 1) -> None:
        """Add n to a counter (a rule id or one of ENGINE_COUNTERS)."""
        self._counts[name] = self._counts.get(name, 0) + n

    def lines(self, text: bytes, hits: Hits | None = None) -> bytes:
        """Redact a run of whole lines, each one an independent segment. `hits`: match() of
        text or of a text that starts with it (a superset), None to match here.

        A line redacts the same way wherever it appears, so in a short run each line is
        redacted once and then remembered (counters still count every placeholder emitted).
        The lines not remembered are matched and scanned together: one pass over them, not
        one RE2 Set per line."""
        if hits is None:
            hits = self.match(text)
        if len(hits) == (self.trigger in hits):
            return text
        if len(text) > LINE_MEMO_RUN:
            return b"".join(got[0] for got in self._redact_lines([text], hits))
        got = recall(text, self._lines, self._counts)
        if isinstance(got, bytes):
            return got  # every line remembered (and counted)
        out, todo, fresh, keys = got
        return self._remember(fresh, keys, todo, out, hits)

    def _remember(self, fresh: list[bytes], keys: list[int], todo: list[int],
                  out: list[bytes], hits: Hits) -> bytes:
        """Redact the lines not remembered (fresh, whole) into out[todo[j]], remember each
        under keys[j], and return the run (out) joined."""
        if len(todo) < len(out):
            # The run's hits may be the remembered lines' (a cookie header, say) while the
            # new ones (a request line, a request id) are clean: one Set match of the new
            # lines (~1 µs) instead of an anchored scan per rule of the run (~1-3 µs each).
            hits = self.match(fresh[0] if len(fresh) == 1 else b"".join(fresh))
        if len(hits) == (self.trigger in hits):
            done: list[tuple[bytes, tuple[str, ...]]] = [(ln, ()) for ln in fresh]
        else:
            done = self._redact_lines(fresh, hits)
        joined, self._lines_bytes = remember(self._lines, out, todo, keys, done, LINE_MEMO,
                                             LINE_MEMO_BYTES, self._lines_bytes)
        return joined

    def _redact_lines(
        self, items: list[bytes], hits: Hits,
    ) -> list[tuple[bytes, tuple[str, ...]]]:
        """Each item (one or more whole lines) redacted, and the rule id of each placeholder
        put in it (counted here). `hits`: a superset of match() of every item."""
        text = items[0] if len(items) == 1 else b"".join(items)
        # local: the RE2 anchors, so a long text costs per hit, not per byte
        spans = self._scan(text, hits, True)
        if spans is None:  # an unanchored match crossed a line end: each line on its own
            return [self._line_by_line(item) for item in items]
        spans_of: list[list[Span]] = [[] for _ in items]
        starts = list(itertools.accumulate((len(it) for it in items[:-1]), initial=0))
        for sp in spans:  # a span never crosses a line end here: shift it into its item
            k = bisect.bisect_right(starts, sp[0]) - 1
            s, e, prio, rid, kind = sp
            spans_of[k].append((s - starts[k], e - starts[k], prio, rid, kind))
        out = []
        for item, sps in zip(items, spans_of, strict=True):
            counted: list[str] = []
            out.append((self._apply(item, sps, counted), tuple(counted)))
        return out

    def _line_by_line(self, item: bytes) -> tuple[bytes, tuple[str, ...]]:
        """Each line of item matched and redacted alone."""
        counted: list[str] = []
        out = b"".join(self._apply(ln, self._scan(ln, None, False) or [], counted)
                       for ln in split_lines(item))
        return out, tuple(counted)

    def piece(self, piece: Piece) -> bytes:
        """Redact one Segmenter piece."""
        kind, data = piece
        if kind == EMIT:
            return data
        if kind == MASK:
            name = data.decode()
            self._counts[name] += 1
            return self._placeholder(name, b"")
        if kind == LINES:
            return self.lines(data)
        if kind == RESP:
            data, n = resp_redact(data, self._placeholder)
            self._counts["redis_resp_credential"] += n
        assert kind in (JOINED, RESP)
        return self._apply(data, self._scan(data, None, False) or [])

    def _scan(self, text: bytes, hits: Hits | None, local: bool) -> list[Span] | None:
        """Validated spans in text, or None if `local` and a match crossed a line end."""
        if hits is None:
            hits = self.match(text)
        spans: list[Span] = []
        rules = self.rules
        anchors = self._anchors
        for i in hits:
            if i == self.trigger:
                continue
            rule = rules[i]
            find = anchors[i]
            if local and find is not None:
                # Try the pattern only where the RE2 anchor says a match may start, never
                # past the end of that line: cost scales with hits, not with payload size.
                n = len(text)
                at = 0
                while at < n:
                    found = find(text, at, n)
                    s0, e0 = found[0]
                    if s0 < 0:
                        break
                    pos = found[rule.anchor_group][0]
                    nl, nul = text.find(b"\n", pos), text.find(b"\0", pos)
                    end = min(nl if nl >= 0 else n, nul if nul >= 0 else n)
                    m = rule.pattern.match(text, pos, end + 1)
                    if m is None:
                        # The pattern may still start inside this anchor's text
                        # ("=1mongodb+srv://": not at "mongodb", at "srv").
                        at = pos + 1
                        continue
                    _collect(text, rule, m, spans)
                    # Anchors inside a match are not new starts (but the line end still is:
                    # some anchors begin with the terminator before a line).
                    at = max(e0 if e0 > s0 else s0 + 1, min(m.end(), end))
                continue
            for m in rule.pattern.finditer(text):
                if local and _crosses(text, m.start(), m.end()):
                    return None
                _collect(text, rule, m, spans)
        return spans

    def _apply(self, text: bytes, spans: list[Span], counted: list[str] | None = None) -> bytes:
        """Replace merged spans with placeholders; one counter hit per placeholder (its rule
        id also appended to `counted`, if given)."""
        if not spans:
            return text
        if b"[REDACTED:" in text:
            spans = _minus_placeholders(text, spans)
        spans.sort(key=lambda s: (s[0], s[2], -s[1]))
        out = bytearray()
        last = 0
        cur: list[int | str] | None = None
        counts = self._counts
        placeholder = self._placeholder
        for start, end, _prio, rid, kind in spans:
            if cur is not None and start < int(cur[1]):
                cur[1] = max(int(cur[1]), end)
                continue
            counts[rid] = counts.get(rid, 0) + 1  # one hit per emitted placeholder
            if counted is not None:
                counted.append(rid)
            if cur is not None:
                out += placeholder(str(cur[2]), text[int(cur[0]) : int(cur[1])])
                last = int(cur[1])
            out += text[last:start]
            cur = [start, end, kind]
        if cur is not None:
            out += placeholder(str(cur[2]), text[int(cur[0]) : int(cur[1])])
            last = int(cur[1])
        out += text[last:]
        return bytes(out)


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
