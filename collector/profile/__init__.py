"""CPU profiles of target processes: sample with BPF, fold, render (folded text, SVG).

    profile = sample([pid], duration_s=10, freq=99, redact=redactor.redact_text)
    render_folded(profile)           # flamegraph.pl / speedscope input
    render_svg(profile, "title")     # an interactive flame graph, self-contained
    profile_to_wire(profile, max_bytes) / profile_from_wire(d)   # the daemon's reply

sample() blocks for duration_s (or until cancel is set); run it off the event loop.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from collector.profile.flamegraph import render_svg
from collector.profile.model import Profile, fold, make_profile, parse_folded, render_folded
from collector.profile.wire import profile_from_wire, profile_to_wire

if TYPE_CHECKING:
    from probes.symbolize import ProcessSymbols, Symbolizer

__all__ = ["DEFAULT_FREQ", "MAX_DURATION_S", "MAX_FREQ", "Profile", "parse_folded",
           "profile_from_wire", "profile_to_wire", "render_folded", "render_svg", "sample",
           "symbolizer"]

DEFAULT_FREQ = 99      # Hz: not a divisor of common timer periods (no lockstep aliasing)
MAX_FREQ = 1000
MAX_DURATION_S = 600.0
# A Symbolizer's caches (ELF tables, kallsyms) are not thread-safe: profiles that share
# one (the daemon's) name their frames one at a time. Naming is CPU work under the GIL
# anyway; the sampling itself runs in parallel.
_NAMING = threading.Lock()


def symbolizer() -> Symbolizer:
    """A Symbolizer to pass to every sample() call, so its caches serve them all."""
    from probes.symbolize import Symbolizer

    return Symbolizer()


class _Namer:
    """fold()'s FrameNamer: a process's current mappings, or, once it has exited, the
    reading kept (and warmed) when sampling started, so its frames are still named."""

    def __init__(self, sym: Symbolizer, kept: dict[int, ProcessSymbols]) -> None:
        self.sym = sym
        self.kept = kept

    def user_frames(self, pid: int) -> Callable[[int, bool], tuple[str, bool]]:
        now = self.sym.process(pid)
        if not now.maps and pid in self.kept:  # exited (or a zombie): no maps left
            return self.kept[pid].frame
        return now.frame

    def kernel_frame(self, addr: int) -> tuple[str, bool]:
        return self.sym.kernel_frame(addr)


def sample(pids: Iterable[int], duration_s: float, freq: int = DEFAULT_FREQ, *,
           redact: Callable[[str], str] | None, cancel: threading.Event | None = None,
           symbolizer: Symbolizer | None = None, stack_storage: int = 8192,
           on_start: Callable[[], None] | None = None,
           probe_cache: Path | None = None) -> Profile:
    """Sample the on-CPU stacks of pids (all their threads) for duration_s at freq Hz.

    redact is applied to every distinct frame and thread name (perf maps and symbol
    tables are written by the traced users); pass the daemon's Redactor.redact_text, or
    None only where nothing leaves the host. symbolizer: a probes.symbolize.Symbolizer to
    reuse its caches across profiles (and its stats: the symbolization counters in
    Profile.stats are this profile's share). on_start is called once the probe is loaded,
    right before sampling starts (the compile takes seconds; with probe_cache, the
    compiled-probe cache directory, only the first one compiles). Raises ValueError on bad
    arguments and probes.loader.ProbeError when the probe cannot be loaded or attached.
    """
    from probes.profile import ProfileOptions, Profiler
    from probes.symbolize import Symbolizer

    pids = sorted(set(pids))
    if not pids or any(p <= 0 for p in pids):
        raise ValueError(f"need target pids > 0, got {pids}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration {duration_s}s is outside (0, {MAX_DURATION_S:.0f}]")
    if not 1 <= freq <= MAX_FREQ:
        raise ValueError(f"frequency {freq} Hz is outside 1..{MAX_FREQ}")
    sym = symbolizer or Symbolizer()
    with _NAMING:
        # Read (and parse) what each target maps now: if it exits before the end, its
        # frames are named from this reading instead of [unknown].
        kept = {pid: sym.process(pid) for pid in pids}
        for reading in kept.values():
            reading.warm()
    with Profiler(ProfileOptions(stack_storage=stack_storage, cache_dir=probe_cache)) as prof:
        prof.load()
        if on_start is not None:
            on_start()
        raw = prof.run(pids, duration_s, freq, cancel)
    with _NAMING:
        # Symbolize right away: the targets' mappings are read now, while they (most
        # likely) still run; one that exited is named from the reading kept above.
        before = dataclasses.replace(sym.stats)
        acc, frames, unknown = fold(raw.samples, _Namer(sym, kept), redact)
        after = sym.stats
        _table, hidden = sym.kernel_table()
    st = raw.stats
    stats = {**st, **{k: getattr(after, k) - getattr(before, k) for k in (
        "files", "file_errors", "debug_files", "perf_maps", "perf_map_errors")},
             "cpus": raw.cpus}
    lost = (st.get("user_collision", 0) + st.get("user_full", 0)
            + st.get("kernel_collision", 0) + st.get("kernel_full", 0)
            + st.get("counts_full", 0))
    return make_profile(acc, pids=tuple(pids), freq=freq, duration_s=round(raw.seconds, 3),
                        lost=lost, frames=frames, unknown_frames=unknown,
                        kernel_hidden=hidden, stats=stats)
