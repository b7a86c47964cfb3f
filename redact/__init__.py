"""Redaction engine: every payload byte passes through here before it leaves the decode buffer.

    from redact import Redactor
    r = Redactor.default()
    r.redact(b"Authorization: Bearer abc.def.ghi", protocol="http")
    s = r.stream("redis"); out = s.feed(chunk) + s.close()

Placeholders are `[REDACTED:<type>]` (or `[REDACTED:<type>:<hmac12>]` with a pseudonymize key);
see docs/redaction.md for the list.
"""

from __future__ import annotations

from redact.engine import Redactor, Stream
from redact.rules import Rule, RuleError

__all__ = ["Redactor", "Rule", "RuleError", "Stream"]
