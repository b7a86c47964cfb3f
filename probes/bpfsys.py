"""Thin ctypes wrappers over bpf(2), perf_event_open(2) and the perf ioctls.

The daemon holds only file descriptors (programs and maps, handed over by the loader
helper, see probes/loader.py) and drives them through these calls: it never maps libbcc
or LLVM. Everything here exists since Linux 5.8 (ring buffer); nothing newer than the
6.1 kernel the CI guest boots is used.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from pathlib import Path
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# syscall numbers per arch (asm-generic for arm64)
_NR = {
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
}[platform.machine()]

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_TYPES = (BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH)
BPF_ANY = 0
BPF_EXIST = 2  # update only a key that is there

# perf_event_open
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_ATTR_DISABLED = 1 << 0                 # perf_event_attr flag bits
PERF_ATTR_FREQ = 1 << 10                    # sample_freq (Hz) instead of sample_period
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400              # _IO('$', 0)
PERF_EVENT_IOC_SET_BPF = 0x40042408         # _IOW('$', 8, __u32)
PERF_ATTR_SIZE = 128                        # PERF_ATTR_SIZE_VER7; the kernel accepts smaller

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe")

# union bpf_attr for the MAP_*_ELEM commands: map_fd, pad, key, value|next_key, flags
_ELEM_ATTR = struct.Struct("<IIQQQ")


class BpfError(OSError):
    """A bpf(2)/perf_event_open(2) call failed; errno is set."""


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise BpfError(err, f"{what}: {os.strerror(err)}")


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    return int(_libc.syscall(_NR["bpf"], cmd, attr, len(attr)))


class Map:
    """A BPF map fd with fixed key and value sizes (value_size already per-CPU-expanded).

    Thread-safe: every call uses its own buffers (the daemon's status, metrics and session
    threads all touch the maps).
    """

    def __init__(self, fd: int, key_size: int, value_size: int, name: str = "") -> None:
        self.fd = fd
        self.name = name
        self.key_size = key_size
        self.value_size = value_size

    def _call(self, cmd: int, key: bytes | None, out: ctypes.Array[ctypes.c_char] | None,
              flags: int = 0) -> int:
        kbuf = None
        if key is not None:
            if len(key) != self.key_size:
                raise ValueError(f"{self.name}: key of {len(key)} bytes, want {self.key_size}")
            kbuf = ctypes.create_string_buffer(key, self.key_size)
        attr = ctypes.create_string_buffer(_ELEM_ATTR.pack(
            self.fd, 0, ctypes.addressof(kbuf) if kbuf is not None else 0,
            ctypes.addressof(out) if out is not None else 0, flags), _ELEM_ATTR.size)
        return _bpf(cmd, attr)

    def lookup(self, key: bytes) -> bytes | None:
        value = ctypes.create_string_buffer(self.value_size)
        if self._call(BPF_MAP_LOOKUP_ELEM, key, value) < 0:
            if ctypes.get_errno() == errno.ENOENT:
                return None
            _raise(f"lookup in {self.name}")
        return value.raw

    def update(self, key: bytes, value: bytes) -> None:
        self._update(key, value, BPF_ANY)

    def replace(self, key: bytes, value: bytes) -> bool:
        """Update a key only if it is there; False if it was not."""
        try:
            self._update(key, value, BPF_EXIST)
        except BpfError as err:
            if err.errno == errno.ENOENT:
                return False
            raise
        return True

    def _update(self, key: bytes, value: bytes, flags: int) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"{self.name}: value of {len(value)} bytes, want {self.value_size}")
        if self._call(BPF_MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)),
                      flags) < 0:
            _raise(f"update of {self.name}")

    def delete(self, key: bytes) -> bool:
        """False if the key was not there."""
        if self._call(BPF_MAP_DELETE_ELEM, key, None) < 0:
            if ctypes.get_errno() == errno.ENOENT:
                return False
            _raise(f"delete from {self.name}")
        return True

    def keys(self) -> list[bytes]:
        """Each key once. A hash map whose current key the kernel deletes as we walk (a
        target exiting) restarts GET_NEXT_KEY from its first key: skip the repeats."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        key: bytes | None = None  # NULL key: the first one
        nxt = ctypes.create_string_buffer(self.key_size)
        for _ in range(1 << 20):  # a map being refilled as we walk it: stop, don't spin
            if self._call(BPF_MAP_GET_NEXT_KEY, key, nxt) < 0:
                if ctypes.get_errno() == errno.ENOENT:
                    return out
                _raise(f"iterating {self.name}")
            key = nxt.raw
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def items(self) -> list[tuple[bytes, bytes]]:
        out = []
        for k in self.keys():
            v = self.lookup(k)
            if v is not None:  # deleted by the kernel side between the two calls
                out.append((k, v))
        return out


