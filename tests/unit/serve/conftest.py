"""A whole daemon minus the kernel: real gate, grants, audit log, store, pipeline, router and
tracer, on a fake procfs/cgroupfs, with a fake probe behind the tracer."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.access.audit import AuditLog
from collector.access.auth import Principal
from collector.access.gate import Gate
from collector.access.grants import GrantStore
from collector.access.policy import Policy
from collector.capture.events import Batch
from collector.capture.l7stage import L7Stage, StageOptions
from collector.capture.pipeline import Pipeline
from collector.capture.sockets import SocketBook
from collector.capture.tracer import Tracer
from collector.proc.facts import Enricher
from collector.proc.resolve import Resolver
from collector.proc.sockdiag import SockDiag
from collector.profile import Profile
from collector.profile.model import make_profile
from collector.serve.profiles import Profiles
from collector.serve.services import Services
from collector.serve.sessions import Router
from collector.store.l7store import L7Store
from collector.store.split import SplitSink
from collector.store.store import EventStore
from redact import Redactor
from tests.unit.pipeline_corpus import FakeRedactor

REDACTOR = Redactor.default()

DATA_PROC = Path(__file__).parents[2] / "data" / "proc"

POLICY = """
[roles.admin]
ops = ["*"]
max_level = "payload"
targets = ["*"]

[roles.viewer]
ops = ["trace", "events", "errors", "conns", "http", "sql", "redis", "dns", "top", "snapshot",
       "profile"]
max_level = "meta"
targets = ["*"]

[roles.shop]
ops = ["trace", "events", "errors", "conns", "http", "sql", "redis", "dns", "top"]
max_level = "payload"
targets = ["unit:shop.service"]
require_reason = true

