"""A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) consumer straight on the map's mmap.

Layout (kernel/bpf/ringbuf.c): the map fd mmaps as
  offset 0          one page, read-write: consumer_pos (u64 at offset 0)
  offset page_size  one page read-only: producer_pos (u64 at 0), then the data area of
                    size max_entries mapped twice back to back, so that a record that
                    wraps around the end is contiguous in our view.
Each record starts with an 8-byte header: u32 len (| BUSY_BIT while the producer has
reserved but not committed it, | DISCARD_BIT when it was discarded), u32 pg_off; the
payload follows; records are padded to 8 bytes.

Memory ordering. The producer advances producer_pos at reserve time and commits a record
by clearing BUSY_BIT in its header with a release store (after writing the payload). We
read producer_pos, then for each record its header, and stop at the first BUSY one: an
acquire on the header is what orders the payload reads after it. On x86-64 (TSO, the only
arch we run on in CI) every plain load is an acquire and every plain store a release, so
the plain 8-byte loads and store ctypes does through c_uint64 are enough: loads are not
reordered with other loads, and our consumer_pos store cannot become visible before the
loads that copied the records out (stores are not reordered with earlier loads). On
arm64 the same code relies on the record copy (bytes()) finishing before the store, which
CPython's sequencing does not formally guarantee; it is what the prototypes did and what
bcc's python bindings do not need because they use libbpf's smp_* helpers. A stale
consumer_pos seen by the producer only makes the ring look fuller (counted drops), never
lets it overwrite unread data.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SIZE = 8
_HDR = struct.Struct("<I")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


def walk(data: memoryview, mask: int, cons: int, prod: int, limit: int,
         out: list[bytes]) -> int:
    """Copy committed records from cons up to prod (at most `limit`) into out.

    `data` is the data area seen twice (2 * (mask+1) bytes). Discarded records are
    skipped. Returns the new consumer position (stops before a BUSY record).
    """
    n = 0
    unpack = _HDR.unpack_from
    while cons < prod and n < limit:
        off = cons & mask
        (hlen,) = unpack(data, off)
        if hlen & BUSY_BIT:
            break  # reserved, not committed yet: retry at the next drain
        size = hlen & ~(BUSY_BIT | DISCARD_BIT)
        if not hlen & DISCARD_BIT:
            start = off + HDR_SIZE
            out.append(bytes(data[start:start + size]))
            n += 1
        cons += (size + HDR_SIZE + 7) & ~7
    return cons


Walk = Callable[[memoryview, int, int, int, int, list[bytes]], int]
_walk_c: Walk | None
try:  # the C twin of walk() (probes/_ringwalk.c, optional at install): ~20x faster
    from probes._ringwalk import walk as _walk_c
except ImportError:  # no compiler or Python headers where it was installed
    _walk_c = None
WALK_IMPL = "c" if _walk_c is not None else "python"  # logged at start, in status
_walk: Walk = _walk_c if _walk_c is not None else walk


class RingReader:
    """Drains one ring buffer map fd into sink(list[bytes]) batches of at most `batch`."""

    peak = 0  # most bytes seen waiting at a drain (ring usage, read by metrics)

    def __init__(self, map_fd: int, size: int, sink: Callable[[list[bytes]], None],
                 batch: int = 1024) -> None:
        if size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        self._sink = sink
        self._batch_max = batch
        self.size = size
        self._mask = size - 1
        self._page = mmap.PAGESIZE
        self._cons_len = self._page
        self._prod_len = self._page + 2 * size
        cons = _libc.mmap(None, self._cons_len, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_SHARED, map_fd, 0)
        if cons in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap of the ring buffer consumer page failed")
        prod = _libc.mmap(None, self._prod_len, mmap.PROT_READ, mmap.MAP_SHARED, map_fd,
                          self._page)
        if prod in (None, _MAP_FAILED):
            err = ctypes.get_errno()  # before munmap() overwrites it
            _libc.munmap(cons, self._cons_len)
            raise OSError(err, "mmap of the ring buffer data pages failed")
        self._cons_addr: int | None = cons
        self._prod_addr: int | None = prod
        self._consumer = ctypes.c_uint64.from_address(cons)
        self._producer = ctypes.c_uint64.from_address(prod)
        # Read-only pages: the memoryview is only ever read.
        area = (ctypes.c_char * (2 * size)).from_address(prod + self._page)
        self._data = memoryview(area).cast("B")

    def drain(self) -> int:
        """Hand the records committed when the call starts to the sink; returns how many.

        Bounded: producer_pos is read once, so a producer that keeps the ring busy cannot
        keep the caller (the reader thread, which close() waits for) in here forever.
        """
        if self._cons_addr is None:
            return 0
        total = 0
        cons = self._consumer.value
        prod = self._producer.value  # acquire (see the module docstring)
        if prod - cons > self.peak:
            self.peak = prod - cons
        while True:
            if cons >= prod:
                return total
            batch: list[bytes] = []
            new = _walk(self._data, self._mask, cons, prod, self._batch_max, batch)
            if new == cons:
                return total  # the next record is still being written
            # Release: records are copied out before the kernel may reuse their space.
            self._consumer.value = new
            cons = new
            if batch:
                total += len(batch)
                self._sink(batch)

    def used(self) -> int:
        """Bytes the producer has reserved that we have not consumed yet (a snapshot)."""
        if self._cons_addr is None:
            return 0
        return max(0, self._producer.value - self._consumer.value)

    def close(self) -> None:
        if self._cons_addr is None:
            return
        self._data.release()
        _libc.munmap(self._prod_addr, self._prod_len)
        _libc.munmap(self._cons_addr, self._cons_len)
        self._cons_addr = self._prod_addr = None