def map_info(fd: int) -> dict[str, int]:
    """The kernel's view of a map fd: type, id, key_size, value_size, max_entries, flags."""
    info = ctypes.create_string_buffer(80)  # struct bpf_map_info, its stable head
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)))
    if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) < 0:
        _raise(f"BPF_OBJ_GET_INFO_BY_FD({fd})")
    mtype, mid, ksz, vsz, nmax, flags = struct.unpack_from("<6I", info)
    return {"type": mtype, "id": mid, "key_size": ksz, "value_size": vsz,
            "max_entries": nmax, "flags": flags}


# union bpf_attr for BPF_MAP_CREATE: type, key_size, value_size, max_entries, map_flags,
# inner_map_fd, numa_node, map_name[16]; the rest (BTF ids, map_extra) zero.
_MAP_CREATE = struct.Struct("<7I16s")
_MAP_CREATE_SIZE = 72
# ... and BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
# kern_version, prog_flags, prog_name[16]; the rest (BTF, attach targets) zero.
_PROG_LOAD = struct.Struct("<IIQQIIQII16s")
_PROG_LOAD_SIZE = 128
_OBJ_NAME_LEN = 16
_VERIFIER_LOG = 1 << 20


def _obj_name(name: str) -> bytes:
    """A kernel object name: at most 15 of [A-Za-z0-9_.] (what bcc passes too)."""
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:_OBJ_NAME_LEN - 1] \
        .encode().ljust(_OBJ_NAME_LEN, b"\0")


def map_create(mtype: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               name: str = "") -> int:
    """BPF_MAP_CREATE; returns the map fd (close-on-exec, as the kernel makes them)."""
    attr = ctypes.create_string_buffer(_MAP_CREATE.pack(
        mtype, key_size, value_size, max_entries, flags, 0, 0, _obj_name(name)),
        _MAP_CREATE_SIZE)
    fd = _bpf(BPF_MAP_CREATE, attr)
    if fd < 0:
        _raise(f"creating map {name}")
    return fd


def prog_load(ptype: int, insns: bytes, license: str, kern_version: int, name: str) -> int:
    """BPF_PROG_LOAD: the kernel's verifier checks the program here, as for any loader.
    Returns the program fd; a rejection raises BpfError with the verifier's log tail."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = ctypes.create_string_buffer(_PROG_LOAD.pack(
            ptype, len(insns) // 8, ctypes.addressof(code), ctypes.addressof(lic),
            1 if log is not None else 0, len(log) if log is not None else 0,
            ctypes.addressof(log) if log is not None else 0, kern_version, 0,
            _obj_name(name)), _PROG_LOAD_SIZE)
        return _bpf(BPF_PROG_LOAD, attr)

    fd = load(None)  # no log first: the verifier is faster without one
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err in (errno.EPERM, errno.E2BIG, errno.ENOMEM):
        raise BpfError(err, f"loading program {name}: {os.strerror(err)}")
    log = ctypes.create_string_buffer(_VERIFIER_LOG)
    fd = load(log)
    if fd >= 0:  # passed the second time (a transient failure): keep it
        return fd
    err = ctypes.get_errno()
    tail = log.value.decode(errors="replace").strip().splitlines()[-8:]
    raise BpfError(err, f"loading program {name}: {os.strerror(err)}: " + " | ".join(tail))


def cpu_list(text: str) -> list[int]:
    """CPU ids of a sysfs cpu list ("0-3,5" → [0, 1, 2, 3, 5])."""
    out: list[int] = []
    for part in text.strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """Number of possible CPUs ("0-3,5" → 5): the per-CPU map value stride count.

    The kernel copies one value per possible CPU (num_possible_cpus(), the mask's
    weight), not per CPU id up to the highest: a sparse mask has fewer.
    """
    return len(cpu_list(Path(path).read_text()))


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    return cpu_list(Path(path).read_text())


def percpu_value_size(value_size: int, ncpus: int) -> int:
    return ((value_size + 7) // 8 * 8) * ncpus


# -- perf events ------------------------------------------------------------------
def manifest_maps(entries: list[dict[str, Any]], ncpus: int) -> dict[str, Map]:
    """The loader manifest's map entries as Maps by name (per-CPU values ncpus wide)."""
    out = {}
    for m in entries:
        vsz = m["value_size"]
        if m["type"] in PERCPU_TYPES:
            vsz = percpu_value_size(vsz, ncpus)
        out[m["name"]] = Map(m["fd"], m["key_size"], vsz, m["name"])
    return out


