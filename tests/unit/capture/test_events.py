"""Event shaping: sockaddr, flags, errno, escaping, and the redaction boundary."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.capture import events
from collector.capture.events import (
    errno_name,
    open_flags,
    printable,
    printable_py,
    printable_reference,
    sockaddr,
)


def test_sockaddr_inet() -> None:
    raw = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8080) + socket.inet_aton(
        "10.1.2.3") + b"\0" * 8
    assert sockaddr(raw) == ("AF_INET", "10.1.2.3:8080")


def test_sockaddr_inet6() -> None:
    raw = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 443) + b"\0" * 4
           + socket.inet_pton(socket.AF_INET6, "::1") + b"\0" * 4)
    assert sockaddr(raw) == ("AF_INET6", "[::1]:443")


def test_sockaddr_unix_and_abstract() -> None:
    assert sockaddr(struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0") == ("AF_UNIX",
                                                                              "/run/x.sock")
    assert sockaddr(struct.pack("<H", socket.AF_UNIX) + b"\0abstract") == ("AF_UNIX", "@abstract")


@pytest.mark.parametrize("raw", [b"", b"\x02", b"\x02\x00\x01"])
def test_sockaddr_short_never_raises(raw: bytes) -> None:
    assert sockaddr(raw)[0].startswith("AF_") or sockaddr(raw)[0] == "unknown"


def test_open_flags() -> None:
    import os

    assert open_flags(os.O_WRONLY | os.O_CREAT | os.O_TRUNC) == "O_WRONLY|O_CREAT|O_TRUNC"
    assert open_flags(0) == "O_RDONLY"


def test_errno_name() -> None:
    assert errno_name(-2) == "ENOENT"
    assert errno_name(5) is None
    assert errno_name(-10000) is None


@pytest.mark.parametrize(("raw", "shown"), [
    (b"GET / HTTP/1.1\r\n", "GET / HTTP/1.1\\r\\n"),
    (b"\x00\xff", "\\x00\\xff"),
    (b"back\\slash", "back\\\\slash"),
    ("é€".encode(), "é€"),
])
def test_printable(raw: bytes, shown: str) -> None:
    assert printable(raw) == shown


# Pieces that reach every branch of printable(): text, CR/LF/tab, backslashes, other
# controls, multi-byte UTF-8, encoded surrogates and truncated sequences (undecodable).
_PIECES = st.sampled_from([b"a", b"GET /x", b"\r\n", b"\t", b"\\", b"\x00", b"\x1b[0m", b"\x7f",
                           "\u00e9".encode(), "\u20ac".encode(), "\U0001f600".encode(),
                           b"\xed\xa0\x80", b"\xe2\x82", b"\xff", b"\xc3"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PIECES, max_size=30).map(b"".join) | st.binary(max_size=300))
def test_printable_equals_the_reference_translate(raw: bytes) -> None:
    """The C twin (where built), the Python twin and the reference: one text."""
    assert printable(raw) == printable_py(raw) == printable_reference(raw)


def test_the_c_printable_is_the_one_in_use() -> None:
    assert events.PRINTABLE_IMPL == "c" and printable is not printable_py


@pytest.mark.parametrize("raw", [b"", b"x" * 15 + b"\x00", b"x" * 15 + b"\x00\x01",
                                 b"ok\x00" + "\u00e9".encode() + b"\xff",
                                 b"\\x00 is not a NUL\n"])
def test_printable_edges(raw: bytes) -> None:
    """The binary cut (one control byte in 16), a failed decode after escaping, an escape
    written out as text."""
    assert printable(raw) == printable_py(raw) == printable_reference(raw)
