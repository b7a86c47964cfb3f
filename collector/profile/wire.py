"""A Profile as the daemon's reply to `profile`: JSON-ready and size-capped, and back.

The cap keeps the most sampled stacks; the samples of the stacks left out are not
hidden: they become one `[truncated]` stack, so every width and percentage stays true.
"""

from __future__ import annotations

from typing import Any

import orjson

from collector.profile.model import Profile

TRUNCATED = "[truncated]"  # the root frame standing for the stacks the cap left out
_META = ("pids", "freq", "duration_s", "samples", "lost", "frames", "unknown_frames",
         "kernel_hidden")


def profile_to_wire(profile: Profile, max_bytes: int) -> dict[str, Any]:
    """The profile as one JSON object of at most about max_bytes: its counters, and
    `stacks` as [[frame, ...], samples] pairs, root first. When the stacks do not fit, the
    least sampled are left out, counted in `truncated` ({stacks, samples}) and summed into
    one [truncated] stack."""
    out: dict[str, Any] = {"pids": list(profile.pids), "freq": profile.freq,
                           "duration_s": profile.duration_s, "samples": profile.samples,
                           "lost": profile.lost, "frames": profile.frames,
                           "unknown_frames": profile.unknown_frames,
                           "kernel_hidden": profile.kernel_hidden,
                           "stats": dict(profile.stats), "truncated": None, "stacks": []}
    budget = max_bytes - len(orjson.dumps(out)) - 128  # room for the truncation marks
    kept: list[tuple[tuple[str, ...], int]] = []
    dropped_stacks = dropped_samples = 0
    for stack, n in sorted(profile.stacks, key=lambda sn: (-sn[1], sn[0])):
        size = len(orjson.dumps([stack, n])) + 1
        if dropped_stacks or size > budget:  # from the first that does not fit, all out
            dropped_stacks += 1
            dropped_samples += n
            continue
        budget -= size
        kept.append((stack, n))
    if dropped_stacks:
        out["truncated"] = {"stacks": dropped_stacks, "samples": dropped_samples}
        kept.append(((TRUNCATED,), dropped_samples))
    out["stacks"] = [[list(stack), n] for stack, n in sorted(kept)]
    return out


def profile_from_wire(d: dict[str, Any]) -> Profile:
    """A Profile from profile_to_wire's object (the client renders it). Raises ValueError
    if it is not one."""
    try:
        stacks = tuple(sorted((tuple(str(f) for f in stack), int(n))
                              for stack, n in d["stacks"]))
        meta = {k: d[k] for k in _META}
        return Profile(stacks=stacks, pids=tuple(int(p) for p in meta.pop("pids")),
                       stats={str(k): int(v) for k, v in (d.get("stats") or {}).items()},
                       **meta)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a profile: {err}") from err
