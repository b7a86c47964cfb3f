"""Redactor: the public face of redaction (construction, options, one-shot, named values).

The rules, placeholders and counters live in redact/table.py; streams in redact/stream.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from redact.rules import BUILTIN, Rule, load_rules, secret_name_pattern
from redact.segment import CAP
from redact.stream import Stream, redact_once
from redact.table import RuleSet

_SECRET_NAME = secret_name_pattern()
FIELD_MAX = 4096  # characters of one field value kept by redact_field (the rest is cut)
_FIELD_DEPTH = 8  # nesting redact_fields follows; deeper values are masked whole


class Redactor:
    """Rules compiled once, with their options. Thread-safe for concurrent readers; counters
    assume one writer."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        pseudonymize_key: bytes | str | None = None,
        redact_ips: bool = False,
        sql_string_literals: bool = False,
    ) -> None:
        options = frozenset(
            name for name, on in (("ips", redact_ips), ("sql_literals", sql_string_literals)) if on
        )
        key = pseudonymize_key.encode() if isinstance(pseudonymize_key, str) else pseudonymize_key
        self._set = RuleSet(rules, options=options, key=key)
        self._tables = self._set.tables

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

    # ------------------------------------------------------------------ public API
    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._set.rules

    def counters(self) -> dict[str, int]:
        """Hits per rule id (plus engine counters). A copy; safe to read from another thread."""
        return self._set.counters()

    def redact(self, data: bytes, protocol: str | None = None) -> bytes:
        """Redact one complete payload. Never raises; on an internal error it masks everything."""
        try:
            if type(data) is not bytes:
                data = bytes(data)
            table = self._tables.get(protocol) or self._set.table(protocol)
            if len(data) <= CAP:
                hits = table.match(data)
                if not hits:
                    return data
                if table.trigger not in hits:
                    # No segment can span lines: every line is its own segment.
                    return table.lines(data, hits)
            return redact_once(table, data)
        except Exception:  # the engine must never raise or leak; fail closed and count it
            self._set.count("engine_error")
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
            self._set.count("secret_name")
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
        return Stream(self._tables.get(protocol) or self._set.table(protocol))

    def placeholder(self, kind: str, value: bytes) -> bytes:
        """The placeholder that replaces `value` of type `kind` (keyed when pseudonymizing)."""
        return self._set.placeholder(kind, value)
