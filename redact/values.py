"""Validators for field values (not formats): parameters vs secrets, ACL rules, Basic auth,
SQL INSERT column mapping. Same contract as redact.detectors: bytes in, spans out."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

Spans = Sequence[tuple[int, int]]


def _all(value: bytes, ok: bool) -> Spans:
    return [(0, len(value))] if ok and value else []


_NOT_A_SECRET = re.compile(
    rb"""(?ix)
    (?: \$\d+ | \$[a-z_]\w* | \? | :[a-z_]\w* | @[a-z_]\w* | %s | %\(\w+\)s   # parameters
      | \$\{[^}]*\} | \{\{.*\}\} | <[^>]*>                       # templates, <placeholders>
      | null | none | nil | true | false | undefined | \*+ | x{3,} | -+ | \.{3,} | yes | no
      | on | off | empty | missing | required | optional | redacted | masked | hidden | invalid
      | [\s,;:.]+
      | bearer | basic | digest | token | negotiate | ntlm | aws4-hmac-sha256
      | \[REDACTED:[a-z0-9_]+(?::[0-9a-f]{12})?\] )\Z""",
)


def secret_value(value: bytes) -> Spans:
    """Value of a secret-named field: anything but parameters, templates, null and masks."""
    return _all(value, _NOT_A_SECRET.match(value) is None)


_ACL_TOKEN = re.compile(rb"(?<![^ \t])[<>#!]([^ \t\r\n\x00]+)")


def acl_secrets(value: bytes) -> Spans:
    """`ACL SETUSER` rule list: mask the password/hash of every >pass <pass #hash !hash."""
    return [(m.start(1), m.end(1)) for m in _ACL_TOKEN.finditer(value)]


def basic_auth(value: bytes) -> Spans:
    """`Basic <b64>` outside a header: only if it decodes to `user:pass`."""
    try:
        decoded = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
    except (ValueError, binascii.Error):
        return []
    return _all(value, b":" in decoded)


_SECRET_COLUMN = re.compile(
    rb"(?i)(?:passw(?:or)?d|passphrase|pwd|secret|token|api_?key|apikey|(?:access|private|secret"
    rb"|signing|encryption|master|client)_?key|credentials?|ssn|cvv2?|cvc|card_?number|pan|pin)"
    rb"(?:_?(?:confirm(?:ation)?|again|\d))?\Z"
)
_SQL_ITEM = re.compile(rb"\s*('(?:[^'\\]|''|\\.)*'|[^,']*)\s*(?:,|\Z)", re.S)


def sql_insert_values(value: bytes) -> Spans:
    """`(cols) VALUES (vals)`: the string literals that land in secret-named columns."""
    close = value.find(b")")
    cols = [c.strip().strip(b"`\"[]").rsplit(b".", 1)[-1] for c in value[1:close].split(b",")]
    start = value.find(b"(", close + 1) + 1
    body_end = len(value) - 1  # the closing parenthesis of VALUES (...)
    out: list[tuple[int, int]] = []
    pos = start
    for col in cols:
        m = _SQL_ITEM.match(value, pos, body_end)
        if m is None or pos >= body_end:
            break
        a, b = m.span(1)
        if _SECRET_COLUMN.search(col) and value[a : a + 1] == b"'" and b - a > 2:
            out.append((a, b))
        pos = m.end()
    return out