[users]
root = ["admin"]
vera = ["viewer"]
sam = ["shop"]
"""


class NoSockets:
    """A sock_diag dump of a host without inet sockets."""

    def get_sock_stats(self, **_kw: Any) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def who(user: str, uid: int = 1000) -> Principal:
    return Principal(uid, uid, user, frozenset({uid}), frozenset({user}), 4242, "/usr/bin/x")


ROOT, VERA, SAM, NOBODY = who("root", 0), who("vera"), who("sam"), who("nobody", 65534)


class FakeProbe:
    """The ProbeLike the tracer drives: records the kernel filter, counts like the kernel."""

    def __init__(self) -> None:
        self.load_seconds = 0.25
        self.prepare_seconds = 0.5
        self.from_cache = False
        self.loaded = self.closed = self.prepared = False
        self.pid_map: dict[int, int] = {}
        self.comms: dict[str, Any] = {}
        self.cgroups: dict[int, Any] = {}
        self.counts = {"emitted": 0, "skipped_rate": 0, "drop_ringbuf": 0}
        self.tls: list[list[int]] = []
        self.fd_caps: dict[tuple[int, int], int] = {}
        self.ring = (0, 0, 4 << 20)

    def prepare(self) -> None:
        self.prepared = True

    def load(self) -> None:
        self.prepared = self.loaded = True
        self.closed = False

    def detach(self) -> None:
        self.closed = True  # nothing attached any more (what the tests ask of a release)

    def close(self) -> None:
        self.closed = True
        self.prepared = False

    def add_pid(self, tgid: int, spec: Any) -> None:
        self.pid_map[tgid] = spec[0]

    def refresh_pid(self, tgid: int, spec: Any) -> bool:
        if tgid not in self.pid_map:
            return False
        self.pid_map[tgid] = spec[0]
        return True

    def remove_pid(self, tgid: int) -> None:
        self.pid_map.pop(tgid, None)

    def pids(self) -> dict[int, int]:
        return dict(self.pid_map)

    def add_comm(self, comm: str, spec: Any) -> None:
        self.comms[comm] = spec

    def remove_comm(self, comm: str) -> None:
        self.comms.pop(comm, None)

    def add_cgroup(self, cgroup_id: int, spec: Any) -> None:
        self.cgroups[cgroup_id] = spec

    def remove_cgroup(self, cgroup_id: int) -> None:
        self.cgroups.pop(cgroup_id, None)

    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def attach_tls(self, pids: list[int]) -> None:
        self.tls.append(pids)

    def attach_tls_system(self) -> None:
        self.tls.append([])

    def set_fd_cap(self, tgid: int, fd: int, cap: int) -> None:
        self.fd_caps[(tgid, fd)] = cap

    def tls_failures(self) -> int:
        return 0

    def ring_usage(self) -> tuple[int, int, int]:
        return self.ring



class FakeSampler:
    """collector.profile.sample without BPF: after `load_s` (the compile), freq samples a
    second per pid until the duration or the cancel, in one stack whose leaf names a
    secret (so redaction shows)."""

    LEAF = "handle_request token=s3cr3tv4lue"

    def __init__(self, load_s: float = 0.0) -> None:
        self.load_s = load_s
        self.calls: list[dict[str, Any]] = []

    def __call__(self, pids: list[int], duration_s: float, freq: int, *,
                 redact: Callable[[str], str], cancel: threading.Event, symbolizer: Any,
                 on_start: Callable[[], None], probe_cache: Path | None = None) -> Profile:
        self.calls.append({"pids": pids, "duration_s": duration_s, "freq": freq,
                           "symbolizer": symbolizer, "probe_cache": probe_cache})
        cancel.wait(self.load_s)
        on_start()
        t0 = time.monotonic()
        cancel.wait(duration_s)
        secs = time.monotonic() - t0
        n = max(1, int(secs * freq))
        stacks = {(f"proc{pid}", "main", redact(self.LEAF)): n for pid in pids}
        return make_profile(stacks, pids=tuple(pids), freq=freq, duration_s=round(secs, 3))


@dataclass
class Host:
    svc: Services
    probes: list[FakeProbe]
    root: Path

    def close(self) -> None:
        self.svc.store.close()
        if self.svc.l7store is not None:
            self.svc.l7store.close()
        self.svc.gate.audit.close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    proc = tmp_path / "proc"
    shutil.copytree(DATA_PROC, proc, symlinks=True)
    other = proc / "5000"  # a second process, outside shop.service
    other.mkdir()
    (other / "comm").write_text("other\n")
    (other / "status").write_text("Name:\tother\nPPid:\t1\nUid:\t1000\t1000\t1000\t1000\n")
    (other / "cgroup").write_text("0::/system.slice/other.service\n")
    for unit, pid in (("shop.service", 4242), ("other.service", 5000)):
        cg = tmp_path / "cgroup" / "system.slice" / unit
        cg.mkdir(parents=True)
        (cg / "cgroup.procs").write_text(f"{pid}\n")
    resolver = Resolver(proc, tmp_path / "cgroup")
    probes: list[FakeProbe] = []

    def new_probe() -> FakeProbe:
        probes.append(FakeProbe())
        return probes[-1]

    store = EventStore(tmp_path / "events.db")
    l7store = L7Store(tmp_path / "events.db")
    router = Router()
    # connections and L7 records, with no sock_diag (a unit test sees no kernel sockets)
    book = SocketBook(proc, diag=SockDiag(NoSockets), seed_diag=SockDiag(NoSockets))
    stage = L7Stage(REDACTOR.redact_text, StageOptions(l7_cap=1024), procfs=proc, book=book,
                    fd_cap=lambda pid, fd, cap: tracer.set_fd_cap(pid, fd, cap))
    pipeline = Pipeline(FakeRedactor(), [SplitSink(store, l7store), router],
                        Enricher(proc), observers=[stage])
    # The corpus's records carry ktime ~1 s: make that now, not this host's boot, or a host
    # up longer than the store's retention prunes them at the first write.
    pipeline.clock.offset = time.time() - 1.0
    tracer = Tracer(new_probe, lambda cookie, cap: (cookie, cap), resolver)
    grants = GrantStore(str(tmp_path / "grants.json"))
    gate = Gate(Policy.from_toml(POLICY), None, grants, AuditLog(str(tmp_path / "audit.log")),
                Enricher(proc), resolver, redactor=REDACTOR)
    svc = Services(gate=gate, tracer=tracer, pipeline=pipeline, router=router, store=store,
                   grants=grants, audit_path=str(tmp_path / "audit.log"),
                   anchors_path=str(tmp_path / "audit.anchors"), max_payload=256,
                   redactor=REDACTOR, profiles=Profiles(2, sampler=FakeSampler(),
                                                          symbolizer=object),
                   session_queue=100, l7store=l7store, stage=stage)
    h = Host(svc, probes, tmp_path)
    yield h
    h.close()


def capture(h: Host, records: list[bytes]) -> list[dict[str, Any]]:
    """Run records through the pipeline into the store and router, as the worker would."""
    procs: list[Any] = []
    events = h.svc.pipeline.process(records, procs=procs)
    assert h.svc.l7store is not None
    SplitSink(h.svc.store, h.svc.l7store)(Batch(events, procs))
    return events


def proc_exited(h: Host, pid: int) -> None:
    shutil.rmtree(h.root / "proc" / str(pid))
    assert not os.path.exists(h.root / "proc" / str(pid))
