"""Target bookkeeping over the probe: refcounted targets, cookies, lazy attach/detach.

Probes attach when the first target is acquired and detach when the last is released,
so an idle daemon costs the traced host nothing. Compiling them (~2 s, in a helper) is
done ahead: preload() after READY, and a detached probe keeps its loaded programs and
maps for the next session, so a session only waits for the attach.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.errors import BadRequest, CaptureError, NotFound
from collector.proc.resolve import Resolver
from collector.selectors import parse_selector
from probes.loader import ProbeError
from probes.tls import libssl_paths

log = logging.getLogger("periscope.tracer")
LATE_TLS_TRIES = 5


class ProbeLike(Protocol):
    load_seconds: float
    prepare_seconds: float
    from_cache: bool  # prepare() loaded a cached compile (no bcc)

    def prepare(self) -> None: ...  # compile and load, attach nothing
    def load(self) -> None: ...     # prepare() if needed, then attach
    def detach(self) -> None: ...   # detach, keep what prepare() loaded
    def close(self) -> None: ...    # detach and release
    def add_pid(self, tgid: int, spec: Any) -> None: ...
    def refresh_pid(self, tgid: int, spec: Any) -> bool: ...  # only if still traced
    def remove_pid(self, tgid: int) -> None: ...
    def pids(self) -> dict[int, int]: ...
    def add_comm(self, comm: str, spec: Any) -> None: ...
    def remove_comm(self, comm: str) -> None: ...
    def add_cgroup(self, cgroup_id: int, spec: Any) -> None: ...
    def remove_cgroup(self, cgroup_id: int) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def ring_usage(self) -> tuple[int, int, int]: ...
    def attach_tls(self, pids: list[int]) -> None: ...
    def attach_tls_system(self) -> None: ...
    def tls_failures(self) -> int: ...
    def set_fd_cap(self, tgid: int, fd: int, cap: int) -> None: ...


@dataclass
class Target:
    kind: str    # pid | comm | cgroup
    value: str
    cookie: int
    caps: dict[str, int] = field(default_factory=dict)  # session id -> payload cap

    @property
    def cap(self) -> int:
        return max(self.caps.values(), default=0)


class Tracer:
    """Thread-safe. `probe_factory()` builds an unloaded probe (bcc lives behind it)."""

    def __init__(self, probe_factory: Callable[[], ProbeLike],
                 spec_factory: Callable[[int, int], Any], resolver: Resolver) -> None:
        self._factory = probe_factory
        self._spec = spec_factory  # (cookie, payload_cap) -> probe TargetSpec
        self.resolver = resolver
        self._lock = threading.RLock()
        self._probe: ProbeLike | None = None  # attached
        self._spare: ProbeLike | None = None  # prepared (loaded, not attached)
        self._preloading: threading.Thread | None = None
        self._targets: dict[tuple[str, str], Target] = {}
        self._next_cookie = 1
        self.attach_count = 0
        self.last_load_seconds = 0.0
        self.final_stats: dict[str, int] = {}  # kernel counters as of the last detach

    @property
    def attached(self) -> bool:
        return self._probe is not None

    def preload(self) -> threading.Thread:
        """Compile and load a probe in the background (attaching nothing), so the first
        session only waits for the attach. A failure is logged; the session retries."""
        def run() -> None:
            probe = self._factory()
            try:
                probe.prepare()
            except (ProbeError, OSError) as err:
                log.warning("preloading the probes failed (the first session retries): %s",
                            err)
                return
            with self._lock:
                if self._spare is None:
                    self._spare = probe
                    log.info("probes %s ahead in %.2fs (nothing attached)",
                             "loaded from the cache" if probe.from_cache
                             else "compiled and loaded", probe.prepare_seconds)
                    return
            probe.close()

        t = threading.Thread(target=run, name="probe-preload", daemon=True)
        self._preloading = t
        t.start()
        return t

    def plan(self, selectors: Iterable[str]) -> list[tuple[str, str]]:
        """The kernel filter entries (pid | comm | cgroup, value) that trace `selectors`.

        A unit is filtered by its cgroup (children stay in it), an exe by the pids running
        it now (their children inherit the target). Raises NotFound or BadRequest.
        """
        out: list[tuple[str, str]] = []
        for text in selectors:
            sel = parse_selector(text)
            if sel.kind in ("pid", "comm", "cgroup"):
                out.append((sel.kind, sel.value))
            elif sel.kind == "unit":
                path = self.resolver.unit_cgroup(sel.value)
                if path is None:
                    raise NotFound(f"no cgroup for unit {sel.value!r}")
                out.append(("cgroup", path))
            elif sel.kind == "exe":
                out.extend(("pid", str(p)) for p in self.resolver.pids(sel))
            else:
                raise BadRequest("trace needs explicit targets (-p, -n, -c or -u), not '*'")
        if not out:
            raise NotFound("no process matches the requested targets")
        return out

    def acquire(self, session: str, kind: str, value: str, payload_cap: int) -> Target:
        """Start tracing a target for a session. Returns the target (with its cookie).

        Raises CaptureError if the probe cannot load or the target cannot be added to the
        kernel filter, NotFound if the target does not exist.
        """
        pre = self._preloading
        if pre is not None and pre.is_alive():
            # The compile under way: waiting beats starting another. Not under the lock,
            # which the preload takes to hand its probe over.
            pre.join()
        with self._lock:
            key = (kind, value)
            target = self._targets.get(key)
            pids = self._resolve(kind, value)
            if self._probe is None:
                probe, self._spare = self._spare or self._factory(), None
                try:
                    probe.load()
                except (ProbeError, OSError) as err:
                    probe.close()
                    raise CaptureError(f"cannot attach probes: {err}") from err
                self._probe = probe
                self.attach_count += 1
                self.last_load_seconds = probe.load_seconds
                log.info("probes attached in %.2fs", probe.load_seconds)
            if target is None:
                target = Target(kind, value, self._next_cookie)
                self._next_cookie += 1
                self._targets[key] = target
            target.caps[session] = payload_cap
            try:
                self._apply(target, pids)
            except OSError as err:  # a full or failing BPF map, a cgroup removed meanwhile
                raise CaptureError(f"cannot add target {kind}:{value}: {err}") from err
            return target

    def _resolve(self, kind: str, value: str) -> list[int]:
        if kind == "pid":
            if not self.resolver.exists(int(value)):
                raise NotFound(f"no process with pid {value}")
            return [int(value)]
        if kind == "comm":
            return self.resolver.pids_by_comm(value)
        if kind == "cgroup":
            if not self.resolver.cgroup_dir(value).is_dir():
                raise NotFound(f"no cgroup {value!r}")
            return self.resolver.pids_in_cgroup(value)
        raise BadRequest(f"unknown target kind {kind!r}")

    def _apply(self, target: Target, pids: list[int]) -> None:
        assert self._probe is not None
        spec = self._spec(target.cookie, target.cap)
        if target.kind == "comm":
            self._probe.add_comm(target.value, spec)
        elif target.kind == "cgroup":
            self._probe.add_cgroup(self.resolver.cgroup_id(target.value), spec)
        for pid in pids:
            self._probe.add_pid(pid, spec)
        # Children already inherited this cookie; refresh their caps too (not re-adding
        # one that exited since: its tgid may be another process's by then).
        family = [p for p, c in self._probe.pids().items() if c == target.cookie]
        for pid in family:
            if pid not in pids:
                self._probe.refresh_pid(pid, spec)
        if target.cap:
            self._probe.attach_tls(family)
            if target.kind != "pid":  # processes it starts later: their first calls too
                self._probe.attach_tls_system()

    def pids_of(self, cookie: int) -> list[int]:
        """The processes the kernel traces under a target's cookie now."""
        with self._lock:
            if self._probe is None:
                return []
            return [pid for pid, c in self._probe.pids().items() if c == cookie]

    def set_fd_cap(self, pid: int, fd: int, cap: int) -> bool:
        """Raise one fd's payload cap (the L7 stage, from the pipeline's thread). Never
        waits: False while a session is attaching (the lock is held) or nothing is."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._probe is None:
                return False
            self._probe.set_fd_cap(pid, fd, cap)
            return True
        except OSError:  # the map is full, or the probe went away under us
            return False
        finally:
            self._lock.release()

    def attach_tls_late(self, pid: int, cookie: int) -> None:
        """TLS probes for a process of a payload target that loaded libssl after its session
        started (an exec, a dlopen). Blocks: run it off the pipeline's thread."""
        for attempt in range(LATE_TLS_TRIES):
            with self._lock:
                if self._probe is None or not any(
                        t.cookie == cookie and t.cap for t in self._targets.values()):
                    return
                if libssl_paths(pid) or attempt == LATE_TLS_TRIES - 1:
                    self._probe.attach_tls([pid])
                    return
            time.sleep(0.05)  # opened, not mapped yet: the loader maps it right after

    def release(self, session: str) -> None:
        """End a session's interest in all its targets; detach probes when none remain."""
        with self._lock:
            for key, target in list(self._targets.items()):
                if session not in target.caps:
                    continue
                del target.caps[session]
                if target.caps:
                    self._apply(target, [])
                    continue
                del self._targets[key]
                self._remove(target)
            if not self._targets and self._probe is not None:
                self.final_stats = self._probe.stats()
                probe, self._probe = self._probe, None
                probe.detach()  # loaded programs and maps kept for the next session
                if self._spare is None:
                    self._spare = probe
                else:
                    probe.close()
                log.info("last target released: probes detached")

    def _remove(self, target: Target) -> None:
        assert self._probe is not None
        if target.kind == "comm":
            self._probe.remove_comm(target.value)
        elif target.kind == "cgroup":
            with contextlib.suppress(OSError):  # the cgroup was already removed
                self._probe.remove_cgroup(self.resolver.cgroup_id(target.value))
        for pid, cookie in self._probe.pids().items():
            if cookie == target.cookie:
                self._probe.remove_pid(pid)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return self._probe.stats() if self._probe is not None else dict(self.final_stats)

    def tls_failures(self) -> int:
        with self._lock:
            return self._probe.tls_failures() if self._probe is not None else 0

    def ring_usage(self) -> tuple[int, int, int]:
        """(bytes waiting in the ring buffer, the most seen at a drain, its size); zeros
        while detached."""
        with self._lock:
            return self._probe.ring_usage() if self._probe is not None else (0, 0, 0)

    def targets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"kind": t.kind, "value": t.value, "cookie": t.cookie,
                     "payload_cap": t.cap, "sessions": len(t.caps)}
                    for t in self._targets.values()]

    def close(self) -> None:
        with self._lock:
            for session in {s for t in self._targets.values() for s in t.caps}:
                self.release(session)
            for probe in (self._probe, self._spare):
                if probe is not None:
                    probe.close()
            self._probe = self._spare = None
