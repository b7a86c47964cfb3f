"""Loader for trace.bpf.c: compile, attach, fill the target maps, drain the ring buffer.

This module is the only place that touches bcc, and imports it lazily so that the
rest of periscope imports on machines without BPF.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.layout import Stat
from probes.tls import TlsHooks

PROBE_DIR = Path(__file__).resolve().parent
SOURCE = PROBE_DIR / "trace.bpf.c"
# Compiled as one object with trace.bpf.c (shared maps and ring buffer); bcc only turns
# functions of the main text into programs, so the sources are joined, not #included.
TLS_SOURCE = PROBE_DIR / "tls.bpf.c"
BATCH_MAX = 1024  # records per batch handed to the pipeline


class ProbeError(RuntimeError):
    """The probe could not be compiled, loaded or attached."""


@dataclass(frozen=True)
class ProbeOptions:
    max_payload: int = 256       # compile-time data[] size (bytes; power of two)
    ringbuf_pages: int = 1024    # 4 KiB pages
    poll_interval: float = 0.01  # seconds between ring-buffer drains (no wakeups)


@dataclass(frozen=True)
class TargetSpec:
    cookie: int
    payload_cap: int = 0   # 0: meta only
    sample_every: int = 0  # 0/1: all syscalls


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


class TraceProbe:
    """One loaded instance of trace.bpf.c, drained by a reader thread."""

    def __init__(self, options: ProbeOptions, sink: Callable[[list[bytes]], None]) -> None:
        self.options = options
        self._sink = sink
        self._bpf: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._batch: list[bytes] = []
        self.load_seconds = 0.0
        self.tls = TlsHooks()

    # -- lifecycle -------------------------------------------------------------
    def load(self) -> None:
        try:
            from bcc import BPF  # lazy: only probes/ imports bcc
        except ImportError as err:
            raise ProbeError("bcc is not importable: install python3-bpfcc") from err
        max_data = _pow2(max(16, self.options.max_payload))
        cflags = [
            f"-I{PROBE_DIR}",
            f"-DMAX_DATA={max_data}",
            f"-DRINGBUF_PAGES={_pow2(self.options.ringbuf_pages)}",
            "-Wno-macro-redefined",
        ]
        started = time.monotonic()
        try:
            text = SOURCE.read_bytes() + b"\n" + TLS_SOURCE.read_bytes()
            self._bpf = BPF(text=text, cflags=cflags)
        except Exception as err:  # bcc raises bare Exception for compile/load errors
            raise ProbeError(f"loading {SOURCE.name} failed: {err}") from err
        self.load_seconds = time.monotonic() - started
        _trim_heap()
        self._bpf["events"].open_ring_buffer(self._on_record)
        self._stop.clear()
        self._thread = threading.Thread(target=self._drain, name="ringbuf-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader and detach every program (bcc cleanup closes all fds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._bpf is not None:
            self._drain_once()
            self._bpf.cleanup()
            self._bpf = None

    @property
    def loaded(self) -> bool:
        return self._bpf is not None

    # -- targets ---------------------------------------------------------------
    def _leaf(self, table: Any, spec: TargetSpec) -> Any:
        leaf = table.Leaf()
        leaf.cookie = spec.cookie
        leaf.payload_cap = min(spec.payload_cap, self.options.max_payload)
        leaf.sample_every = spec.sample_every
        return leaf

    def add_pid(self, tgid: int, spec: TargetSpec) -> None:
        t = self._bpf["targets"]
        t[t.Key(tgid)] = self._leaf(t, spec)

    def remove_pid(self, tgid: int) -> None:
        t = self._bpf["targets"]
        # already gone: the process exited and the kernel side removed it
        with contextlib.suppress(KeyError):
            del t[t.Key(tgid)]

    def attach_tls(self, pids: list[int]) -> None:
        """Plaintext capture for payload-level targets that use OpenSSL."""
        self.tls.attach_for(self._bpf, pids)

    def pids(self) -> dict[int, int]:
        """tgid -> cookie for every process the kernel is tracing now."""
        return {k.value: v.cookie for k, v in self._bpf["targets"].items()}

    def add_comm(self, comm: str, spec: TargetSpec) -> None:
        t = self._bpf["comm_targets"]
        key = t.Key()
        key.comm = comm.encode()[:15]
        t[key] = self._leaf(t, spec)

    def remove_comm(self, comm: str) -> None:
        t = self._bpf["comm_targets"]
        key = t.Key()
        key.comm = comm.encode()[:15]
        with contextlib.suppress(KeyError):
            del t[key]

    def add_cgroup(self, cgroup_id: int, spec: TargetSpec) -> None:
        t = self._bpf["cgroup_targets"]
        t[t.Key(cgroup_id)] = self._leaf(t, spec)

    def remove_cgroup(self, cgroup_id: int) -> None:
        t = self._bpf["cgroup_targets"]
        with contextlib.suppress(KeyError):
            del t[t.Key(cgroup_id)]

    # -- counters --------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        if self._bpf is None:
            return {}
        table = self._bpf["stats"]
        out = {}
        for s in Stat:
            out[s.name.lower()] = sum(table[ctypes.c_int(s.value)])
        return out

    # -- reader ----------------------------------------------------------------
    def _on_record(self, _ctx: Any, data: Any, size: int) -> None:
        self._batch.append(ctypes.string_at(data, size))
        # consume() only returns once the ring is empty, which a producer as fast as
        # us keeps from happening: hand over bounded batches as we go.
        if len(self._batch) >= BATCH_MAX:
            batch, self._batch = self._batch, []
            self._sink(batch)

    def _drain_once(self) -> None:
        self._bpf.ring_buffer_consume()
        if self._batch:
            batch, self._batch = self._batch, []
            self._sink(batch)

    def _drain(self) -> None:
        # Records are submitted with BPF_RB_NO_WAKEUP: wakeups cost more than the
        # record, so drain on a timer instead of epoll.
        interval = self.options.poll_interval
        while not self._stop.is_set():
            self._drain_once()
            self._stop.wait(interval)


def _trim_heap() -> None:
    """Give clang/LLVM's freed compile-time heap back to the OS (bench: ~20 MB of RSS)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cgroup_id(path: str) -> int:
    """cgroup v2 id of a cgroup directory (its kernfs inode number)."""
    full = path if path.startswith("/sys/fs/cgroup") else "/sys/fs/cgroup/" + path.lstrip("/")
    return os.stat(full).st_ino
