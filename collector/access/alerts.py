"""The [notify] hook: a command run with an audit record as JSON on stdin (break-glass), the
way to reach Slack or PagerDuty without periscope carrying their clients.

No shell: the command is an argv. It runs on its own thread, so a request never waits for
it; it gets `timeout_s`, then is killed. Every outcome is counted (notify_sent,
notify_failed) and a failure is logged.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger("periscope.notify")


class Hook:
    def __init__(self, command: Sequence[str], timeout_s: float,
                 counters: Counter[str] | None = None) -> None:
        self.command = list(command)
        self.timeout_s = timeout_s
        self.counters: Counter[str] = Counter() if counters is None else counters

    def fire(self, record: Mapping[str, Any]) -> threading.Thread | None:
        """Start the command with `record` on stdin; the thread (for tests), or None if off."""
        if not self.command:
            return None
        data = json.dumps(record, sort_keys=True).encode() + b"\n"
        t = threading.Thread(target=self.run, args=(data,), name="notify", daemon=True)
        t.start()
        return t

    def run(self, data: bytes) -> bool:
        """Run the command once, bounded by timeout_s. True when it exited 0."""
        what = self.command[0]
        try:
            p = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 close_fds=True, start_new_session=True)
        except OSError as err:
            return self._failed(f"{what}: cannot start: {err.strerror}")
        try:
            _, err_out = p.communicate(data, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return self._failed(f"{what}: killed after {self.timeout_s}s")
        if p.returncode != 0:
            tail = err_out.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return self._failed(f"{what}: exit status {p.returncode}: {tail[0][:200]}")
        self.counters["notify_sent"] += 1
        return True

    def _failed(self, why: str) -> bool:
        self.counters["notify_failed"] += 1
        log.error("notify hook failed: %s", why)
        return False
