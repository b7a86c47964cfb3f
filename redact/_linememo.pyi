"""Types of the C twin of redact/lines.recall and remember (redact/_linememo.c)."""

from collections.abc import Callable

from redact.lines import Memo, Missed

def configure(fallback: Callable[[bytes, Memo, dict[str, int]], bytes | Missed], /) -> None: ...
def recall(text: bytes, memo: Memo, counts: dict[str, int], /) -> bytes | Missed: ...
def remember(memo: Memo, out: list[bytes], todo: list[int], keys: list[int],
             done: list[tuple[bytes, tuple[str, ...]]], max_entries: int, max_bytes: int,
             held: int, /) -> tuple[bytes, int]: ...
