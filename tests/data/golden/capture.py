"""Regenerate the decode golden files from a real capture (root; run from the repo root).

    sudo .venv/bin/python tests/data/golden/capture.py

Each file holds the record's hex bytes and the decoded JSON; review diffs by hand.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from probes.layout import Op, Sc, decode
from probes.trace import ProbeOptions, TargetSpec, TraceProbe
from tests.unit.golden import dump

HERE = Path(__file__).resolve().parent
CHILD = r"""
import os, socket, sys
sys.stdin.readline()
fd = os.open("/tmp/periscope-golden.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b"GET /golden HTTP/1.1\r\nHost: example\r\n\r\n")
os.close(fd)
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    pass
s.close()
os.execv("/bin/true", ["true", "--golden", "arg two"])
"""


def main() -> None:
    records: list[bytes] = []
    probe = TraceProbe(ProbeOptions(max_payload=256), records.extend)
    probe.load()
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(lsn.getsockname()[1])],
                             stdin=subprocess.PIPE)
    probe.add_pid(child.pid, TargetSpec(cookie=42, payload_cap=64))
    assert child.stdin is not None
    child.stdin.write(b"go\n")
    child.stdin.flush()
    child.wait()
    time.sleep(0.2)
    probe.close()
    wanted = {
        "openat": lambda r: r.hdr.op == Op.SYSCALL and r.nr == Sc.OPENAT
        and r.data.endswith(b"periscope-golden.txt"),
        "write_payload": lambda r: r.hdr.op == Op.SYSCALL and r.nr == Sc.WRITE and r.ret > 0
        and r.data.startswith(b"GET /golden"),
        "connect_inet": lambda r: r.hdr.op == Op.SYSCALL and r.nr == Sc.CONNECT,
        "exec_argv": lambda r: r.hdr.op == Op.EXEC,
        "exit": lambda r: r.hdr.op == Op.EXIT,
    }
    for name, pred in wanted.items():
        for raw in records:
            rec = decode(raw)
            if pred(rec):
                (HERE / f"{name}.golden").write_text(dump(raw, rec))
                print("wrote", name)
                break
        else:
            print("no record for", name)
    os.unlink("/tmp/periscope-golden.txt")


if __name__ == "__main__":
    main()
