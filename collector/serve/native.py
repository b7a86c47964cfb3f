"""Which hot-path pieces run as C (built at install) and which as their Python twins, and
whether the L7 parsers run compiled by mypyc or from their sources."""

from __future__ import annotations

from types import FunctionType

from collector.capture import events, iobuild
from collector.l7 import base, http
from collector.store import blocks
from probes import ringbuf
from redact import lines, segment


def native() -> dict[str, str]:
    """{"ring_walk", "io_build", "printable", "block_tally", "line_memo", "drop_tail",
    "http_headers"}
    -> "c" | "python", and "l7_parsers" -> "mypyc" | "python", for status and the start
    log. (A compiled class's methods are not Python functions.)"""
    return {"ring_walk": ringbuf.WALK_IMPL, "io_build": iobuild.IMPL,
            "printable": events.PRINTABLE_IMPL,
            "block_tally": "python" if blocks._tally is None else "c",
            "line_memo": lines.MEMO_IMPL, "drop_tail": segment.DROP_IMPL,
            "http_headers": http.HEADERS_IMPL,
            "l7_parsers": "python" if isinstance(base.Parser.feed, FunctionType) else "mypyc"}
