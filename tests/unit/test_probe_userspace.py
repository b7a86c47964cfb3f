"""The probe's pure user-space parts: ring buffer record walking over a fake data area,
the loader's manifest, ELF symbol offsets, per-CPU sizes. No root, no bcc, no kernel."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from probes import bpfsys, objcache, objload, ringbuf, tls, trace
from probes.elfsym import ElfError, file_symbol_offsets, open_elf, symbol_offsets, vaddr_to_offset
from probes.loader import USER_MAPS, _parser, parse_manifest, prog_kind
from probes.ringbuf import BUSY_BIT, DISCARD_BIT, RingReader

# Both walks: the Python one, and its C twin where it was built (provision.sh builds it).
WALKS = [pytest.param(ringbuf.walk, id="python"),
         pytest.param(ringbuf._walk_c, id="c", marks=pytest.mark.skipif(
             ringbuf._walk_c is None, reason="C walk not built (no compiler or headers)"))]


class FakeRing:
    """A data area of `size` bytes seen twice (as the kernel maps it), plus positions."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.buf = bytearray(size)
        self.prod = 0

    def put(self, payload: bytes, flags: int = 0) -> None:
        off = self.prod % self.size
        rec = struct.pack("<II", len(payload) | flags, 0) + payload
        rec += bytes(-len(rec) % 8)
        for i, b in enumerate(rec):
            self.buf[(off + i) % self.size] = b
        self.prod += len(rec)

    def view(self) -> memoryview:
        return memoryview(bytes(self.buf) * 2)


@pytest.mark.parametrize("walk", WALKS)
def test_walk_copies_records_and_pads_to_8(walk: Any) -> None:
    r = FakeRing(128)
    r.put(b"abc")
    r.put(b"12345678")
    r.put(b"")
    out: list[bytes] = []
    cons = walk(r.view(), r.size - 1, 0, r.prod, 1024, out)
    assert out == [b"abc", b"12345678", b""]
    assert cons == r.prod == 16 + 16 + 8


@pytest.mark.parametrize("walk", WALKS)
def test_walk_skips_discarded_and_stops_at_busy(walk: Any) -> None:
    r = FakeRing(128)
    r.put(b"keep1")
    r.put(b"gone!", DISCARD_BIT)
    r.put(b"keep2")
    busy_at = r.prod
    r.put(b"notyet", BUSY_BIT)
    r.put(b"after")
    out: list[bytes] = []
    cons = walk(r.view(), r.size - 1, 0, r.prod, 1024, out)
    assert out == [b"keep1", b"keep2"]
    assert cons == busy_at  # the BUSY record is retried at the next drain


@pytest.mark.parametrize("walk", WALKS)
def test_walk_wraps_around_the_end_contiguously(walk: Any) -> None:
    r = FakeRing(64)
    r.put(b"x" * 40)          # 48 bytes at 0
    out: list[bytes] = []
    cons = walk(r.view(), 63, 0, r.prod, 1024, out)
    r.put(b"wrapping!" * 3)   # 27 bytes: header at 48, payload crosses 64
    out.clear()
    cons = walk(r.view(), 63, cons, r.prod, 1024, out)
    assert out == [b"wrapping!" * 3]
    assert cons == r.prod


@pytest.mark.parametrize("walk", WALKS)
def test_walk_respects_the_batch_limit(walk: Any) -> None:
    r = FakeRing(256)
    for i in range(10):
        r.put(bytes([i]))
    out: list[bytes] = []
    cons = walk(r.view(), 255, 0, r.prod, 4, out)
    assert out == [bytes([i]) for i in range(4)] and cons == 4 * 16
    out.clear()
    walk(r.view(), 255, cons, r.prod, 1024, out)
    assert out == [bytes([i]) for i in range(4, 10)]


