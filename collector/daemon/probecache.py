"""The daemon's compiled-probe cache: where it lives, the probe options a config gives, and
`periscoped --warm-cache` (compile once, at install, so the first start is warm).

The warm-up is worth something only if it writes the very key the daemon computes at
start: both take their probe options from trace_options() and compile through the same
TraceProbe.prepare() the daemon's preload runs (probes/objload.load_probe()).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from collector import config

if TYPE_CHECKING:
    from probes.trace import ProbeOptions

log = logging.getLogger("periscope.daemon")
PROBE_CACHE = "probe-cache"  # under the state dir: compiled probes (probes/objcache.py)


def cache_dir(cfg: config.Config) -> Path:
    return Path(cfg.paths.state_dir) / PROBE_CACHE


def trace_options(cfg: config.Config) -> ProbeOptions:
    """trace.bpf.c's options under this config (the compile flags are part of the cache key).
    data[] is sized for the larger of the two payload caps; targets start at
    max_payload_bytes."""
    from probes.trace import ProbeOptions

    capture = cfg.capture
    kernel_max = max(capture.max_payload_bytes, capture.l7_payload_bytes if capture.l7 else 0)
    return ProbeOptions(kernel_max, capture.ringbuf_pages, capture.poll_interval_ms / 1000,
                        cache_dir=cache_dir(cfg))


def warm(cfg: config.Config) -> int:
    """Compile trace.bpf.c into the state dir's probe cache (loaded, never attached, then
    released) unless it already holds this build. 0 when the cache is warm, 1 when it is
    not (the daemon then compiles at its first start, as without a warm-up)."""
    from probes.loader import ProbeError
    from probes.trace import TraceProbe, cached_file

    options = trace_options(cfg)
    Path(cfg.paths.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    hit = cached_file(options)
    if hit is not None:
        log.info("probe cache already warm: %s", hit)
        return 0
    log.info("warming the probe cache %s (nothing is attached)", options.cache_dir)
    started = time.monotonic()
    probe = TraceProbe(options, lambda _records: None)
    try:
        probe.prepare()
    except (ProbeError, OSError) as err:
        log.error("probe cache not warmed, periscoped will compile at its first start: %s",
                  err)
        return 1
    finally:
        probe.close()
    hit = cached_file(options)
    if hit is None:  # compiled and loaded, but the file was not written (logged above)
        log.error("probe cache not warmed: nothing usable in %s after the compile",
                  options.cache_dir)
        return 1
    log.info("probe cache warm in %.1fs: %s", time.monotonic() - started, hit)
    return 0
