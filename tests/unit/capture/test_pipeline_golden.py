"""Pipeline output on a corpus of every record shape equals the golden events (same keys,
same values, same order) that the original pipeline produced: the fast path keeps semantics."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import orjson
import pytest

from collector.capture import iobuild
from collector.capture.events import Clock, syscall_event
from collector.capture.pipeline import Pipeline
from collector.proc.facts import Enricher
from probes.layout import C_LAYOUT, SyscallRecord, decode
from tests.unit.pipeline_corpus import IO, FakeRedactor, batches, sys_rec

DATA = Path(__file__).parents[2] / "data"
GOLDEN = DATA / "pipeline" / "events.json"


# The I/O fast path's builds: the Python definition, and the C twin where it was built.
BUILDS = [pytest.param(iobuild.io_event, id="python"),
          pytest.param(iobuild.build, id="c", marks=pytest.mark.skipif(
              iobuild.IMPL != "c", reason="C build not compiled (no compiler)"))]


def run(build: object = iobuild.build) -> dict[str, object]:
    p = Pipeline(FakeRedactor(), [], Enricher(procfs=DATA / "proc"), max_streams=8)
    p._build = build  # type: ignore[assignment]
    p.clock.offset = 1_700_000_000.123456
    res = [p.process(recs, shed_payload=shed) for recs, shed in batches()]
    tail: list[dict[str, object]] = []
    p._released(p.streams.close(lambda _k: True), 1.5, tail, None)
    return {"batches": res, "closed": tail, "counters": dict(sorted(p.counters.items()))}


@pytest.mark.parametrize("build", BUILDS)
def test_events_match_golden_exactly(build: object) -> None:
    got = run(build)
    want = orjson.loads(GOLDEN.read_bytes())
    for i, (g, w) in enumerate(zip(got["batches"], want["batches"], strict=True)):  # type: ignore[call-overload]
        assert [list(e.items()) for e in g] == [list(e.items()) for e in w], f"batch {i}"
    assert got["closed"] == want["closed"]
    assert got["counters"] == want["counters"]
    # byte-identical bodies: what the store and clients receive is unchanged
    assert orjson.dumps(got) == orjson.dumps(want)


@pytest.mark.parametrize("build", BUILDS)
def test_fast_path_meta_equals_syscall_event(build: object) -> None:
    """The pipeline's inline event build for I/O syscalls == events.syscall_event."""
    clock = Clock()
    red = FakeRedactor()
    for nr in IO:
        for flags in (0, 2):
            for ret in (-4096, -4095, -11, -1, 0, 7):
                for lat in (0, 1, 999, 1234567, 2**40 + 3):
                    raw = sys_rec(nr, 5, ret, b"", flags, arg=0x7F00, lat=lat, pid=99999)
                    p = Pipeline(red, [], Enricher(procfs=DATA / "proc"))
                    p.clock = clock
                    p._build = build  # type: ignore[assignment]
                    (ev,) = p.process([raw])
                    rec = decode(raw)
                    assert isinstance(rec, SyscallRecord)
                    assert list(ev.items()) == list(syscall_event(rec, clock, red).items())


def _c_enum(name: str) -> dict[int, str]:
    """`enum NAME { A = 1, B, ... }` from probes/common.h: value -> lowercased name."""
    text = (Path(__file__).parents[3] / "probes" / "common.h").read_text()
    body = re.search(r"enum " + name + r" \{(.*?)\};", text, re.S)
    assert body is not None
    out, value = {}, -1
    for item in re.sub(r"/\*.*?\*/", "", body.group(1), flags=re.S).split(","):
        m = re.match(r"\s*(\w+)\s*(?:=\s*(\d+))?\s*$", item)
        if m:
            value = int(m.group(2)) if m.group(2) else value + 1
            out[value] = m.group(1).split("_", 1)[1].lower()
    return out


def _field(raw: bytes, struct_name: str, field: str, signed: bool = False) -> int:
    off, size = C_LAYOUT[struct_name][field]
    return int.from_bytes(raw[off:off + size], "little", signed=signed)


def test_golden_events_agree_with_facts_derived_from_the_c_header() -> None:
    """The golden file is not only its own earlier output: the (syscall, pid, fd, ret, errno)
    of every syscall event, and the pid of every fork and exit, follow from the records the
    corpus built, read at the C offsets (checked against bcc in the root tier) with the
    names of common.h's enums, in the same order. No pipeline or layout code is used."""
    ops, scs = _c_enum("op"), _c_enum("sc")
    header = (Path(__file__).parents[3] / "probes" / "common.h").read_text()
    m = re.search(r"#define LAYOUT_VERSION (\d+)", header)
    assert m is not None
    version = int(m.group(1))
    hdr_size = C_LAYOUT["fork_event"]["child_tgid"][0]  # the fields after the header
    sys_size = C_LAYOUT["sys_event"]["data"][0]
    want: list[tuple[object, ...]] = []
    for records, _shed in batches():
        for raw in records:
            if len(raw) < hdr_size or _field(raw, "event_hdr", "version") != version:
                continue
            op = ops.get(_field(raw, "event_hdr", "op"))
            pid = _field(raw, "event_hdr", "tgid")
            if op in ("fork", "exit") and len(raw) >= hdr_size + 8:
                want.append((op, pid))
            if op not in ("syscall", "tls") or len(raw) < sys_size:
                continue
            name = scs.get(_field(raw, "sys_event", "nr"))
            if name is None or len(raw) < sys_size + _field(raw, "sys_event", "data_len"):
                continue
            ret = _field(raw, "sys_event", "ret", signed=True)
            fd = _field(raw, "sys_event", "fd", signed=True)
            # an -errno for syscalls; SSL_read/SSL_write return -1 without one
            errname = errno.errorcode.get(-ret, f"E{-ret}") \
                if -4096 < ret < 0 and not name.startswith("ssl_") else None
            # a TLS record shows its socket's fd once the kernel learned it (else -1)
            shown_fd = None if name.startswith(("open", "clone", "fork", "vfork")) \
                or (name.startswith("ssl_") and fd < 0) \
                else (ret if name.startswith("accept") else fd)
            want.append((name, pid, shown_fd, ret, errname))
    got: list[tuple[object, ...]] = []
    golden = orjson.loads(GOLDEN.read_bytes())
    for batch in golden["batches"]:
        for e in batch:
            if e["kind"] in ("fork", "exit"):
                got.append((e["kind"], e["pid"]))
            elif e["kind"] in ("syscall", "tls"):
                got.append((e["syscall"], e["pid"], e.get("fd"), e["ret"], e.get("errno")))
    assert got == want
    assert len(want) > 100  # the corpus covers every record shape, many times