@pytest.mark.parametrize("walk", WALKS)
def test_walk_rejects_what_is_not_a_ring(walk: Any) -> None:
    """A record header whose length runs past the data area is an error, not a read of
    whatever lies beyond (the C walk checks; the Python slice would just stop short)."""
    r = FakeRing(64)
    r.put(b"ok")
    view = bytearray(r.view())
    struct.pack_into("<I", view, 16, 4000)  # the next header claims 4000 bytes
    out: list[bytes] = []
    if walk is ringbuf._walk_c:
        with pytest.raises(ValueError, match="past the data area"):
            walk(memoryview(view), 63, 0, 16 + 4008, 1024, out)
        with pytest.raises(ValueError, match="mapped twice"):
            walk(memoryview(bytes(64)), 63, 0, 8, 1024, out)
    assert walk(memoryview(view), 63, 0, 16, 1024, out) == 16 and out[-1] == b"ok"


def test_the_walks_agree_on_a_long_wrapping_ring() -> None:
    if ringbuf._walk_c is None:
        pytest.skip("C walk not built")
    r = FakeRing(1 << 12)
    got: dict[str, list[bytes]] = {"python": [], "c": []}
    cons = {"python": 0, "c": 0}
    for i in range(600):
        r.put(bytes([i % 251]) * (i % 90), DISCARD_BIT if i % 13 == 0 else 0)
        if i % 7 == 6:
            for name, walk in (("python", ringbuf.walk), ("c", ringbuf._walk_c)):
                cons[name] = walk(r.view(), r.size - 1, cons[name], r.prod, 1024, got[name])
    assert cons["python"] == cons["c"] and got["python"] == got["c"] and len(got["c"]) > 300


def _manifest(nprogs: int = 2) -> dict[str, object]:
    progs = [{"name": "tracepoint__syscalls__sys_enter_read", "kind": "tracepoint",
              "tp": "syscalls:sys_enter_read"},
             {"name": "tls_read_enter", "kind": "uprobe", "tp": ""}][:nprogs]
    maps = [{"name": n, "type": 1, "key_size": 4, "value_size": 16, "max_entries": 8}
            for n in USER_MAPS]
    return {"progs": progs, "maps": maps}


def test_manifest_assigns_fds_in_order() -> None:
    fds = list(range(10, 10 + 2 + len(USER_MAPS)))
    man = parse_manifest(json.dumps(_manifest()).encode(), fds)
    assert [p["fd"] for p in man["progs"]] == [10, 11]
    assert [m["fd"] for m in man["maps"]] == fds[2:]


def test_manifest_rejects_fd_count_mismatch_and_missing_maps() -> None:
    with pytest.raises(ValueError, match="fds for"):
        parse_manifest(json.dumps(_manifest()).encode(), [3])
    bad = _manifest()
    bad["maps"] = bad["maps"][1:]  # type: ignore[index]
    with pytest.raises(ValueError, match="missing"):
        parse_manifest(json.dumps(bad).encode(), list(range(2 + len(USER_MAPS) - 1)))


def test_manifest_passes_errors_through() -> None:
    man = parse_manifest(b'{"error": "loading trace.bpf.c failed: boom"}', [])
    assert man["error"].endswith("boom")


def test_the_helper_takes_the_build_it_writes_under() -> None:
    facts = {"kernel": "6.1.0-25-amd64", "bcc": "0.26.0"}
    args = _parser().parse_args(["--fd", "3", "--cache-build", json.dumps(facts)])
    assert args.cache_build == facts
    assert _parser().parse_args(["--fd", "3"]).cache_build is None
    for bad in ("[1]", '{"kernel": 6}', "{"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["--fd", "3", "--cache-build", bad])


def test_cached_file_is_the_key_load_probe_looks_up(tmp_path: Path) -> None:
    """What the warm-up reports as warm is the file the daemon's prepare() would load: the
    same options give the same key; other options, or a file it cannot trust, do not."""
    opts = trace.ProbeOptions(1024, 1024, cache_dir=tmp_path / "c")
    facts, digest = objload.cache_build("trace", trace.loader_args(opts))
    assert facts["cflags"].split()[1:3] == ["-DMAX_DATA=1024", "-DRINGBUF_PAGES=1024"]
    assert trace.cached_file(opts) is None
    path = objcache.path_for(tmp_path / "c", "trace", digest)
    objcache.write(path, objcache.ProbeObject("GPL", 0, (), ()), digest, facts)
    assert trace.cached_file(opts) == path
    assert trace.cached_file(trace.ProbeOptions(2048, 1024, cache_dir=tmp_path / "c")) is None
    assert trace.cached_file(trace.ProbeOptions(1024, 1024)) is None  # no cache at all
    path.chmod(0o644)
    assert trace.cached_file(opts) is None


