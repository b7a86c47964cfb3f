"""Which hot-path pieces run as C (built at install) and which as their Python twins."""

from __future__ import annotations

from collector.capture import iobuild
from probes import ringbuf


def native() -> dict[str, str]:
    """{"ring_walk": "c"|"python", "io_build": "c"|"python"}, for status and the start log."""
    return {"ring_walk": ringbuf.WALK_IMPL, "io_build": iobuild.IMPL}
