"""TraceProbe: load trace.bpf.c (in a helper), attach it, fill the target maps, drain the ring.

The daemon never imports bcc: compiling would leave ~100 MB of libbcc/LLVM pages resident
for its whole life. load() runs probes/loader.py as a short-lived helper process that
compiles and loads the programs and maps with bcc and hands back their fds (SCM_RIGHTS),
or, when a previous compile of the same build is cached (ProbeOptions.cache_dir), loads
that with bpf(2) (probes/objload.py); this module attaches the programs (perf events,
probes/bpfsys.py), updates the maps with bpf(2) and reads the ring buffer from its mmap
(probes/ringbuf.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from probes import bpfsys
from probes.layout import TARGET, Stat
from probes.loader import PROBE_DIR, SOURCE, TLS_SOURCE, ProbeError
from probes.objload import cached, load_probe
from probes.ringbuf import RingReader
from probes.tls import TlsHooks, system_libssl_paths

__all__ = ["PROBE_DIR", "SOURCE", "TLS_SOURCE", "Pressure", "ProbeError", "ProbeOptions",
           "TargetSpec", "TraceProbe"]

log = logging.getLogger("periscope.probe")

BATCH_MAX = 1024  # records per batch handed to the pipeline
READER_JOIN_TIMEOUT = 5.0  # seconds close() waits for the reader thread
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COMM_LEN = 16
_ZERO = _U32.pack(0)
_ON, _OFF = _U32.pack(1), _U32.pack(0)


class Pressure(Protocol):
    """What the records go to, asked by the reader after each drain whether the kernel
    should shed (the pipeline, with its own hysteresis)."""

    def overloaded(self) -> bool:
        """True: the kernel skips targets' I/O syscalls at their enter (counted)."""

    def shed_ended(self) -> None:
        """Shedding stopped: records were lost between the last batch handed over and
        the next."""


@dataclass(frozen=True)
class ProbeOptions:
    max_payload: int = 256       # compile-time data[] size (bytes; power of two)
    ringbuf_pages: int = 1024    # 4 KiB pages
    poll_interval: float = 0.025  # seconds between ring-buffer drains (no wakeups)
    cache_dir: Path | None = None  # compiled objects, root-only (None: compile every time)


@dataclass(frozen=True)
class TargetSpec:
    cookie: int
    payload_cap: int = 0   # 0: meta only
    sample_every: int = 0  # 0/1: all syscalls
    rate_limit: int = 0    # 0: none; N: at most ~N syscalls/s for the target (kernel-side)


def loader_args(options: ProbeOptions) -> list[str]:
    """The loader helper's options for trace.bpf.c: what the cache key covers of them."""
    return ["--max-payload", str(options.max_payload),
            "--ringbuf-pages", str(options.ringbuf_pages)]


def run_loader(options: ProbeOptions, root: Path = PROBE_DIR.parent) -> dict[str, Any]:
    """Load trace.bpf.c from the cache or the loader helper (probes/loader.py under root);
    returns the manifest (with an "fd" in every entry). Raises ProbeError with the
    compiler's message."""
    return load_probe("trace", loader_args(options), root=root, cache_dir=options.cache_dir)


def cached_file(options: ProbeOptions, root: Path = PROBE_DIR.parent) -> Path | None:
    """The cache file prepare() would load trace.bpf.c from, or None (it would compile)."""
    if options.cache_dir is None:
        return None
    return cached("trace", loader_args(options), root, options.cache_dir)