def test_prog_kind_from_bcc_names() -> None:
    assert prog_kind("tracepoint__sched__sched_process_exec") == \
        ("tracepoint", "sched:sched_process_exec")
    assert prog_kind("tls_write_exit") == ("uprobe", "")
    with pytest.raises(ValueError):
        prog_kind("tracepoint__nocategory")


def test_vaddr_to_offset_uses_the_containing_load_segment() -> None:
    loads = [(0, 0x1000, 0), (0x21000, 0x5000, 0x1000)]
    assert vaddr_to_offset(loads, 0x500) == 0x500
    assert vaddr_to_offset(loads, 0x21010) == 0x1010
    with pytest.raises(ElfError):
        vaddr_to_offset(loads, 0x10000)


def test_symbol_offsets_rejects_non_elf() -> None:
    with pytest.raises(ElfError):
        symbol_offsets(b"not an elf at all, just text, long enough for a header" * 2, ["x"])


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")), reason="needs gcc, nm")
def test_symbol_offsets_match_nm_and_readelf(tmp_path: Path) -> None:
    src = tmp_path / "lib.c"
    src.write_text("int probe_me(int x) { return x + 1; }\nint other(void) { return 2; }\n")
    so = tmp_path / "libt.so"
    # segments linked at 0x40000: vaddr != file offset, the case PT_LOAD translation is for
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(so), str(src),
                    "-Wl,-Ttext-segment=0x40000"], check=True)
    got = file_symbol_offsets(str(so), ["probe_me", "other", "absent"])
    assert set(got) == {"probe_me", "other"}
    nm = subprocess.run(["nm", "-D", str(so)], capture_output=True, text=True, check=True).stdout
    vaddr = next(int(line.split()[0], 16) for line in nm.splitlines()
                 if line.endswith(" probe_me"))
    assert got["probe_me"] == vaddr - 0x40000
    data = so.read_bytes()
    # the function's bytes at our file offset are the bytes objdump shows at its vaddr
    text = subprocess.run(["objdump", "-d", f"--start-address={vaddr:#x}",
                           f"--stop-address={vaddr + 4:#x}", str(so)],
                          capture_output=True, text=True, check=True).stdout
    first = [ln for ln in text.splitlines() if ln.strip().startswith(f"{vaddr:x}:")]
    assert first, text
    want = bytes(int(b, 16) for b in first[0].split("\t")[1].split())
    assert data[got["probe_me"]:got["probe_me"] + len(want)] == want


def test_possible_cpus_and_percpu_sizes(tmp_path: Path) -> None:
    # the mask's weight (num_possible_cpus()), not the highest id + 1
    for text, n in (("0\n", 1), ("0-1\n", 2), ("0-3,5\n", 5), ("0,2-7", 7), ("0-63\n", 64)):
        p = tmp_path / "possible"
        p.write_text(text)
        assert bpfsys.possible_cpus(str(p)) == n
    assert bpfsys.percpu_value_size(8, 2) == 16
    assert bpfsys.percpu_value_size(12, 4) == 64


# -- close/reader races --------------------------------------------------------------
def _fake_reader(ring: FakeRing, sink: Any) -> tuple[RingReader, Any, Any]:
    """A RingReader over plain memory standing in for the kernel's mapping."""
    r = RingReader.__new__(RingReader)
    cons, prod = ctypes.c_uint64(0), ctypes.c_uint64(ring.prod)
    r._sink, r._batch_max, r._mask = sink, 1, ring.size - 1
    r._cons_addr, r._prod_addr = 1, 1  # "mapped"; close() is never called on it
    r._consumer, r._producer = cons, prod
    r._data = memoryview(ring.buf + ring.buf)
    return r, cons, prod


def test_drain_ends_although_the_producer_keeps_writing() -> None:
    """drain() stops at the producer position it read on entry: a busy traced process
    cannot keep the reader thread (which close() waits for) in there forever."""
    ring = FakeRing(1 << 12)
    ring.put(b"first")
    calls = []

    def sink(batch: list[bytes]) -> None:
        calls.append(batch)
        if len(calls) > 50:
            raise AssertionError("drain() never returned")
        ring.put(b"more")  # the kernel commits another record meanwhile
        prod.value = ring.prod
        r._data = memoryview(ring.buf + ring.buf)

    r, cons, prod = _fake_reader(ring, sink)
    assert r.drain() == 1
    assert cons.value == 16 and prod.value == 32
    assert r.drain() == 1  # the next record, at the next drain


