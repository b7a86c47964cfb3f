"""Fuzzing: the engine never raises and never hits its fail-closed error path on any bytes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from redact import Redactor

R = Redactor.default(redact_ips=True, sql_string_literals=True)
K = Redactor.default(pseudonymize_key=b"k")
PROTOS = st.sampled_from([None, "http", "postgres", "mysql", "redis", "dns", "smtp"])
ATOMS = st.sampled_from(
    [b"*2\r\n$4\r\nAUTH\r\n", b"$", b"*", b"\r\n", b"\n", b"\x00", b"password=", b"'", b'"',
     b"-----BEGIN PRIVATE KEY-----", b"-----END", b"4111", b" ", b"-", b"@", b"[REDACTED:",
     b"Authorization: ", b"\\", b"%22", b"eyJ", b"ghp_", b"PASSWORD "]
)
mixed = st.lists(st.one_of(ATOMS, st.binary(max_size=20)), max_size=30).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=2000), mixed), PROTOS)
def test_never_raises(data: bytes, protocol: str | None) -> None:
    for r in (R, K):
        out = r.redact(data, protocol)
        assert isinstance(out, bytes)
        s = r.stream(protocol)
        out2 = s.feed(data[: len(data) // 2]) + s.gap(3) + s.feed(data[len(data) // 2 :])
        out2 += s.close()
        assert isinstance(out2, bytes)
    assert R.counters()["engine_error"] == 0
    assert K.counters()["engine_error"] == 0


@settings(max_examples=200, deadline=None)
@given(mixed)
def test_idempotent_on_generated_input(data: bytes) -> None:
    for r in (R, K):
        once = r.redact(data)
        assert r.redact(once) == once


def test_idempotent_where_a_marker_meets_a_literal() -> None:
    # Found by the fuzzer: a quote right after a marker is not a new literal, as it was not
    # one right after the `$` or word character the marker replaced.
    for data in (b"password=$''", b"password=x'' and 'y'"):
        once = R.redact(data)
        assert R.redact(once) == once, once


def test_huge_single_line_and_nuls() -> None:
    for data in (b"\x00" * 200_000, b"a" * 300_000, bytes(range(256)) * 1000):
        assert isinstance(R.redact(data), bytes)
    assert R.counters()["engine_error"] == 0


def test_internal_error_fails_closed() -> None:
    def boom(_value: bytes) -> list[tuple[int, int]]:
        raise RuntimeError("boom")

    # A validator that raises stands for any internal error between prefilter and output.
    r = Redactor([replace(rule, validator=boom) if rule.id == "secret_field" else rule
                  for rule in R.rules])
    assert r.redact(b"password=hunter2") == b"[REDACTED:error]"
    s = r.stream()
    assert s.feed(b"password=hunter2\nmore") == b"[REDACTED:error]"
    assert r.counters()["engine_error"] == 2
    # What follows the error is the rest of an unknown line: dropped to its end, then normal.
    assert s.feed(b" than that") == b""
    assert s.feed(b" hunter3\nok\n") + s.close() == b"\nok\n"
