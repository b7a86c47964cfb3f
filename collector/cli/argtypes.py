"""The client's flag value types: each returns the normalised value or raises
argparse.ArgumentTypeError (argparse prints it as a usage error)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import time
from collections.abc import Callable

from collector.selectors import SelectorError, parse_duration, parse_selector

MAX_LIMIT = 10000  # what the server accepts for "limit"
# A function that adds one subcommand (name, help, examples...) and returns its parser.
Adder = Callable[..., argparse.ArgumentParser]


def selector(kind: str) -> Callable[[str], str]:
    """A flag value as a target selector string ("pid:181"), checked by parse_selector."""
    def parse(text: str) -> str:
        try:
            return str(parse_selector(f"{kind}:{text}"))
        except SelectorError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def duration(text: str) -> int:
    """'30s', '10m', '2h', '1h30m' -> seconds."""
    try:
        return parse_duration(text)
    except SelectorError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def pid(text: str) -> int:
    return int(selector("pid")(text)[len("pid:"):])


def since(text: str, now: float | None = None) -> float:
    """'15m' (that long ago) or an ISO time ('2026-11-29T10:00', local unless it has a zone)
    -> a unix timestamp."""
    return _when(text, now, future=False)


def until(text: str, now: float | None = None) -> float:
    """The end of a range, in the forms since() takes (a time to come is allowed)."""
    return _when(text, now, future=True)


def _when(text: str, now: float | None, future: bool) -> float:
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except SelectorError:
        pass
    try:
        ts = dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r}: expected how long ago (15m, 2h, 1d) or an ISO time "
            "(2026-11-29T10:00, local time unless it has a zone)") from None
    if ts > now and not future:
        raise argparse.ArgumentTypeError(f"{text!r} is in the future")
    return ts


def millis(text: str) -> float:
    """'200ms', '1.5s' or '300' (milliseconds) -> milliseconds."""
    t = text.strip().lower()
    num, scale = (t[:-2], 1.0) if t.endswith("ms") else (t[:-1], 1000.0) if t.endswith("s") \
        else (t, 1.0)
    try:
        v = float(num) * scale
    except ValueError:
        v = -1.0
    if not 0 <= v < 1e9:  # also refuses nan
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: expected e.g. 200ms, 1.5s "
                                         "or a number of milliseconds")
    return v


def whole(text: str, most: int, unit: str = "") -> int:
    """A whole number from 1 to `most` (of `unit`), else a usage error that says so."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        of = f" of {unit}" if unit else ""
        raise argparse.ArgumentTypeError(f"must be a whole number{of} from 1 to {most}, "
                                         f"got {text!r}")
    return n


def limit(text: str) -> int:
    return whole(text, MAX_LIMIT)


def kinds(text: str) -> list[str]:
    """'request,grant,break_glass' -> the names, each a lowercase word."""
    names = [k.strip() for k in text.split(",") if k.strip()]
    if not names or not all(k.replace("_", "").isalpha() and k.islower() for k in names):
        raise argparse.ArgumentTypeError(f"expected kinds like request,grant,break_glass, "
                                         f"got {text!r}")
    return names


def target(text: str) -> str:
    """A grant's target: any selector (unit:, cgroup:, comm:, exe:, pid:)."""
    try:
        return str(parse_selector(text))
    except SelectorError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def name(pattern: str, what: str) -> Callable[[str], str]:
    """A syscall or errno name, checked against pattern."""
    rx = re.compile(pattern)

    def parse(text: str) -> str:
        if not rx.match(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return text
    return parse


def cursor(text: str) -> str:
    if not re.match(r"^\d{1,18}\.\d{1,9}$", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a page cursor (the note after a "
                                         "page prints it, e.g. 12.345)")
    return text