class StuckReader:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.unmapped = False

    def drain(self) -> int:
        assert not self.unmapped, "drained an unmapped ring"
        self.entered.set()
        self.release.wait()
        return 0

    def close(self) -> None:
        self.unmapped = True


def test_close_never_unmaps_under_a_reader_that_did_not_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "READER_JOIN_TIMEOUT", 0.05)
    probe = trace.TraceProbe(trace.ProbeOptions(), lambda _b: None)
    reader = StuckReader()
    probe._reader = reader  # type: ignore[assignment]
    probe._thread = threading.Thread(target=probe._drain, daemon=True)
    probe._thread.start()
    assert reader.entered.wait(10)
    thread = probe._thread
    probe.close()  # the reader is still inside drain()
    assert not reader.unmapped
    reader.release.set()
    thread.join(10)
    assert not probe.loaded


class FlagMap:
    def __init__(self, fail: bool = False) -> None:
        self.values: list[int] = []
        self.fail = fail

    def update(self, key: bytes, value: bytes) -> None:
        if self.fail:
            raise OSError(1, "EPERM")
        assert key == bytes(4)
        self.values.append(int.from_bytes(value, "little"))


class Load:
    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.ended = 0

    def overloaded(self) -> bool:
        return self.answers.pop(0)

    def shed_ended(self) -> None:
        self.ended += 1


def test_the_reader_sets_the_kernel_shedding_flag_on_changes_only() -> None:
    load = Load([False, True, True, False, False, True])
    probe = trace.TraceProbe(trace.ProbeOptions(), lambda _b: None, load)
    flag = FlagMap()
    probe._maps["shedding"] = flag  # type: ignore[assignment]
    for _ in range(6):
        probe._shed_step(load)
    # one bpf(2) update per change (the first step writes the flag: unknown until then)
    assert flag.values == [0, 1, 0, 1]
    assert load.ended == 1  # the loss is placed when shedding stops ...
    probe._detach()  # ... or when the probe detaches while it sheds
    assert flag.values == [0, 1, 0, 1, 0] and load.ended == 2
    load.answers = [False]
    probe._shed_step(load)  # after a detach the state is unknown again: written, no loss
    assert flag.values == [0, 1, 0, 1, 0, 0] and load.ended == 2
    failing = trace.TraceProbe(trace.ProbeOptions(), lambda _b: None, load)
    failing._maps["shedding"] = FlagMap(fail=True)  # type: ignore[assignment]
    load.answers = [True]
    failing._shed_step(load)  # logged; the pipeline's own drops still bound the load
    assert not failing._shedding


class DictMap:
    """A map as a dict of key -> value bytes; update fails for keys in `full`."""

    def __init__(self, full: tuple[bytes, ...] = ()) -> None:
        self.d: dict[bytes, bytes] = {}
        self.full = full
        self.writes = 0

    def update(self, key: bytes, value: bytes) -> None:
        if key in self.full:
            raise OSError(28, "ENOSPC")
        self.writes += 1
        self.d[key] = value

    def delete(self, key: bytes) -> bool:
        return self.d.pop(key, None) is not None


