"""CPU profiles of target processes: sample with BPF, fold, render (folded text, SVG).

    profile = sample([pid], duration_s=10, freq=99, redact=redactor.redact_text)
    render_folded(profile)           # flamegraph.pl / speedscope input
    render_svg(profile, "title")     # an interactive flame graph, self-contained

sample() blocks for duration_s (or until cancel is set); run it off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from collector.profile.flamegraph import render_svg
from collector.profile.model import Profile, fold, make_profile, parse_folded, render_folded

if TYPE_CHECKING:
    from probes.symbolize import Symbolizer

__all__ = ["DEFAULT_FREQ", "MAX_DURATION_S", "Profile", "parse_folded", "render_folded",
           "render_svg", "sample"]

DEFAULT_FREQ = 99      # Hz: not a divisor of common timer periods (no lockstep aliasing)
MAX_FREQ = 1000
MAX_DURATION_S = 600.0


def sample(pids: Iterable[int], duration_s: float, freq: int = DEFAULT_FREQ, *,
           redact: Callable[[str], str] | None, cancel: threading.Event | None = None,
           symbolizer: Symbolizer | None = None, stack_storage: int = 8192) -> Profile:
    """Sample the on-CPU stacks of pids (all their threads) for duration_s at freq Hz.

    redact is applied to every distinct frame and thread name (perf maps and symbol
    tables are written by the traced users); pass the daemon's Redactor.redact_text, or
    None only where nothing leaves the host. symbolizer: a probes.symbolize.Symbolizer to
    reuse its caches across profiles. Raises ValueError on bad arguments and
    probes.loader.ProbeError when the probe cannot be loaded or attached.
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
    with Profiler(ProfileOptions(stack_storage=stack_storage)) as prof:
        raw = prof.run(pids, duration_s, freq, cancel)
    # Symbolize right away: the targets' mappings are read now, while they (most likely)
    # still run; a target that exited has no maps left and its frames are [unknown].
    acc, frames, unknown = fold(raw.samples, sym, redact)
    st = raw.stats
    _table, hidden = sym.kernel_table()
    stats = {**st, "files": sym.stats.files, "file_errors": sym.stats.file_errors,
             "debug_files": sym.stats.debug_files, "perf_maps": sym.stats.perf_maps,
             "perf_map_errors": sym.stats.perf_map_errors, "cpus": raw.cpus}
    lost = (st.get("user_collision", 0) + st.get("user_full", 0)
            + st.get("kernel_collision", 0) + st.get("kernel_full", 0)
            + st.get("counts_full", 0))
    return make_profile(acc, pids=tuple(pids), freq=freq, duration_s=round(raw.seconds, 3),
                        lost=lost, frames=frames, unknown_frames=unknown,
                        kernel_hidden=hidden, stats=stats)
