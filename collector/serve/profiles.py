"""The daemon's CPU profiles: at most `server.max_profiles` at once, each on a worker thread
of its own, cancelled when its client leaves or the daemon stops, and one Symbolizer
shared by all of them (its ELF and kallsyms caches are what make the second profile of a
service cheap to name)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector import profile
from collector.errors import BadRequest, CaptureError, LimitExceeded
from collector.profile import Profile
from probes.loader import ProbeError

# profile.sample's shape, so unit tests can stand in a sampler without BPF.
Sampler = Callable[..., Profile]


@dataclass(eq=False)  # identity semantics: runs are dict values looked up by id
class Run:
    """One profile while it runs: what the handler and the worker thread share."""

    id: str
    user: str
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None      # why it ended before its duration, once it did
    started: float | None = None   # monotonic time sampling started (after the compile)
    created: float = field(default_factory=time.monotonic)

    def stop(self, reason: str) -> None:
        """End sampling now (from any thread); the first reason given is kept."""
        if self.reason is None:
            self.reason = reason
        self.cancel.set()

    def elapsed(self) -> float:
        """Seconds sampled so far (0 while the probe is still being compiled)."""
        return 0.0 if self.started is None else time.monotonic() - self.started


class Profiles:
    """The running profiles and the worker threads they run on. Thread-safe."""

    def __init__(self, limit: int, sampler: Sampler | None = None,
                 symbolizer: Callable[[], Any] | None = None,
                 probe_cache: Path | None = None) -> None:
        self.limit = limit
        self.probe_cache = probe_cache  # compiled probes, shared with the trace probe
        self._sampler = sampler or profile.sample
        self._new_symbolizer = symbolizer or profile.symbolizer
        self._symbolizer: Any = None
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        # Threads of our own: a 10-minute profile must not hold one of the loop's default
        # executor threads, which every request's gate check needs.
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="profile")

    def begin(self, user: str) -> Run:
        """Reserve a slot for a new profile. Raises LimitExceeded when all are taken."""
        with self._lock:
            if len(self._runs) >= self.limit:
                raise LimitExceeded(f"{self.limit} profiles are running (server.max_profiles);"
                                    " try again when one ends")
            run = Run(f"p{secrets.token_hex(4)}", user)
            self._runs[run.id] = run
            return run

    def release(self, run: Run) -> None:
        """Free a run's slot (sample() does it when sampling ends; call it for a run that
        never got to sample)."""
        with self._lock:
            self._runs.pop(run.id, None)

    def running(self) -> list[Run]:
        with self._lock:
            return list(self._runs.values())

    def stop_all(self, reason: str) -> int:
        """Cancel every running profile (daemon shutdown); how many there were."""
        runs = self.running()
        for run in runs:
            run.stop(reason)
        return len(runs)

    def sample(self, run: Run, pids: list[int], duration_s: float, freq: int,
               redact: Callable[[str], str]) -> Profile:
        """Sample (on a pool thread: blocks up to duration_s after the compile); the slot is
        free again only once the probe is detached and its maps closed."""
        try:
            with self._lock:
                if self._symbolizer is None:
                    self._symbolizer = self._new_symbolizer()
                sym = self._symbolizer

            def started() -> None:
                run.started = time.monotonic()

            return self._sampler(pids, duration_s, freq, redact=redact, cancel=run.cancel,
                                 symbolizer=sym, on_start=started,
                                 probe_cache=self.probe_cache)
        except ProbeError as err:
            raise CaptureError(f"the profile probe failed: {err}") from err
        except ValueError as err:
            raise BadRequest(str(err)) from err
        finally:
            self.release(run)

    def close(self) -> None:
        """Cancel what runs and let the threads finish on their own (they stop promptly
        once sampling, or at the end of a compile in progress)."""
        self.stop_all("shutdown")
        self.pool.shutdown(wait=False)