def test_a_target_pid_has_its_bit_set_while_it_is_in_the_hash() -> None:
    """The programs test target_bits_user before the targets hash: a pid the daemon adds is
    set there first and cleared only after it left the hash; a failed add leaves no bit."""
    probe = trace.TraceProbe(trace.ProbeOptions(), lambda _b: None)
    bits, targets = DictMap(), DictMap(full=(struct.pack("<I", 200),))
    probe._maps.update({"target_bits_user": bits, "targets": targets})  # type: ignore[dict-item]

    def word(w: int) -> int:
        return int.from_bytes(bits.d.get(struct.pack("<I", w), bytes(8)), "little")

    spec = trace.TargetSpec(cookie=1)
    probe.add_pid(130, spec)   # word 2, bit 2
    probe.add_pid(191, spec)   # word 2, bit 63
    probe.add_pid(64, spec)    # word 1, bit 0
    assert word(2) == (1 << 2) | (1 << 63) and word(1) == 1
    probe.add_pid(130, spec)   # a refresh: the word is unchanged, not written again
    assert bits.writes == 3
    probe.remove_pid(191)
    assert word(2) == 1 << 2 and struct.pack("<I", 191) not in targets.d
    probe.remove_pid(191)      # already gone
    probe.remove_pid(130)
    assert word(2) == 0 and word(1) == 1
    with pytest.raises(OSError):
        probe.add_pid(200, spec)   # word 3: set, the hash refused it, cleared again
    assert word(3) == 0
    targets.full = ()
    probe.add_pid(200, spec)
    targets.full = (struct.pack("<I", 200),)
    with pytest.raises(OSError):
        probe.add_pid(200, spec)   # a refresh refused: the tgid is still in the hash
    assert word(3) == 1 << (200 & 63)


# -- bpf(2) map walk -----------------------------------------------------------------
def test_map_keys_once_when_the_kernel_deletes_the_current_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """GET_NEXT_KEY on a key that is gone restarts at the first key (htab): a target that
    exits while we walk must not make keys()/items() report the others twice."""
    live = [b"a", b"b", b"c"]

    def get_next(_self: bpfsys.Map, _cmd: int, key: bytes | None, out: Any,
                 _flags: int = 0) -> int:
        if key is None or key not in live:
            nxt = live[0]
        elif live.index(key) + 1 < len(live):
            nxt = live[live.index(key) + 1]
        else:
            ctypes.set_errno(errno.ENOENT)
            return -1
        if nxt == b"b":
            live.remove(b"b")  # the process exits right after we read its key
        ctypes.memmove(out, nxt, 1)
        return 0

    monkeypatch.setattr(bpfsys.Map, "_call", get_next)
    assert bpfsys.Map(-1, 1, 1, "t").keys() == [b"a", b"b", b"c"]


def test_manifest_rejects_malformed_entries() -> None:
    for bad in ({"progs": [1], "maps": []}, {"progs": [], "maps": ["x"]}):
        with pytest.raises(ValueError, match="bad"):
            parse_manifest(json.dumps(bad).encode(), [7])
    no_type = _manifest()
    del no_type["maps"][0]["type"]  # type: ignore[index]
    with pytest.raises(ValueError, match="bad map entry"):
        parse_manifest(json.dumps(no_type).encode(), list(range(2 + len(USER_MAPS))))


