"""State shared by the sections of one snapshot: the process dir, redaction, caches."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.errors import PeriscopeError
from collector.snapshot.parse import Mapping
from collector.snapshot.procdir import ProcDir


class SectionSkipped(PeriscopeError):
    """A section needs another section that failed."""


class TextRedactor(Protocol):
    """What a snapshot needs from redact.Redactor (a fake in unit tests may stand in)."""

    def redact_text(self, text: str, protocol: str | None = None) -> str: ...

    def redact_field(self, name: str, value: str) -> str: ...


def clean(text: str) -> str:
    """A string JSON can carry: bytes that were not UTF-8 (kept as surrogate escapes while
    redacting) become visible \\xNN escapes instead of breaking the encoder."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Ctx:
    """One snapshot in progress. Sections read through `proc` and put every string that
    came from the process through `text()` (redacted, then made JSON-safe)."""

    proc: ProcDir
    redactor: TextRedactor
    clk_tck: int = field(default_factory=lambda: os.sysconf("SC_CLK_TCK"))
    # filled by earlier sections for later ones
    start_time: float | None = None
    socket_fds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # inode -> fds
    fds_read: bool = False
    maps: list[Mapping] | None = None
    _cache: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def procfs(self) -> str:
        return self.proc.procfs

    def text(self, raw: str) -> str:
        """A path, argv line or name from the process, redacted. Cached: the same library
        path or thread name recurs hundreds of times in one snapshot."""
        hit = self._cache.get(raw)
        if hit is None:
            hit = clean(self.redactor.redact_text(raw))
            if len(raw) <= 512 and len(self._cache) < 65536:  # bounded: hostile paths
                self._cache[raw] = hit
        return hit

    def named(self, name: str, value: str) -> str:
        """A named value (an environment variable): redact_field, then JSON-safe."""
        return clean(self.redactor.redact_field(name, value))

    def seconds(self, ticks: int) -> float:
        return round(ticks / self.clk_tck, 3)
