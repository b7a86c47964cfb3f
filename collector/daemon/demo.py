"""`make demo`: start periscoped with embedded defaults, run a demo HTTP workload, trace it live.

The workload sends fake credentials (bearer token, cookie, password, card number) so that
the redaction is visible: the stream shows `[REDACTED:...]` where the secrets were.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self): self._reply()
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0))); self._reply()
    def _reply(self):
        body = b'{"status":"ok","user":"jane.doe@example.com"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "sid=7f3a9c2e41b84d6fa0c1; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""

CLIENT = r"""
import http.client, json, sys, time
port = int(sys.argv[1])
i = 0
while True:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    if i % 2:
        body = json.dumps({"user": "jane", "password": "hunter2-correct-horse",
                           "card": "4111 1111 1111 1111"})
        c.request("POST", "/login", body, {"Content-Type": "application/json"})
    else:
        c.request("GET", "/orders?id=%d&api_key=sk_live_51HxDemoKeyDoNotUse00000000" % i,
                  headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJqYW5lIn0."
                                            "ZGVtby1zaWduYXR1cmUtbm90LXJlYWw",
                           "Cookie": "sid=7f3a9c2e41b84d6fa0c1"})
    c.getresponse().read(); c.close()
    i += 1
    time.sleep(0.7)
"""


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="periscope-demo", description=__doc__)
    p.add_argument("-d", "--duration", default="20s", help="how long to trace (default 20s)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: run as root (sudo make demo): loading eBPF needs privileges",
              file=sys.stderr)
        return 2
    sock = "/run/periscope/periscope.sock"
    own_daemon = None
    env = {**os.environ, "PERISCOPE_SOCKET": sock}
    if not os.path.exists(sock):
        log_fd, log_name = tempfile.mkstemp(prefix="periscoped-demo-", suffix=".log")
        print(f"demo: starting periscoped with embedded defaults (log: {log_name})")
        own_daemon = subprocess.Popen([_venv_bin("periscoped")], stdout=log_fd,
                                      stderr=subprocess.STDOUT)
        os.close(log_fd)
        for _ in range(100):
            if os.path.exists(sock):
                break
            if own_daemon.poll() is not None:
                print(Path(log_name).read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
    else:
        print(f"demo: using the running periscoped at {sock}")
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    assert server.stdout is not None
    port = server.stdout.readline().decode().strip()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, port])
    print(f"demo: HTTP server pid {server.pid} on 127.0.0.1:{port}; a client sends fake "
          "secrets to it every 0.7 s")
    print(f"demo: $ periscope trace -p {server.pid} --level payload --reason demo "
          f"-d {a.duration}\n")
    try:
        rc = subprocess.call([_venv_bin("periscope"), "trace", "-p", str(server.pid),
                              "--level", "payload", "--reason", "demo", "-d", a.duration],
                             env=env)
    except KeyboardInterrupt:
        rc = 0
    finally:
        for proc in (client, server):
            proc.terminate()
            proc.wait()
        if own_daemon is not None:
            own_daemon.send_signal(signal.SIGTERM)
            own_daemon.wait(20)
    print("\ndemo: done. Trace your own process with:\n"
          f"  sudo {_venv_bin('periscope')} trace -p PID            # syscalls, meta level\n"
          f"  sudo {_venv_bin('periscope')} trace -n NAME --level payload --reason WHY\n"
          "  (start the daemon first: sudo .venv/bin/periscoped, or install the unit: "
          "sudo make install)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
