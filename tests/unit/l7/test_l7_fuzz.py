"""Fuzzing: arbitrary and mutated bytes, chunks and gaps never raise and never emit a string
that redaction did not see."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.l7 import L7Conn
from collector.l7.detect import SNIFF_BYTES, sniff
from tests.unit.l7.l7data import GOLDENS, load
from tests.unit.l7.test_l7_redaction import Recorder, assert_all_wrapped

SEEDS = [b for g in GOLDENS for c in load(g)["conns"] for _, _, b in c[:6]]
step = st.tuples(st.sampled_from(["feed", "gap", "datagram"]), st.sampled_from(["in", "out"]),
                 st.one_of(st.binary(max_size=300), st.sampled_from(SEEDS)),
                 st.integers(min_value=0, max_value=70000))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=40), st.sampled_from([None, "client", "server"]))
def test_arbitrary_sequences_never_raise(steps: list[tuple[str, str, bytes, int]],
                                         role: str | None) -> None:
    conn = L7Conn(Recorder(), role=role)
    out = []
    for i, (kind, d, data, n) in enumerate(steps):
        if kind == "feed":
            out += conn.feed(d, data, float(i))
        elif kind == "gap":
            out += conn.gap(d, n, float(i))
        else:
            out += conn.datagram(d, data, float(i), n)
    out += conn.close(99.0)
    assert_all_wrapped(out)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["in", "out"]), mutated()), min_size=1, max_size=20))
def test_mutated_real_traffic_never_raises(chunks: list[tuple[str, bytes]]) -> None:
    conn = L7Conn(Recorder(), role="client")
    out = []
    for i, (d, data) in enumerate(chunks):
        out += conn.feed(d, data, float(i))
        if i % 3 == 2:
            out += conn.gap(d, 17 * i, float(i))
    out += conn.close(99.0)
    assert_all_wrapped(out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=SNIFF_BYTES))
def test_sniff_total(data: bytes) -> None:
    v = sniff(data)
    assert isinstance(v, tuple) or v in ("more", "no", "never")
