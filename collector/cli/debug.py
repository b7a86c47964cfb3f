"""The debugging commands: `snapshot` (a process's state now) and `profile` (where it spends
its CPU), each shown, written to a file, or given as JSON.

The renderers come from the packages that build the data (collector.snapshot,
collector.profile), imported when a command runs: the other commands do not pay for them.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from typing import Any

import orjson

from collector.cli.client import ClientError, Connection, check_reply

TOP_FRAMES = 25
# Exit 0 when the profile covers what was asked (or all the client or the targets allowed).
PROFILE_DONE = ("done", "target_exited", "client_closed")


def _say(text: str, end: str = "\n") -> None:
    print(f"periscope: {text}", file=sys.stderr, end=end, flush=True)


# -- snapshot ---------------------------------------------------------------------------------
def snapshot_args(a: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {"targets": [f"pid:{a.pid}"]}
    if a.reason:
        args["reason"] = a.reason
    return args


def run_snapshot(a: argparse.Namespace) -> int:
    from collector.snapshot import render_summary, write_snapshot

    conn = Connection(a.socket, timeout=120)
    try:
        snap = conn.call("snapshot", snapshot_args(a))
    finally:
        conn.close()
    if not isinstance(snap, dict):
        raise ClientError("the daemon's reply is not a snapshot")
    if a.output:
        try:
            write_snapshot(a.output, snap)
        except OSError as err:
            raise ClientError(f"cannot write {a.output}: {err.strerror}") from None
        _say(f"wrote {a.output} (mode 0600)")
    if a.json:
        sys.stdout.write(orjson.dumps(snap).decode() + "\n")
    else:
        sys.stdout.write(render_summary(snap))
    sys.stdout.flush()
    return 0


# -- profile ----------------------------------------------------------------------------------
def profile_args(a: argparse.Namespace) -> dict[str, Any]:
    if not a.targets:
        raise ClientError("profile needs a target: -p PID, -n NAME, -u UNIT or -c CGROUP")
    if a.folded and a.json:
        raise ClientError("choose one of --folded and --json")
    args: dict[str, Any] = {"targets": a.targets, "duration": a.duration,
                            "freq": a.frequency}
    if a.reason:
        args["reason"] = a.reason
    return args


class Progress:
    """Progress on stderr: one line per phase, redrawn each second on a terminal."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.phase = ""

    def update(self, p: dict[str, Any]) -> None:
        phase = str(p.get("phase"))
        if self.tty:
            what = "compiling the probe" if phase == "loading" else \
                f"sampling {p.get('elapsed_s', 0):.0f}/{p.get('duration_s', 0):g} s"
            _say(f"{what} (Ctrl-C: stop and show)  ", end="\r")
        elif phase != self.phase:
            _say("compiling the probe..." if phase == "loading" else
                 f"sampling for {p.get('duration_s', 0):g} s (Ctrl-C: stop and show)...")
        self.phase = phase

    def done(self) -> None:
        if self.tty and self.phase:
            print(file=sys.stderr)


def top_frames(stacks: tuple[tuple[tuple[str, ...], int], ...]
               ) -> list[tuple[str, int, int]]:
    """(frame, self samples, total samples) by self, then total; the root (the thread's
    name) is not a frame. A frame is counted once per stack however often it recurs."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    for stack, n in stacks:
        frames = stack[1:] or stack
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            total[f] = total.get(f, 0) + n
    return sorted(((f, own.get(f, 0), t) for f, t in total.items()),
                  key=lambda r: (-r[1], -r[2], r[0]))


def _table(stacks: tuple[tuple[tuple[str, ...], int], ...], samples: int) -> None:
    rows = top_frames(stacks)
    if not samples:
        print("(no samples: the targets did not run on a CPU while sampled)")
        return
    print(f"{'SELF':>7} {'SELF%':>6} {'TOTAL%':>6}  FRAME")
    for frame, own, total in rows[:TOP_FRAMES]:
        print(f"{own:>7,} {100 * own / samples:>5.1f}% {100 * total / samples:>5.1f}%  {frame}")
    if len(rows) > TOP_FRAMES:
        print(f"... {len(rows) - TOP_FRAMES} more frames (--folded or --svg FILE for all)")


def _show(a: argparse.Namespace, head: dict[str, Any], end: dict[str, Any]) -> int:
    from collector.profile import profile_from_wire, render_folded, render_svg
    from collector.snapshot import write_private

    try:
        prof = profile_from_wire(end["result"])
    except (KeyError, TypeError, ValueError) as err:
        raise ClientError(f"the daemon's reply is not a profile: {err}") from None
    reason = str(end.get("reason"))
    if a.svg:
        title = (f"periscope profile: {', '.join(head.get('targets', []))} "
                 f"({prof.samples:,} samples, {prof.duration_s:g} s at {prof.freq} Hz)")
        try:
            write_private(a.svg, render_svg(prof, title).encode())
        except OSError as err:
            raise ClientError(f"cannot write {a.svg}: {err.strerror}") from None
        _say(f"wrote {a.svg} (flame graph; open it in a browser)")
    if a.json:
        sys.stdout.write(orjson.dumps(end).decode() + "\n")
    elif a.folded:
        sys.stdout.write(render_folded(prof))
    else:
        _table(prof.stacks, prof.samples)
    sys.stdout.flush()
    unnamed = 100 * prof.unknown_frames / prof.frames if prof.frames else 0.0
    _say(f"profile ended ({reason}): {prof.samples:,} samples in {prof.duration_s:g} s at "
         f"{prof.freq} Hz; {prof.lost:,} lost, {unnamed:.0f}% of frames unnamed"
         + ("; kernel frames hidden (kptr_restrict)" if prof.kernel_hidden else ""))
    cut = end["result"].get("truncated")
    if cut:
        _say(f"the reply cap left out {cut['stacks']:,} stacks ({cut['samples']:,} samples, "
             "shown as [truncated])")
    return 0 if reason in PROFILE_DONE else 3


def run_profile(a: argparse.Namespace) -> int:
    args = profile_args(a)
    # The daemon sends progress every second, the probe's compile included: a minute of
    # silence means it is gone.
    conn = Connection(a.socket, timeout=60)
    progress = Progress(sys.stderr.isatty())
    try:
        conn.send("profile", args)
        lines = conn.lines()
        head = check_reply(next(lines, {"ok": False, "error": {
            "message": "daemon closed the connection without a reply"}}))
        pids = head.get("pids", [])
        shown = ", ".join(str(p) for p in pids[:8]) + (" ..." if len(pids) > 8 else "")
        _say(f"profile {head['profile']}: {len(pids)} process{'es' if len(pids) != 1 else ''}"
             f" ({shown}), {head['duration_s']:g} s at {head['freq']} Hz")
        for note in head.get("narrowed", []):
            _say(f"narrowed: {note}")
        while True:
            try:
                for msg in lines:
                    if "event" in msg:
                        progress.update(msg["event"].get("progress") or {})
                    elif "end" in msg:
                        progress.done()
                        return _show(a, head, msg["end"])
                    else:
                        check_reply(msg)  # an error after the header: raises ClientError
                raise ClientError("the daemon closed the connection before the profile ended")
            except KeyboardInterrupt:
                # Stop early: our end of the socket closes for writing, the daemon stops
                # sampling and still sends what it has. A second Ctrl-C leaves at once.
                progress.done()
                _say("stopping: fetching what was sampled...")
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_WR)
                lines = conn.lines()  # the interrupted generator is finished
    finally:
        conn.close()