# -- ELF files from traced processes -------------------------------------------------
def _build_so(tmp_path: Path, src: str = "int probe_me(int x) { return x + 1; }\n") -> Path:
    c = tmp_path / "lib.c"
    c.write_text(src)
    so = tmp_path / "libt.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(so), str(c)], check=True)
    return so


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_malformed_elf_is_an_elf_error_not_a_crash_or_a_hang(tmp_path: Path) -> None:
    good = _build_so(tmp_path).read_bytes()
    assert symbol_offsets(good, ["probe_me"])
    ehdr = struct.Struct("<16sHHIQQQIHHHHHH")
    fields = list(ehdr.unpack_from(good))

    def with_header(**kw: int) -> bytes:
        f = list(fields)
        for name, v in kw.items():
            f[{"phoff": 5, "shoff": 6, "shentsize": 11, "shnum": 12}[name]] = v
        return ehdr.pack(*f) + good[ehdr.size:]

    for bad in (with_header(shoff=len(good) - 8), with_header(phoff=1 << 40),
                with_header(shentsize=4), good[:len(good) // 2]):
        with pytest.raises(ElfError):
            symbol_offsets(bad, ["probe_me"])
    # a symbol table claiming 2^40 bytes of 1-byte entries: refused, not walked
    shoff, shentsize, shnum = fields[6], fields[11], fields[12]
    data = bytearray(good)
    for i in range(shnum):
        off = shoff + i * shentsize
        if struct.unpack_from("<I", data, off + 4)[0] == 11:  # SHT_DYNSYM
            struct.pack_into("<Q", data, off + 32, 1 << 40)   # sh_size
            struct.pack_into("<Q", data, off + 56, 1)         # sh_entsize
    with pytest.raises(ElfError):
        symbol_offsets(bytes(data), ["probe_me"])


def test_open_elf_refuses_a_fifo_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "libssl.so.3"
    os.mkfifo(fifo)  # put in a library's place by a traced user: open() would wait forever
    with pytest.raises(ElfError, match="not a regular file"):
        open_elf(str(fifo))


SSL_STUB = "".join(f"int {s}(void *a, void *b, int n) {{ return n + {i}; }}\n"
                   for i, s in enumerate(("SSL_read", "SSL_read_ex", "SSL_write",
                                          "SSL_write_ex")))


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_tls_attaches_to_the_file_it_parsed_once_per_inode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The uprobe goes on the fd the symbols were read from (the traced user may swap the
    path in between), and a library reached by two paths is probed once."""
    so = _build_so(tmp_path, SSL_STUB)
    other = tmp_path / "other-root-libssl.so.3"
    os.link(so, other)
    attached: list[tuple[str, int, bool]] = []

    def attach(prog_fd: int, path: str, offset: int, retprobe: bool) -> int:
        assert path.startswith("/proc/self/fd/")
        assert os.stat(path).st_ino == so.stat().st_ino
        attached.append((path, offset, retprobe))
        return os.open("/dev/null", os.O_RDONLY)

    monkeypatch.setattr(bpfsys, "attach_uprobe", attach)
    monkeypatch.setattr(tls, "libssl_paths", lambda pid: {str(so)} if pid == 1 else {str(other)})
    hooks = tls.TlsHooks()
    progs = {n: 100 + i for i, n in enumerate(
        ("tls_read_enter", "tls_read_ex_enter", "tls_write_enter", "tls_write_ex_enter",
         "tls_read_exit", "tls_write_exit"))}
    hooks.attach_for(progs, [1, 2])
    assert not hooks.failed, hooks.failed
    assert len(attached) == 8 and hooks.attached == {str(so), str(other)}
    want = file_symbol_offsets(str(so), ["SSL_read"])["SSL_read"]
    assert (want, False) in [(o, r) for _p, o, r in attached]
    hooks.close()


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_tls_attach_failure_is_counted_not_silent(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A libssl without the hooked symbols gets no uprobes: the probe reports it (status
    tls_attach_failed, /metrics periscope_tls_attach_failed), nothing is attached."""
    so = _build_so(tmp_path, "int SSL_new(void) { return 0; }\n")
    monkeypatch.setattr(bpfsys, "attach_uprobe", lambda *a: pytest.fail("must not attach"))
    monkeypatch.setattr(tls, "libssl_paths", lambda pid: {str(so)})
    probe = trace.TraceProbe(trace.ProbeOptions(), lambda _b: None)
    assert probe.tls_failures() == 0
    probe.tls.attach_for({}, [1])
    assert probe.tls_failures() == 1
    assert "SSL_read not found" in probe.tls.failed[str(so)]
    assert not probe.tls.attached


def test_profile_manifest_takes_perf_event_programs_and_its_own_maps() -> None:
    from probes.loader import PROBES, PROFILE_MAPS

    man = {"progs": [{"name": "profile_sample", "kind": "perf_event", "tp": ""}],
           "maps": [{"name": n, "type": 1, "key_size": 4, "value_size": 8, "max_entries": 8}
                    for n in PROFILE_MAPS]}
    fds = list(range(20, 21 + len(PROFILE_MAPS)))
    got = parse_manifest(json.dumps(man).encode(), fds, PROBES["profile"].user_maps)
    assert got["progs"][0]["fd"] == 20 and got["maps"][-1]["fd"] == fds[-1]
    with pytest.raises(ValueError, match="missing"):  # trace's maps are not profile's
        parse_manifest(json.dumps(man).encode(), fds)
    assert PROBES["profile"].prog_kind("profile_sample") == ("perf_event", "")
    assert PROBES["trace"].prog_kind("tls_read_enter") == ("uprobe", "")


def test_cpu_lists() -> None:
    assert bpfsys.cpu_list("0-3,5\n") == [0, 1, 2, 3, 5]
    assert bpfsys.cpu_list("0") == [0]
    assert bpfsys.cpu_list("") == []