def _perf_attr(ptype: int, config: int, config1: int = 0, config2: int = 0,
               sample: int = 1, flags: int = 0) -> bytes:
    # type, size, config, sample_period|sample_freq, sample_type, read_format, flags
    # (bitfield), wakeup_events, bp_type, config1, config2; the rest zero.
    head = struct.pack("<IIQQQQQIIQQ", ptype, PERF_ATTR_SIZE, config, sample, 0, 0, flags, 1, 0,
                       config1, config2)
    return head + bytes(PERF_ATTR_SIZE - len(head))


def _perf_open_attach(attr: bytes, prog_fd: int, what: str, cpu: int = 0) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    # pid -1, cpu 0: for tracepoints and uprobes the program hangs off the event's
    # trace_event_call and runs on every CPU (what libbpf and bcc do). A sampling event
    # is per CPU: one per online CPU, every task on it.
    fd = int(_libc.syscall(_NR["perf_event_open"], buf, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        _raise(f"perf_event_open({what})")
    try:
        if _libc.ioctl(fd, PERF_EVENT_IOC_SET_BPF, ctypes.c_int(prog_fd)) < 0:
            _raise(f"PERF_EVENT_IOC_SET_BPF({what})")
        if _libc.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0:
            _raise(f"PERF_EVENT_IOC_ENABLE({what})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def tracepoint_id(category: str, name: str) -> int:
    for base in TRACEFS:
        p = Path(base, "events", category, name, "id")
        try:
            return int(p.read_text())
        except FileNotFoundError:
            continue
    raise BpfError(errno.ENOENT, f"tracepoint {category}:{name} not found in tracefs")


def attach_tracepoint(prog_fd: int, category: str, name: str) -> int:
    """Attach a BPF_PROG_TYPE_TRACEPOINT program; returns the perf event fd (close = detach)."""
    attr = _perf_attr(PERF_TYPE_TRACEPOINT, tracepoint_id(category, name))
    return _perf_open_attach(attr, prog_fd, f"{category}:{name}")


def _uprobe_pmu() -> tuple[int, int]:
    """(PMU type, retprobe config bit) of the uprobe perf PMU (Linux 4.17+)."""
    ptype = int((UPROBE_PMU / "type").read_text())
    fmt = (UPROBE_PMU / "format" / "retprobe").read_text().strip()  # "config:0"
    return ptype, int(fmt.split(":", 1)[1])


def attach_uprobe(prog_fd: int, path: str, offset: int, retprobe: bool) -> int:
    """Attach a BPF_PROG_TYPE_KPROBE program at path+offset (file offset) in every process."""
    ptype, bit = _uprobe_pmu()
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    attr = _perf_attr(ptype, (1 << bit) if retprobe else 0,
                      config1=ctypes.addressof(cpath), config2=offset)
    what = f"{'uretprobe' if retprobe else 'uprobe'} {path}+{offset:#x}"
    return _perf_open_attach(attr, prog_fd, what)


def attach_cpu_clock(prog_fd: int, cpu: int, freq: int) -> int:
    """Attach a BPF_PROG_TYPE_PERF_EVENT program to the software CPU clock of one CPU,
    sampling every task there about freq times a second; returns the perf event fd
    (close = detach). CPU-wide events need CAP_PERFMON (or perf_event_paranoid <= 0)."""
    attr = _perf_attr(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, sample=freq,
                      flags=PERF_ATTR_FREQ | PERF_ATTR_DISABLED)
    return _perf_open_attach(attr, prog_fd, f"cpu-clock on CPU {cpu}", cpu)


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program: the kernel counts them only while
    kernel.bpf_stats_enabled is 1 (bench use; it costs two clock reads per run)."""
    info = ctypes.create_string_buffer(216)  # struct bpf_prog_info up to recursion_misses
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)))
    if _bpf(BPF_OBJ_GET_INFO_BY_FD, attr) < 0:
        _raise(f"BPF_OBJ_GET_INFO_BY_FD({fd})")
    run_time_ns, run_cnt = struct.unpack_from("<QQ", info, 192)
    return run_time_ns, run_cnt
