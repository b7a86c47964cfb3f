"""Which hot-path pieces run as C (built at install) and which as their Python twins."""

from __future__ import annotations

from collector.capture import events, iobuild
from collector.l7 import http
from collector.store import blocks
from probes import ringbuf
from redact import lines


def native() -> dict[str, str]:
    """{"ring_walk", "io_build", "printable", "block_tally", "line_memo", "http_headers"}
    -> "c" | "python", for status and the start log."""
    return {"ring_walk": ringbuf.WALK_IMPL, "io_build": iobuild.IMPL,
            "printable": events.PRINTABLE_IMPL,
            "block_tally": "python" if blocks._tally is None else "c",
            "line_memo": lines.MEMO_IMPL, "http_headers": http.HEADERS_IMPL}
