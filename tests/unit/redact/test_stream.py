"""Stream API: any split equals one-shot, no secret survives a split, gap and caps fail closed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from redact import Redactor, Stream
from redact.segment import CAP, Segmenter
from redact.table import RuleSet, Table

R = Redactor.default()

SECRETS = [
    b"4111 1111 1111 1111",
    b"123-45-6788",
    b"DE89370400440532013000",
    b"AKIAIOSFODNN7EXAMPLE",
    b"sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    b"alice@example.com",
    b"Zq9hunter2Xv",
]
# Payload fragments that carry one of SECRETS, in every protocol's shape.
CARRIERS = [
    b"Authorization: Bearer Zq9hunter2Xv\r\n",
    b"GET /?password=Zq9hunter2Xv&x=1 HTTP/1.1\r\n",
    b'{"client_secret": "Zq9hunter2Xv"}\n',
    b"Cookie: a=Zq9hunter2Xv\r\n",
    b"*2\r\n$4\r\nAUTH\r\n$12\r\nZq9hunter2Xv\r\n",
    b"AUTH Zq9hunter2Xv\r\n",
    b"Q\x00\x00\x00\x2aALTER USER x PASSWORD 'Zq9hunter2Xv'\x00",
    b"ALTER USER x WITH PASSWORD\n'Zq9hunter2Xv'\n",
    b"-----BEGIN PRIVATE KEY-----\nZq9hunter2Xv\n-----END PRIVATE KEY-----\n",
    b"card 4111 1111 1111 1111 ok\n",
    b"ssn 123-45-6788\x00",
    b"iban DE89370400440532013000\n",
    b"key AKIAIOSFODNN7EXAMPLE\n",
    b"stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc\n",
    b"mail alice@example.com\n",
    # a URL glued to a word: the pattern starts inside the anchor's match ("srv://")
    b"next=1mongodb+srv://app:Zq9hunter2Xv@db.example.net/x\n",
]
FILLER = [
    b"Host: api.example.com\r\n",
    b"\r\n",
    b"\n",
    b"\x00",
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    b"id 3f1c2d9e-6b1a-4c7e-9f0a-2b8d4e6f1a3c ",
    b"password reset page ",
    b"\xff\xfe binary \x01\x02",
    b"token",
    b"*",
    b"-----BEGIN",
]

payloads = st.lists(st.sampled_from(CARRIERS + FILLER), min_size=1, max_size=8).map(b"".join)
# Carriers start at a line start, as protocol messages do (inline Redis commands, headers).
lines = st.lists(st.sampled_from(CARRIERS + FILLER), min_size=1, max_size=8).map(b"\n".join)


def run_stream(data: bytes, cuts: list[int], protocol: str | None = None) -> bytes:
    s = R.stream(protocol)
    out = b""
    last = 0
    for c in sorted(cuts):
        out += s.feed(data[last:c])
        last = c
    return out + s.feed(data[last:]) + s.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, st.lists(st.integers(min_value=0, max_value=400), max_size=6),
       st.sampled_from([None, "http", "redis", "postgres"]))
def test_any_split_equals_one_shot(data: bytes, cuts: list[int], protocol: str | None) -> None:
    cuts = [min(c, len(data)) for c in cuts]
    one = R.redact(data, protocol)
    assert run_stream(data, cuts, protocol) == one


@settings(max_examples=200, deadline=None)
@given(lines, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_no_secret_survives_any_split(data: bytes, cuts: list[int]) -> None:
    out = run_stream(data, [min(c, len(data)) for c in cuts])
    for secret in SECRETS:
        if secret in data:
            assert secret not in out


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=4))
def test_any_split_equals_one_shot_on_bytes(data: bytes, cuts: list[int]) -> None:
    assert run_stream(data, [min(c, len(data)) for c in cuts]) == R.redact(data)


def test_every_byte_split_of_each_carrier() -> None:
    for carrier in CARRIERS:
        one = R.redact(carrier)
        for i in range(len(carrier) + 1):
            assert run_stream(carrier, [i]) == one
        assert run_stream(carrier, list(range(len(carrier)))) == one


def test_gap_masks_the_field_in_progress() -> None:
    s = R.stream("http")
    out = s.feed(b"Host: a\r\nAuthorization: Bearer Zq9hu")
    out += s.gap(100)
    out += s.feed(b"nter2Xv\r\nAccept: */*\r\n")
    out += s.close()
    assert out == b"Host: a\r\n[REDACTED:gap]\nAccept: */*\r\n"
    assert b"Zq9" not in out and b"nter2" not in out


def test_gap_in_resp_skips_to_the_next_command() -> None:
    for proto in ("redis", None):
        s = R.stream(proto)
        out = s.feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nAU")
        out += s.gap(4) + s.feed(b"\r\n$12\r\nZq9hunter2Xv\r\n*1\r\n$4\r\nPING\r\n") + s.close()
        assert b"Zq9hunter2Xv" not in out
        assert out.endswith(b"[REDACTED:gap]*1\r\n$4\r\nPING\r\n")


def test_gap_inside_a_pem_block_skips_to_its_end() -> None:
    s = R.stream()
    out = s.feed(b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    out += s.gap(10) + s.feed(b"BBBB\nCCCC\n-----END PRIVATE KEY-----\nok\n") + s.close()
    assert out == b"[REDACTED:gap]\nok\n"


def test_oversize_line_fails_closed() -> None:
    big = b"x" * (CAP + 10)
    data = b"head\n" + big + b"password=Zq9hunter2Xv\ntail\n"
    out = R.redact(data)
    assert out == b"head\n[REDACTED:oversize]\ntail\n"
    assert run_stream(data, [3, CAP // 2, CAP + 7]) == out


def test_held_tail_is_bounded() -> None:
    s = R.stream()
    for _ in range(40):
        s.feed(b"y" * 4096)
        assert s.pending <= CAP + 4096
    assert s.close() == b""


def test_close_twice_and_feed_after_close() -> None:
    s = R.stream()
    assert s.feed(b"a\nb") == b"a\n"
    assert s.close() == b"b"
    assert s.close() == b"" and s.feed(b"x") == b""


# A gap that swallows the head of a multi-line value (the `PASSWORD` keyword, the `BEGIN`
# line, a RESP header without protocol="redis") leaves nothing that says what follows: that
# limit is documented, so the gap property uses single-line carriers plus RESP under "redis".
ONE_LINE = [c for c in CARRIERS if b"\n" not in c.rstrip(b"\n")]
gap_lines = st.lists(st.sampled_from(ONE_LINE + FILLER), min_size=1, max_size=8).map(
    b"\n".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(gap_lines, lines), st.integers(min_value=0, max_value=400),
       st.integers(min_value=0, max_value=400), st.sampled_from([None, "redis"]))
def test_no_secret_survives_a_gap(data: bytes, cut: int, skip: int, protocol: str | None) -> None:
    cut = min(cut, len(data))
    multi = [c for c in CARRIERS if c not in ONE_LINE and c in data]
    assume(not multi or (protocol == "redis" and all(c.startswith(b"*") for c in multi)))
    rest = data[cut:][skip % (len(data) - cut + 1) :]  # the gap loses some bytes after cut
    s = R.stream(protocol)
    out = s.feed(data[:cut]) + s.gap(skip) + s.feed(rest) + s.close()
    for secret in SECRETS:
        assert secret not in out


# ---------------------------------------------------------------- fast path vs Segmenter
class _SegmenterOnly:
    """Reference: every chunk through a bare Segmenter and Table.piece, nothing else (no
    stream fast path, no shared buffer, no prefilter result kept between cut and piece)."""

    def __init__(self, table: Table) -> None:
        self._table = table
        self._seg = Segmenter(resp=table.protocol == "redis")
        self._closed = False

    def _run(self, pieces: list[tuple[int, bytes]]) -> bytes:
        return b"".join(self._table.piece(p) for p in pieces)

    def feed(self, chunk: bytes) -> bytes:
        if self._closed or not chunk:
            return b""
        return self._run(self._seg.push(bytes(chunk)))

    def gap(self, n: int = 0) -> bytes:
        return b"" if self._closed else self._run(self._seg.gap())

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        return self._run(self._seg.finish())


def _reference(protocol: str | None = None, rules: RuleSet | None = None) -> _SegmenterOnly:
    return _SegmenterOnly((rules or RuleSet(R.rules)).table(protocol))


FAST, SLOW = Redactor.default(), RuleSet(R.rules)
# Calls on a stream: a chunk to feed, or None for a gap.
calls = st.lists(st.one_of(st.binary(max_size=40), payloads, lines, st.none()), max_size=10)


def _drive(s: Stream | _SegmenterOnly, seq: list[bytes | None]) -> bytes:
    out = b""
    for c in seq:
        out += s.gap(3) if c is None else s.feed(c)
    return out + s.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls, st.sampled_from([None, "http", "redis", "postgres"]))
def test_fast_path_equals_segmenter(seq: list[bytes | None], protocol: str | None) -> None:
    before = FAST.counters(), SLOW.counters()
    assert _drive(FAST.stream(protocol), seq) == _drive(_reference(protocol, SLOW), seq)
    after = FAST.counters(), SLOW.counters()
    assert {k: v - before[0][k] for k, v in after[0].items()} == {
        k: v - before[1][k] for k, v in after[1].items()}


def test_counters_equal_one_shot_for_any_split() -> None:
    data = b"".join(CARRIERS + FILLER) * 2
    one = Redactor.default()
    expect = one.redact(data)
    for size in (1, 7, 64, 256, 1460):
        r = Redactor.default()
        s = r.stream()
        out = b"".join(s.feed(data[i : i + size]) for i in range(0, len(data), size))
        assert out + s.close() == expect
        assert r.counters() == one.counters()


def test_long_clean_line_in_small_feeds_is_held_whole() -> None:
    s = R.stream()
    line = b"a" * 5000
    assert all(s.feed(line[i : i + 64]) == b"" for i in range(0, len(line), 64))
    assert s.pending == len(line)
    assert s.feed(b"\nnext") == line + b"\n"
    assert s.close() == b"next"


def test_resp_start_at_a_cut_is_seen_by_the_fast_path() -> None:
    # `*2` after a line end may start a RESP array: the stream is Redis-like from then on,
    # so a later gap drops to the next command, as the Segmenter decides.
    seq: list[bytes | None] = [b"a\n*2", b"x\n", None, b"abc\ndef\n*1\r\n$4\r\nPING\r\n"]
    out = _drive(R.stream(), seq)
    assert out == _drive(_reference(), seq)
    assert b"def" not in out


def test_unterminated_small_feeds_past_the_cap() -> None:
    # The daemon's write loop: 64-byte writes with no line end. Held up to CAP, then masked
    # once, then dropped (a bounded tail kept) until a line end comes.
    chunk = bytes(range(97, 97 + 26)) * 2 + b"abcdefghijkl"
    seq: list[bytes | None] = [chunk] * (CAP // 64 + 40) + [b"x\nnext line\n", chunk, None,
                                                            chunk, b"\nafter\n"]
    out = _drive(R.stream(), seq)
    assert out == _drive(_reference(), seq)
    assert out.startswith(b"[REDACTED:oversize]\nnext line\n")
    s = R.stream()
    for _ in range(CAP // 64 + 40):
        s.feed(chunk)
        assert s.pending <= CAP


@pytest.mark.parametrize("seq", [
    # A dropped line's keyword arrives in pieces: its value on the next lines is dropped too.
    [b"a", None, b"x" * 300 + b" passw", b"ord:", b"\nZq9hunter2Xv\n", b"ok\n"],
    [b"a", None, b"x" * 300, b"-----BEGIN PRIVATE", b" KEY-----\nZq9hunter2Xv\n",
     b"-----END PRIVATE KEY-----\nok\n"],
    # A NUL ends the dropped line (PostgreSQL messages).
    [b"Q\x00\x00", None, b"ab\x00" + b"c" * 300, b"ef\n"],
    [b"*2\r\n$4\r\nAUTH\r\n$12\r\nZq9h", None, b"unter2Xv", b"\r\n*1\r\n$4\r\nPING\r\n"],
])
def test_dropping_after_a_gap_matches_the_segmenter(seq: list[bytes | None]) -> None:
    out = _drive(R.stream(), seq)
    assert out == _drive(_reference(), seq)
    assert b"Zq9hunter2Xv" not in out
