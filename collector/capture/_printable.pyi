"""Types of the C twin of collector/capture/events.printable (collector/capture/_printable.c)."""

from collections.abc import Callable

def configure(reference: Callable[[bytes], str], escapes: dict[int, str],
              other_controls: bytes, /) -> None: ...
def printable(data: bytes, /) -> str: ...
