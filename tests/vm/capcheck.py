"""Do, inside periscoped.service's sandbox, each privileged thing the daemon does; report per step.

Run by tests/vm/capcheck.sh through `systemd-run` with the unit's [Service]
settings, once with the unit's capability set and once per capability
removed, which is how docs/operations.md's capability table was measured.
Standalone on purpose (Debian's python3 + python3-bpfcc only): it must work
before and independently of the daemon. Prints one line: the effective
capabilities and the steps that failed.
"""

from __future__ import annotations

import grp
import json
import os
import socket
import sys
import time
from pathlib import Path

BPF_TEXT = r"""
struct rec { u32 pid; char comm[16]; };
BPF_RINGBUF_OUTPUT(events, 8);
TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != TARGET_PID) return 0;
    struct rec *r = events.ringbuf_reserve(sizeof(struct rec));
    if (!r) return 0;
    r->pid = pid;
    bpf_get_current_comm(&r->comm, sizeof(r->comm));
    bpf_probe_read_user_str(&r->comm, sizeof(r->comm), (void *)args->filename);
    events.ringbuf_submit(r, 0);
    return 0;
}
"""


def step(results: dict[str, str], name: str, fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
        results[name] = "ok"
    except Exception as err:  # the report is the point
        results[name] = f"{type(err).__name__}: {err}"[:160]


def bpf_tracepoint_ringbuf() -> None:
    from bcc import BPF  # type: ignore[import-not-found]

    b = BPF(text=BPF_TEXT, cflags=[f"-DTARGET_PID={os.getpid()}"])
    got: list[int] = []
    b["events"].open_ring_buffer(lambda ctx, data, size: got.append(size))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        with open("/etc/hostname"):
            pass
        b.ring_buffer_poll(100)
    b.cleanup()
    if not got:
        raise RuntimeError("no event from the tracepoint via the ring buffer")


def main() -> int:
    other = int(sys.argv[1])  # a process owned by another user
    r: dict[str, str] = {}
    with open("/proc/self/status") as f:
        r["CapEff"] = next(line.split()[1] for line in f if line.startswith("CapEff"))
    step(r, "bpf_tracepoint_ringbuf", bpf_tracepoint_ringbuf)
    step(r, "proc_cgroup", lambda: Path(f"/proc/{other}/cgroup").read_text())
    step(r, "proc_exe", lambda: os.readlink(f"/proc/{other}/exe"))
    step(r, "proc_fd_list", lambda: os.listdir(f"/proc/{other}/fd"))
    step(r, "proc_fd_link", lambda: os.readlink(f"/proc/{other}/fd/0"))
    step(r, "proc_environ", lambda: Path(f"/proc/{other}/environ").read_bytes())
    step(r, "proc_net_tcp", lambda: Path(f"/proc/{other}/net/tcp").read_text())

    def sock() -> None:
        path = f"/run/periscope/capcheck-{os.getpid()}.sock"  # rows run side by side
        if os.path.exists(path):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        try:
            os.chown(path, 0, grp.getgrnam("periscope").gr_gid)
            os.chmod(path, 0o660)
        finally:
            s.close()
            os.unlink(path)

    step(r, "socket_chgrp_periscope", sock)

    def state() -> None:
        path = f"/var/lib/periscope/.capcheck-{os.getpid()}"
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)

    step(r, "state_dir_write", state)

    def memlock() -> None:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        r["memlock"] = f"{soft}/{hard}"

    step(r, "memlock_read", memlock)
    info = {k: r.pop(k) for k in ("CapEff", "memlock") if k in r}
    failed = {k: v for k, v in sorted(r.items()) if v != "ok"}
    verdict = f"all {len(r)} steps ok" if not failed else "FAILED " + json.dumps(failed)
    print(f"CapEff={info.get('CapEff')} memlock={info.get('memlock')}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
