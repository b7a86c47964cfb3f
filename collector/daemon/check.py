"""`periscoped --check`: report each kernel/host feature the daemon needs, with a verdict."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
REQUIRED_TP = ("syscalls/sys_enter_write", "syscalls/sys_exit_write", "sched/sched_process_fork",
               "sched/sched_process_exec", "sched/sched_process_exit")
CAP_NAMES = {21: "CAP_SYS_ADMIN", 38: "CAP_PERFMON", 39: "CAP_BPF", 24: "CAP_SYS_RESOURCE",
             2: "CAP_DAC_READ_SEARCH", 19: "CAP_SYS_PTRACE"}


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    required: bool = True
    fix: str = ""


def _bpf_syscall() -> Result:
    # bpf(BPF_PROG_LOAD, NULL, 0): EINVAL/EFAULT means the syscall exists; ENOSYS/EPERM do not help.
    libc = ctypes.CDLL(None, use_errno=True)
    nr = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
    if nr is None:
        return Result("bpf syscall", False, f"unsupported arch {platform.machine()}")
    rc = libc.syscall(nr, 5, None, 0)
    err = ctypes.get_errno()
    if rc < 0 and err in (38,):
        return Result("bpf syscall", False, "ENOSYS: kernel built without CONFIG_BPF_SYSCALL",
                      fix="use a kernel with CONFIG_BPF_SYSCALL=y")
    if rc < 0 and err == 1:
        return Result("bpf syscall", False, "EPERM: need CAP_BPF+CAP_PERFMON (or root)",
                      fix="run as root or grant CAP_BPF, CAP_PERFMON")
    return Result("bpf syscall", True, "available")


def _btf() -> Result:
    ok = Path("/sys/kernel/btf/vmlinux").exists()
    return Result("BTF", ok, "/sys/kernel/btf/vmlinux" + ("" if ok else " missing"), False,
                  "optional: only needed for future CO-RE probes")


def _tracefs() -> Result:
    for d in TRACEFS:
        if Path(d, "events").is_dir():
            return Result("tracefs", True, f"mounted at {d}")
    return Result("tracefs", False, "not mounted",
                  fix="mount -t tracefs tracefs /sys/kernel/tracing (provision.sh does this)")


def _tracepoints() -> Result:
    base = next((Path(d, "events") for d in TRACEFS if Path(d, "events").is_dir()), None)
    if base is None:
        return Result("syscall tracepoints", False, "tracefs not mounted")
    missing = [tp for tp in REQUIRED_TP if not (base / tp).is_dir()]
    if missing:
        return Result("syscall tracepoints", False, "missing: " + ", ".join(missing),
                      fix="kernel needs CONFIG_FTRACE_SYSCALLS=y")
    return Result("syscall tracepoints", True, f"{len(REQUIRED_TP)} required tracepoints present")


def _ringbuf() -> Result:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    ok = (major, minor) >= (5, 8)
    return Result("ring buffer", ok, f"kernel {platform.release()} ({'>=' if ok else '<'} 5.8)",
                  fix="BPF ring buffers need Linux 5.8 or newer")


def _uprobes() -> Result:
    base = next((Path(d) for d in TRACEFS if Path(d, "uprobe_events").exists()), None)
    return Result("uprobes", base is not None,
                  "uprobe_events present" if base else "uprobe_events missing", False,
                  "optional: TLS plaintext capture needs CONFIG_UPROBE_EVENTS")


def _kprobes() -> Result:
    base = next((Path(d) for d in TRACEFS if Path(d, "kprobe_events").exists()), None)
    return Result("kprobes", True, "present (unused)" if base else "absent (not needed)", False)


def _headers() -> Result:
    m = Path("/lib/modules") / platform.release()
    build = m / "build" / "include" / "generated" / "autoconf.h"
    src = m / "source" / "include" / "linux" / "kconfig.h"
    if build.exists() and (src.exists() or (m / "build/include/linux/kconfig.h").exists()):
        return Result("kernel headers", True, f"{os.path.realpath(m / 'build')}")
    return Result("kernel headers", False, f"incomplete or missing under {m}",
                  fix="run vagrant/provision.sh (installs and links headers)")


def _bcc() -> Result:
    try:
        import bcc
    except ImportError:
        return Result("bcc", False, "python bcc not importable",
                      fix="apt-get install python3-bpfcc")
    where = Path(bcc.__file__).parent
    return Result("bcc", True, f"{getattr(bcc, '__version__', '?')} from {where}")


def _caps() -> Result:
    eff = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            eff = int(line.split()[1], 16)
    have = [n for bit, n in CAP_NAMES.items() if eff >> bit & 1]
    ok = bool(eff >> 21 & 1) or (bool(eff >> 39 & 1) and bool(eff >> 38 & 1))
    return Result("capabilities", ok, ", ".join(have) or "none",
                  fix="run as root or with CAP_BPF and CAP_PERFMON")


def _perf_paranoid() -> Result:
    # Attaching a tracepoint goes through perf_event_open: above 2 (Debian/Ubuntu default 3/4)
    # that needs CAP_SYS_ADMIN, which the systemd unit does not grant (CAP_PERFMON suffices at 2).
    p = Path("/proc/sys/kernel/perf_event_paranoid")
    if not p.exists():
        return Result("perf_event_paranoid", False, "missing", False)
    level = int(p.read_text())
    ok = level <= 2
    return Result("perf_event_paranoid", ok,
                  f"{level} ({'CAP_PERFMON suffices' if ok else 'needs CAP_SYS_ADMIN'})", False,
                  "make install sets 2 in /usr/local/lib/sysctl.d/60-periscope.conf; or grant "
                  "CAP_SYS_ADMIN (docs/operations.md)")


def _lockdown() -> Result:
    p = Path("/sys/kernel/security/lockdown")
    text = p.read_text().strip() if p.exists() else "unknown"
    confidential = "[confidentiality]" in text
    return Result("lockdown", not confidential, text,
                  fix="lockdown=confidentiality forbids reading user memory from BPF")


CHECKS: tuple[Callable[[], Result], ...] = (
    _bpf_syscall, _caps, _tracefs, _tracepoints, _ringbuf, _headers, _bcc, _btf, _uprobes,
    _kprobes, _perf_paranoid, _lockdown,
)


def run() -> list[Result]:
    out = []
    for check in CHECKS:
        try:
            out.append(check())
        except Exception as err:  # a check must report, not crash the report
            out.append(Result(check.__name__.strip("_"), False, f"check failed: {err}"))
    return out


def report(results: list[Result]) -> tuple[str, bool]:
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
        lines.append(f"  [{mark}] {r.name:<{width}}  {r.detail}")
        if not r.ok and r.fix:
            lines.append(f"         {'':<{width}}  fix: {r.fix}")
    failed = [r.name for r in results if r.required and not r.ok]
    verdict = ("verdict: READY - periscoped can trace on this host" if not failed
               else f"verdict: NOT READY - missing {', '.join(failed)}")
    return "\n".join(["periscoped feature check", *lines, verdict]), not failed
