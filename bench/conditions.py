"""Conditions a workload runs under: each is a context manager yielding an Armed object
whose arm(pid) is called before the workload starts and whose info is filled at exit."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench import harness as h


@dataclass
class Armed:
    arm: Callable[[int], None] = lambda _pid: None
    info: dict[str, Any] = field(default_factory=dict)


Condition = Callable[[], AbstractContextManager[Armed]]


def drain(d: h.Daemon, timeout: float = 60) -> dict[str, Any]:
    """Wait until the pipeline has consumed everything the kernel emitted; return status."""
    deadline = time.monotonic() + timeout
    st = d.status()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        nxt = d.status()
        p = nxt["pipeline"]
        done = (p.get("received", 0) + p.get("dropped_overload", 0)
                >= nxt["kernel"].get("emitted", 0))
        if done and p.get("backlog", 0) == 0 and nxt["pipeline"] == st["pipeline"]:
            return nxt
        st = nxt
    return st


@contextmanager
def none() -> Iterator[Armed]:
    yield Armed()


@contextmanager
def idle() -> Iterator[Armed]:
    d = h.Daemon()
    try:
        armed = Armed()
        yield armed
        # lazy attach: with no session, nothing of ours may be loaded in the kernel
        armed.info = {"probes_attached": d.status()["probes_attached"]}
    finally:
        d.stop()


@contextmanager
def untargeted() -> Iterator[Armed]:
    d = h.Daemon()
    try:
        with h.sleeper() as pid, h.session(d, [f"pid:{pid}"]):
            yield Armed()
    finally:
        d.stop()


def targeted(level: str, rate_limit: int = 0) -> Condition:
    """The workload as a target at `level`. rate_limit=0 (unlimited) so every syscall is
    exported and costs are per traced syscall; pass the shipped default to measure that."""

    @contextmanager
    def cond() -> Iterator[Armed]:
        d = h.Daemon(f"[capture]\nrate_limit = {rate_limit}\n")
        stack = ExitStack()
        sessions: list[h.Session] = []

        def arm(pid: int) -> None:
            sessions.append(stack.enter_context(h.session(d, [f"pid:{pid}"], level)))

        armed = Armed(arm)
        try:
            yield armed
            st = drain(d)
            time.sleep(0.3)  # let the last events reach the client
            armed.info = {"kernel": st["kernel"], "pipeline": st["pipeline"],
                          "exported": sum(s.lines for s in sessions),
                          "ended": [s.ended.decode(errors="replace") for s in sessions if s.ended],
                          "probe_load_s": st["probe_load_s"],
                          "thread_cpu_s": st.get("thread_cpu_s", {})}
        finally:
            stack.close()
            d.stop()

    return cond


def floor(kind: str) -> Condition:
    @contextmanager
    def cond() -> Iterator[Armed]:
        with h.floor(kind):
            yield Armed()

    return cond


@contextmanager
def bpftrace() -> Iterator[Armed]:
    with h.bpftrace(h.tracepoints()):
        yield Armed()