class TraceProbe:
    """One loaded instance of trace.bpf.c (fds only), drained by a reader thread."""

    def __init__(self, options: ProbeOptions, sink: Callable[[list[bytes]], None],
                 pressure: Pressure | None = None) -> None:
        self.options = options
        self._sink = sink
        self._pressure = pressure
        # What the kernel's `shedding` flag says (the reader sets it); None: not known (at
        # first, or if clearing it at detach failed), so the reader's next step writes it.
        self._shedding: bool | None = None
        self._fds: list[int] = []          # every prog and map fd the loader sent
        self._links: list[int] = []        # tracepoint perf event fds (close = detach)
        self._maps: dict[str, bpfsys.Map] = {}
        # The words of target_bits_user as written (the kernel never writes that map), so
        # a change is one map update and no read; the lock orders add_pid/remove_pid.
        self._user_bits: dict[int, int] = {}
        self._bits_lock = threading.Lock()
        self._tls_progs: dict[str, int] = {}
        self._tracepoints: list[tuple[int, str]] = []  # (prog fd, "cat:event")
        self._reader: RingReader | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ncpus = 1
        self.load_seconds = 0.0     # the last load(): attach, plus prepare() if it ran then
        self.prepare_seconds = 0.0  # compile and load in the helper, or load from the cache
        self.from_cache = False
        self.tls = TlsHooks()

    # -- lifecycle -------------------------------------------------------------
    # prepare(): compile and load (the helper; ~2 s), fds held, nothing attached.
    # load(): prepare() if not done, then attach the tracepoints and start the reader.
    # detach(): the reverse of the attach only: the fds stay, ready for the next load().
    # close(): detach and release everything.
    def prepare(self) -> None:
        """Compile and load the programs and maps, attach nothing. Idempotent."""
        if self._reader is not None:
            return
        started = time.monotonic()
        man = run_loader(self.options)
        self.from_cache = bool(man.get("cached"))
        self._fds = [p["fd"] for p in man["progs"]] + [m["fd"] for m in man["maps"]]
        try:  # on any failure, nothing stays open
            self._ncpus = bpfsys.possible_cpus()
            self._maps.update(bpfsys.manifest_maps(man["maps"], self._ncpus))
            self._tracepoints = [(p["fd"], p["tp"]) for p in man["progs"]
                                 if p["kind"] == "tracepoint"]
            self._tls_progs = {p["name"]: p["fd"] for p in man["progs"]
                               if p["kind"] != "tracepoint"}
            events = next(m for m in man["maps"] if m["name"] == "events")
            self._reader = RingReader(events["fd"], events["max_entries"], self._sink, BATCH_MAX)
        except BaseException as err:
            self._release()
            if isinstance(err, (OSError, ValueError)):
                raise ProbeError(f"loading {SOURCE.name} failed: {err}") from err
            raise
        self.prepare_seconds = time.monotonic() - started

    def load(self) -> None:
        """Attach (after prepare(), which runs here if it has not): the probes are live."""
        started = time.monotonic()
        self.prepare()
        if self._links:
            return
        try:
            for fd, tp in self._tracepoints:
                cat, event = tp.split(":", 1)
                self._links.append(bpfsys.attach_tracepoint(fd, cat, event))
        except BaseException as err:
            self._detach()
            if isinstance(err, (OSError, ValueError)):
                raise ProbeError(f"attaching {SOURCE.name} failed: {err}") from err
            raise
        self.load_seconds = time.monotonic() - started
        self._stop.clear()
        self._thread = threading.Thread(target=self._drain, name="ringbuf-reader", daemon=True)
        self._thread.start()

    def detach(self) -> None:
        """Stop the reader, detach every program and drain what is left; keep the fds (the
        next load() only attaches). Returns with nothing of ours running in the kernel."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=READER_JOIN_TIMEOUT)
            if thread.is_alive():
                # Stuck in the sink: draining or unmapping the ring under it would race
                # (a read of unmapped pages kills the daemon). Leave the mapping to it.
                log.warning("ring-buffer reader did not stop; leaving its mapping in place")
                self._reader = None
        self._detach()  # first, so the final drain sees every record the programs wrote
        if self._reader is not None:
            self._reader.drain()

    def close(self) -> None:
        """Stop the reader, detach every program, drain what is left and close the fds."""
        self.detach()
        self._release()

    def _detach(self) -> None:
        self.tls.close()
        links, self._links = self._links, []
        for fd in links:
            os.close(fd)
        for flag in ("tls_hooked", "shedding"):  # the next attach starts from neither
            table = self._maps.get(flag)
            if table is not None:
                with contextlib.suppress(OSError):  # detaching goes on regardless
                    table.update(_ZERO, _OFF)
        if self._shedding and self._pressure is not None:
            self._pressure.shed_ended()
        self._shedding = None  # the reader's first step after the next attach writes it

    def _release(self) -> None:
        self._maps.clear()
        self._user_bits.clear()
        self._detach()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
        self._tls_progs.clear()
        self._tracepoints = []

    @property
    def loaded(self) -> bool:
        return self._reader is not None

    @property
    def attached(self) -> bool:
        return bool(self._links)

    # -- targets ---------------------------------------------------------------
    def _leaf(self, spec: TargetSpec) -> bytes:
        return TARGET.pack(spec.cookie, min(spec.payload_cap, self.options.max_payload),
                           spec.sample_every, spec.rate_limit)

    def add_pid(self, tgid: int, spec: TargetSpec) -> None:
        # The bit first: the programs test it before the hash (never a false negative).
        newly = self._user_bit(tgid, True)
        try:
            self._maps["targets"].update(_U32.pack(tgid), self._leaf(spec))
        except BaseException:
            if newly:  # else it was ours already: the tgid may still be in the hash
                self._user_bit(tgid, False)
            raise

    def refresh_pid(self, tgid: int, spec: TargetSpec) -> bool:
        """A new spec for a process the kernel traces already (a target's child): only if
        it is still there (False if it exited meanwhile), and without a bit of ours, so a
        child's exit leaves nothing of it behind."""
        return self._maps["targets"].replace(_U32.pack(tgid), self._leaf(spec))

    def remove_pid(self, tgid: int) -> None:
        # already gone: the process exited and the kernel side removed it
        self._maps["targets"].delete(_U32.pack(tgid))
        self._user_bit(tgid, False)

    def _user_bit(self, tgid: int, on: bool) -> bool:
        """Set or clear a tgid's bit in target_bits_user; True if that changed it."""
        word, bit = tgid >> 6, 1 << (tgid & 63)
        with self._bits_lock:
            old = self._user_bits.get(word, 0)
            new = old | bit if on else old & ~bit
            if new == old:
                return False
            self._maps["target_bits_user"].update(_U32.pack(word), _U64.pack(new))
            if new:
                self._user_bits[word] = new
            else:
                del self._user_bits[word]
            return True

    def set_fd_cap(self, tgid: int, fd: int, cap: int) -> None:
        """Copy up to `cap` payload bytes (at most max_payload) per call on this fd of a
        payload-level target; the kernel forgets it when the fd is closed."""
        self._maps["fd_caps"].update(_U64.pack(tgid << 32 | (fd & 0xFFFFFFFF)),
                                     _U32.pack(min(cap, self.options.max_payload)))

    def clear_fd_cap(self, tgid: int, fd: int) -> None:
        self._maps["fd_caps"].delete(_U64.pack(tgid << 32 | (fd & 0xFFFFFFFF)))

    def attach_tls(self, pids: list[int]) -> None:
        """Plaintext capture for payload-level targets that use OpenSSL."""
        self._tls_hooked()
        self.tls.attach_for(self._tls_progs, pids)

    def attach_tls_system(self) -> None:
        """Plaintext capture for processes a comm or cgroup target will start: the host's
        own libssl, probed now (a process that maps it later is covered from its first call)."""
        self._tls_hooked()
        self.tls.attach_paths(self._tls_progs, system_libssl_paths())

    def _tls_hooked(self) -> None:
        """Before the first SSL uprobe: I/O exits look up tls_calls from now on."""
        self._maps["tls_hooked"].update(_ZERO, _ON)

    def tls_failures(self) -> int:
        """Libraries (per process path) whose TLS uprobes failed: their plaintext is missing."""
        return len(self.tls.failed)

    def pids(self) -> dict[int, int]:
        """tgid -> cookie for every process the kernel is tracing now."""
        return {_U32.unpack(k)[0]: TARGET.unpack(v)[0]
                for k, v in self._maps["targets"].items()}

    @staticmethod
    def _comm_key(comm: str) -> bytes:
        return comm.encode()[:_COMM_LEN - 1].ljust(_COMM_LEN, b"\0")

    def add_comm(self, comm: str, spec: TargetSpec) -> None:
        self._maps["comm_targets"].update(self._comm_key(comm), self._leaf(spec))

    def remove_comm(self, comm: str) -> None:
        self._maps["comm_targets"].delete(self._comm_key(comm))

    def add_cgroup(self, cgroup_id: int, spec: TargetSpec) -> None:
        self._maps["cgroup_targets"].update(_U64.pack(cgroup_id), self._leaf(spec))

    def remove_cgroup(self, cgroup_id: int) -> None:
        self._maps["cgroup_targets"].delete(_U64.pack(cgroup_id))

    # -- counters --------------------------------------------------------------
    def ring_usage(self) -> tuple[int, int, int]:
        """(bytes waiting now, most seen waiting at a drain since load, ring size)."""
        reader = self._reader
        if reader is None:
            return 0, 0, 0
        return reader.used(), reader.peak, reader.size

    def stats(self) -> dict[str, int]:
        table = self._maps.get("stats")
        if table is None:
            return {}
        out = {}
        for s in Stat:
            raw = table.lookup(_U32.pack(s.value))
            out[s.name.lower()] = sum(struct.unpack(f"<{self._ncpus}Q", raw)) if raw else 0
        return out

    # -- reader ----------------------------------------------------------------
    def _drain(self) -> None:
        # Records are submitted with BPF_RB_NO_WAKEUP: wakeups cost more than the
        # record, so drain on a timer instead of epoll.
        interval = self.options.poll_interval
        reader = self._reader
        assert reader is not None
        while not self._stop.is_set():
            reader.drain()
            if self._pressure is not None:
                self._shed_step(self._pressure)
            self._stop.wait(interval)

    def _shed_step(self, pressure: Pressure) -> None:
        """Tell the kernel to shed while the pipeline is overloaded, and to stop after. The
        end goes to the pipeline before the next drain, which holds the first records
        written after the gap."""
        want = pressure.overloaded()
        was = self._shedding
        if want == was:
            return
        try:
            self._maps["shedding"].update(_ZERO, _ON if want else _OFF)
        except OSError as err:  # the pipeline's own drops still bound it
            log.warning("could not %s shedding in the kernel: %s",
                        "start" if want else "stop", err)
            return
        self._shedding = want
        if want:
            log.debug("pipeline overloaded: the kernel sheds targets' I/O syscalls (counted)")
        elif was:
            pressure.shed_ended()
            log.debug("pipeline caught up: the kernel records every I/O syscall again")
