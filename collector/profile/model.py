"""A CPU profile as folded stacks: built from raw samples, rendered and parsed as text.

Folded format (flamegraph.pl, speedscope, inferno): one line per distinct stack,
`comm;outermost;...;leaf count`, frames root first. Kernel frames come above the user
frames that entered the kernel and carry flamegraph.pl's `_[k]` suffix.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

LOST_STACK = "[lost stack]"  # the kernel could not store this stack (counted in lost)
# Frame names come from traced binaries and perf maps: no separators, no control or
# XML-invalid characters, and a bounded length.
_BAD = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff;]")
MAX_FRAME = 512


class RawSampleLike(Protocol):
    """probes.profile.RawSample, read-only."""

    @property
    def tgid(self) -> int: ...
    @property
    def comm(self) -> str: ...
    @property
    def user(self) -> tuple[int, ...]: ...
    @property
    def kernel(self) -> tuple[int, ...]: ...
    @property
    def user_error(self) -> int: ...
    @property
    def kernel_error(self) -> int: ...
    @property
    def samples(self) -> int: ...


class FrameNamer(Protocol):
    """What fold() needs from a symbolizer (probes.symbolize.Symbolizer fits)."""

    def user_frames(self, pid: int) -> Callable[[int, bool], tuple[str, bool]]: ...

    def kernel_frame(self, addr: int) -> tuple[str, bool]: ...


def clean(name: str) -> str:
    """A frame or comm name safe for the folded format (and any text output)."""
    name = _BAD.sub(lambda m: ":" if m.group() == ";" else "?", name[:MAX_FRAME])
    return name.strip() or "?"


@dataclass(frozen=True)
class Profile:
    """Folded stacks (root first, the thread's comm as the root frame) with counts."""

    stacks: tuple[tuple[tuple[str, ...], int], ...]
    pids: tuple[int, ...] = ()
    freq: int = 0
    duration_s: float = 0.0
    samples: int = 0         # samples in stacks
    lost: int = 0            # samples or stacks the kernel could not record
    frames: int = 0          # frames over all samples
    unknown_frames: int = 0  # of those, frames with no symbol ([unknown], [lib+0x..])
    kernel_hidden: bool = False  # kallsyms addresses read as 0: kernel frames are [kernel]
    stats: Mapping[str, int] = field(default_factory=dict)

    def top_frames(self) -> dict[str, int]:
        """Samples per leaf (top) frame."""
        out: dict[str, int] = {}
        for stack, n in self.stacks:
            out[stack[-1]] = out.get(stack[-1], 0) + n
        return out


def _lost(err: int) -> bool:
    return err in (-errno.EEXIST, -errno.ENOMEM)


def fold(raw: Iterable[RawSampleLike], namer: FrameNamer,
         redact: Callable[[str], str] | None) -> tuple[dict[tuple[str, ...], int], int, int]:
    """(stack -> samples, frames, unknown frames) of raw samples. redact is applied once to
    every distinct name (frame or comm) before it can leave the daemon."""
    out: dict[tuple[str, ...], int] = {}
    names: dict[str, str] = {}
    frames = unknown = 0
    per_pid: dict[int, Callable[[int, bool], tuple[str, bool]]] = {}

    def final(name: str) -> str:
        if name not in names:
            names[name] = clean(redact(name) if redact else name)
        return names[name]

    for s in raw:
        if s.tgid not in per_pid:
            per_pid[s.tgid] = namer.user_frames(s.tgid)
        user_frame = per_pid[s.tgid]
        stack = [final(s.comm or str(s.tgid))]
        resolved = [user_frame(a, i == 0) for i, a in enumerate(s.user)]
        if not s.user and _lost(s.user_error):
            resolved = [(LOST_STACK, False)]
        stack_k = [namer.kernel_frame(a) for a in s.kernel]
        if not s.kernel and _lost(s.kernel_error):
            stack_k = [(LOST_STACK, False)]
        for name, ok in (*reversed(resolved), *reversed(stack_k)):
            stack.append(final(name))
            frames += s.samples
            if not ok:
                unknown += s.samples
        key = tuple(stack)
        out[key] = out.get(key, 0) + s.samples
    return out, frames, unknown


def render_folded(profile: Profile) -> str:
    """flamegraph.pl / speedscope input: `frame;frame;leaf count` per line."""
    return "".join(f"{';'.join(stack)} {n}\n" for stack, n in profile.stacks)


def parse_folded(text: str) -> Profile:
    """A Profile from folded text (what render_folded writes, or another tool's)."""
    acc: dict[tuple[str, ...], int] = {}
    for line in text.splitlines():
        stack, sep, count = line.rstrip().rpartition(" ")
        if not sep or not stack or not count.isdigit():
            continue
        key = tuple(clean(f) for f in stack.split(";"))
        acc[key] = acc.get(key, 0) + int(count)
    return make_profile(acc)


def make_profile(acc: Mapping[tuple[str, ...], int], **kw: object) -> Profile:
    stacks = tuple(sorted(acc.items()))
    return Profile(stacks=stacks, samples=sum(acc.values()), **kw)  # type: ignore[arg-type]
