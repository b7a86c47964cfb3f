"""L7 parsers: raw captured bytes per connection in, redacted request/response records out.

    from collector.l7 import L7Conn, Record
    conn = L7Conn(redactor.redact_text, role="client")   # or "server", or None (inferred)
    records = conn.feed("out", data, ts) + conn.gap("out", n, ts) + conn.close(ts)
    conn.datagram("out", data, ts)                       # DNS over UDP

Pure (no I/O, threads, bcc) and independent of the rest of collector/. Every string a
Record carries went through the redaction callback (record.Emitter); see docs/events.md.
"""

from __future__ import annotations

from collector.l7.conn import DETECT_BUDGET, L7Conn
from collector.l7.record import Record, Redact

__all__ = ["DETECT_BUDGET", "L7Conn", "Record", "Redact"]
