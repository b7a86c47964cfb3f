"""Types of the C twin of collector/capture/iobuild.io_event (collector/capture/_iobuild.c)."""

from collections.abc import Callable
from typing import Any

def configure(fields: dict[str, tuple[int, int]], hdr_size: int, version: int, op_syscall: int,
              op_tls: int, f_data_out: int, f_ciphertext: int,
              io: dict[int, tuple[str, str, bool]], errnames: dict[int, str],
              fallback: Callable[[bytes, int], Any], /) -> None: ...
def build(raw: bytes, offset_us: int, /) -> tuple[dict[str, Any], int, int, int | str, str,
                                                  int, int, int] | None: ...
